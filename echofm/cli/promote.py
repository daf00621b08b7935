"""`echofm promote --model echofm-ef`: make the challenger the champion if it earns it.

The challenger must beat the champion on the same evaluation set by the task's threshold
(`Task.promotion` in `echofm.downstream.tasks`: EF MAE lower by >= 0.5 points; accuracy, AUROC,
Dice higher by >= 0.01), or there must be no champion. With `--shards/--labels` both versions are
re-scored on that set; otherwise the metrics recorded at registration are compared.
A multi-task model (`echofm-multitask-ef-view`) is judged per task against each task's champion:
not worse on any task by its threshold, better by it on at least one (`promote_multitask`).
Exit status: 0 a decision was taken (promoted or not: see the printed JSON); 2 nothing to decide
(no challenger, versions not comparable).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from echofm.downstream.splits import SPLITS

EXIT_USAGE = 2
logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("promote", help="promote a registered challenger to champion by thresholds",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="registered model name, e.g. echofm-ef")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    parser.add_argument("--shards", type=Path, default=None, help="evaluation set: re-score both versions on it")
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--labels", type=Path, default=None)
    parser.add_argument("--split", choices=SPLITS, default="test")
    return parser


def run(args: argparse.Namespace) -> int:
    from echofm.errors import RegistryError
    from echofm.registry.promote import promote

    evaluation = None
    if args.shards is not None or args.labels is not None:
        if args.shards is None or args.labels is None:
            logger.error("an evaluation set needs both --shards and --labels")
            return EXIT_USAGE
        evaluation = {"shards": args.shards, "labels": args.labels, "manifest": args.manifest, "split": args.split}
    try:
        decision = promote(args.model, tracking_uri=args.tracking_uri, evaluation=evaluation)
    except RegistryError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    print(json.dumps(decision.to_dict(), indent=2))
    return 0
