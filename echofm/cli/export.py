"""`echofm export MODEL DIR`: write a model as config.json + model.safetensors + README.md.

MODEL: a pretraining run directory, a checkpoint, `models:/echofm-encoder@champion`, or any
published checkpoint `echofm.model.load_pretrained` reads. DIR then loads anywhere with
`load_pretrained(DIR)` (or plain safetensors), holds no pickle, and its README.md is a model card
(data digest, objective, metrics, intended use, limits). Prints what was written as JSON.

Exit status: 0 written; 2 the model cannot be loaded or DIR holds other files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from echofm.cli.options import ENCODER_HELP

# Spelled out so `echofm --help` does not import torch; a test checks they equal
# `echofm.model.weights.FORMATS`.
FORMATS: tuple[str, ...] = ("auto", "echofm", "echofm-2026", "echofm-2024", "mae-st", "videomae", "timm-vit")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("export", help="write a model as config.json + model.safetensors + a model card",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help=ENCODER_HELP)
    parser.add_argument("directory", metavar="DIR", type=Path, help="the export folder (empty, new, or an earlier export)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="the checkpoint layout (default: recognised from the keys)")
    parser.add_argument("--allow-partial", action="store_true", help="export even if encoder tensors had to stay randomly initialised")
    parser.add_argument("--tracking-uri", default=None, help="where the model's MLflow records are (default: MLFLOW_TRACKING_URI or the run directory's store)")
    return parser


def run(args: argparse.Namespace) -> int:
    from echofm.registry.export import export_encoder

    out, card = export_encoder(args.model, args.directory, tracking_uri=args.tracking_uri, format=args.format,
                               allow_partial=args.allow_partial)
    config = json.loads((out / "config.json").read_text())
    print(json.dumps({"export": str(out), "files": sorted(p.name for p in out.iterdir()),
                      "title": card.title, "model_config": config["model_config"],
                      "normalization": config["input"]["normalization"], "metrics": card.metrics}, indent=2))
    return 0
