"""`echofm evaluate --model models:/echofm-ef@champion --shards ... --labels ...`: score a model.

The model is a fine-tuned `model.pt`, a fine-tuning output directory or a registered URI; the
split is the one it was trained with unless `--split-seed` is given. Prints the metrics as JSON;
for a multi-task model, by task (all of them, or the one `--task` names).
Exit status: 0 done; 2 unusable inputs (unknown model, task mismatch, empty split).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from echofm.cli.options import add_secret_file_flag, usage_error_message
from echofm.downstream.splits import SPLITS
from echofm.downstream.tasks import TASKS

EXIT_USAGE = 2
logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("evaluate", help="score a fine-tuned model on a labelled split",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model.pt, a fine-tuning --out directory, or models:/NAME@ALIAS")
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--mask-root", type=Path, default=None)
    parser.add_argument("--task", choices=TASKS.names(), default=None,
                        help="expected task (a guard); of a multi-task model, the task to score (default all)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--split-seed", type=int, default=None, help="default: the model's own split")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    add_secret_file_flag(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from echofm.downstream.evaluate import evaluate, evaluate_tasks
    from echofm.downstream.splits import SplitConfig
    from echofm.errors import EchoFMError
    from echofm.io.deid import optional_secret

    split_config = SplitConfig(seed=args.split_seed) if args.split_seed is not None else None
    inputs = dict(shards=args.shards, labels=args.labels, manifest=args.manifest, split=args.split,
                  split_config=split_config, mask_root=args.mask_root, tracking_uri=args.tracking_uri,
                  secret=optional_secret(args.secret_file))
    try:
        if args.task is not None:
            metrics = evaluate(args.model, task=args.task, **inputs)
        else:
            by_task = evaluate_tasks(args.model, **inputs)
            metrics = next(iter(by_task.values())) if len(by_task) == 1 else by_task
    except MlflowException as exc:  # about the model URI given: registry text, not file content
        logger.error("%s", exc)
        return EXIT_USAGE
    except (EchoFMError, FileNotFoundError) as exc:
        # Not the library's text: a label table's cells and file names can identify patients.
        logger.error("%s", usage_error_message(exc, args))
        return EXIT_USAGE
    print(json.dumps({"model": args.model, "split": args.split, "metrics": metrics}, indent=2))
    return 0
