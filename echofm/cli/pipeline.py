"""`echofm pipeline SOURCE OUTPUT --runs DIR [--labels FILE]`: every stage, as one Prefect flow.

Ingest -> pretrain -> fine-tune -> evaluate -> register/promote (flows/pipeline.py). Runs on an
ephemeral Prefect API by default, on a server when PREFECT_API_URL is set; MLflow records go to
MLFLOW_TRACKING_URI when set, else beside the pretraining run.

Exit status: 0 when the pipeline completed; 1 when a stage failed (the message says which).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from echofm.cli.finetune import STRATEGIES, TASKS

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("pipeline", help="ingest, pretrain, fine-tune, evaluate and register in one flow",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pipeline_arguments(parser)
    parser.add_argument("source", type=Path, help="archive to ingest")
    parser.add_argument("output", type=Path, help="ingestion output directory")
    parser.add_argument("--runs", type=Path, required=True, help="directory for pretraining and fine-tuning runs")
    parser.add_argument("--labels", type=Path, default=None, help="labels CSV/Parquet; without it the pipeline stops after pretraining")
    return parser


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `echofm pipeline` and `echofm demo`."""
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["ef", "view"])
    parser.add_argument("--preset", default="tiny", help="model preset (tiny for CPU)")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the flow's)")
    parser.add_argument("--batch-size", type=int, default=None, help="pretraining clips per process")
    parser.add_argument("--base-lr", type=float, default=None, help="pretraining lr per 256 clips of effective batch")
    parser.add_argument("--img-size", type=int, default=None, help="pretraining frame side (default: the preset's)")
    parser.add_argument("--num-frames", type=int, default=None, help="pretraining frames per clip (default: the preset's)")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="pretraining processes (torchrun)")
    parser.add_argument("--finetune-epochs", type=int, default=None)
    parser.add_argument("--strategy", default="linear", choices=STRATEGIES)
    parser.add_argument("--workers", type=int, default=None, help="ingestion worker processes")
    parser.add_argument("--ingest-batch-size", type=int, default=None, help="files per ingestion batch task")


def pipeline_parameters(args: argparse.Namespace, *, source: Path, output: Path, runs: Path,
                        labels: Path | None) -> dict[str, Any]:
    """The flow's parameters from the command line (only what the user set overrides a default)."""
    from flows.finetune import FinetuneOptions
    from flows.ingest import IngestOptions
    from flows.pretrain import PretrainOptions

    pretrain_fields = {"preset": args.preset, "steps": args.steps, "batch_size": args.batch_size, "base_lr": args.base_lr,
                       "img_size": args.img_size, "num_frames": args.num_frames,
                       "nproc_per_node": args.nproc_per_node}
    finetune_fields = {"epochs": args.finetune_epochs, "strategy": args.strategy}
    ingest_fields = {"workers": args.workers, "batch_size": args.ingest_batch_size}
    return {
        "source": str(source.resolve()),
        "output": str(output.resolve()),
        "runs": str(runs.resolve()),
        "labels": str(labels.resolve()) if labels else None,
        "tasks": list(args.tasks),
        "ingest": IngestOptions(**{k: v for k, v in ingest_fields.items() if v is not None}),
        "pretraining": PretrainOptions(**{k: v for k, v in pretrain_fields.items() if v is not None}),
        "finetuning": FinetuneOptions(**{k: v for k, v in finetune_fields.items() if v is not None}),
    }


def run(args: argparse.Namespace) -> int:
    from flows.pipeline import echo_pipeline

    params = pipeline_parameters(args, source=args.source, output=args.output, runs=args.runs, labels=args.labels)
    try:
        result = echo_pipeline(**params)
    except Exception as exc:  # the flow run already logged the traceback; say which stage in one line
        log.error("pipeline failed: %s: %s", type(exc).__name__, exc)
        return 1
    print(result["summary"])
    return 0
