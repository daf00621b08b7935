"""`echofm finetune --task ef|view|reduced_ef|segmentation ...`: fine-tune the encoder downstream.

Trains the chosen head/strategy on the pretrained encoder and, on the same patient split, on a
randomly initialised one, prints both arms' metrics, writes `model.pt` and `result.json` to
`--out`, and with `--register` logs the run to MLflow and registers the model as
`echofm-<task>` with alias `challenger` (promotion is `echofm promote`).

Exit status: 0 done; 2 invalid options or unusable inputs (no labels joined, no encoder).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

EXIT_USAGE = 2
# Spelled out rather than imported so `echofm --help` does not import torch; a test checks they
# equal `echofm.downstream.labels.TASKS` and `echofm.downstream.finetune.STRATEGIES`.
TASKS: tuple[str, ...] = ("ef", "view", "reduced_ef", "segmentation")
STRATEGIES: tuple[str, ...] = ("linear", "mlp", "attentive", "full", "progressive")
logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "finetune", help="fine-tune the encoder on EF, views, reduced EF or LV segmentation",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--shards", type=Path, required=True, help="OUTPUT/shards")
    parser.add_argument("--manifest", type=Path, default=None, help="default: OUTPUT/manifest.parquet beside the shards")
    parser.add_argument("--labels", type=Path, required=True, help="labels CSV or Parquet (by clip_id or source path)")
    parser.add_argument("--mask-root", type=Path, default=None, help="directory mask_file paths are relative to (default: the labels file's)")
    parser.add_argument("--encoder", required=True, help="pretraining RUN_DIR, a checkpoint, or models:/echofm-encoder@champion")
    parser.add_argument("--strategy", choices=STRATEGIES, default="linear")
    parser.add_argument("--head", choices=("linear", "mlp", "attentive"), default=None, help="head for full/progressive")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="default 1e-3 frozen, 3e-4 full/progressive")
    parser.add_argument("--layer-decay", type=float, default=0.75)
    parser.add_argument("--unfreeze-every", type=int, default=1, help="progressive: epochs per newly unfrozen block")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-random-baseline", action="store_true", help="skip the random-init comparison")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--register", action="store_true", help="log to MLflow and register as echofm-<task>@challenger")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, the encoder's run store, or OUT/mlflow.db")
    return parser


def run(args: argparse.Namespace) -> int:
    from echofm.data.loader import file_digest
    from echofm.downstream.encoder import EncoderSourceError
    from echofm.downstream.finetune import FinetuneConfig, FinetuneConfigError, finetune
    from echofm.downstream.labels import LabelError
    from echofm.registry.register import log_and_register
    from echofm.store import default_tracking_uri
    from echofm.downstream.splits import SplitConfig, SplitError

    try:
        config = FinetuneConfig(
            task=args.task, strategy=args.strategy, head=args.head, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, layer_decay=args.layer_decay,
            unfreeze_every=args.unfreeze_every, seed=args.seed, device=args.device,
            compare_random_init=not args.no_random_baseline,
            split=SplitConfig(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed),
        )
        tracking_uri = args.tracking_uri or default_tracking_uri(args.encoder, args.out)
        result = finetune(config, encoder=args.encoder, shards=args.shards, labels=args.labels,
                          manifest=args.manifest, out_dir=args.out, mask_root=args.mask_root,
                          tracking_uri=tracking_uri)
    except (FinetuneConfigError, SplitError, LabelError, EncoderSourceError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    report = {"task": config.task, "strategy": config.strategy, "counts": result.counts,
              "pretrained": result.pretrained.metrics, "random_init": result.random_init.metrics if result.random_init else None,
              "checkpoint": str(result.checkpoint)}
    if args.register:
        registered = log_and_register(result.checkpoint, tracking_uri=tracking_uri, labels_digest=file_digest(args.labels))
        report["registered"] = {"model_uri": registered.model_uri, "alias": "challenger", "run_id": registered.run_id,
                                "tracking_uri": tracking_uri}
    print(json.dumps(report, indent=2, default=float))
    return 0
