"""`echofm finetune --task TASK[,TASK...] ...`: fine-tune the encoder on registered downstream tasks.

Trains the chosen head/strategy on the pretrained encoder and, on the same patient split, on each
initialisation of `--compare` (default: a randomly initialised encoder; also imported baselines,
`imagenet:PATH`, `kinetics:PATH`, `echofm-published:PATH`), prints every arm's metrics side by
side, writes `model.pt` and `result.json` to
`--out`, and with `--register` logs the run to MLflow and registers the model under the task's
name (`echofm-<task>`) with alias `challenger` (promotion is `echofm promote`). Tasks and their
options are defined once: `echofm.downstream.tasks`, `echofm.downstream.config`.

Several tasks (`--task ef,view,reduced_ef`) train one multi-task model: one encoder, one head
per task, the losses balanced by `--loss-balance` (and `--loss-weights`); it is compared per
task with single-task models of the same strategy and with a random encoder, and registered
as `echofm-multitask-<tasks>` (`echofm.downstream.multitask`).

Exit status: 0 done; 2 invalid options or unusable inputs (no labels joined, no encoder).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from echofm.cli.options import ENCODER_HELP, add_option_flags, add_secret_file_flag, given_options, usage_error_message
from echofm.data import storage
from echofm.downstream.config import FinetuneConfig, FinetuneConfigError, FinetuneOptions
from echofm.downstream.multitask.config import JointOptions, MultitaskConfig, parse_tasks
from echofm.downstream.splits import SplitConfig
from echofm.downstream.task import TaskError
from echofm.downstream.tasks import TASKS

EXIT_USAGE = 2
# The fine-tuning options this command offers, and the flags not spelled `--field-name`.
OPTION_FLAGS: tuple[str, ...] = ("strategy", "head", "epochs", "batch_size", "lr", "weight_decay", "layer_decay",
                                 "unfreeze_every", "hidden_dim", "dropout", "seed", "compare", "device")
SPLIT_FLAGS: tuple[str, ...] = ("val_fraction", "test_fraction", "official", "fold")
# --resplit turns the labels' own split off: the patient split is drawn instead.
SPLIT_FLAG_NAMES: dict[str, str] = {"official": "--resplit"}
JOINT_FLAGS: tuple[str, ...] = ("loss_balance", "loss_weights", "compare_single_task")
JOINT_FLAG_NAMES: dict[str, str] = {"compare_single_task": "--no-single-task-baseline"}
SPLIT_DEST = "split."
logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "finetune", help="fine-tune the encoder on a registered downstream task (EF, views, reduced EF, LV masks, ...)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", type=task_list, required=True, metavar="TASK[,TASK...]",
                        help=("; ".join(f"{task.name}: {task.title}" for task in TASKS)
                              + "; several, comma-separated: one multi-task model").replace("%", "%%"))
    parser.add_argument("--shards", type=storage.location, required=True, help="OUTPUT/shards (a directory or an s3:// URL)")
    parser.add_argument("--manifest", type=storage.location, default=None, help="default: OUTPUT/manifest.parquet beside the shards")
    parser.add_argument("--labels", type=Path, required=True,
                        help=("labels CSV or Parquet (by clip_id, source_id, or source path: needs the secret); "
                              "its own split column, when it has one, is the split"))
    parser.add_argument("--mask-root", type=Path, default=None, help="directory mask_file paths are relative to (default: the labels file's)")
    parser.add_argument("--encoder", required=True, help=ENCODER_HELP)
    add_option_flags(parser, FinetuneOptions, OPTION_FLAGS)
    add_option_flags(parser, SplitConfig, SPLIT_FLAGS, dest_prefix=SPLIT_DEST, flags=SPLIT_FLAG_NAMES)
    joint = parser.add_argument_group("multi-task options (several tasks)")
    add_option_flags(joint, JointOptions, JOINT_FLAGS, flags=JOINT_FLAG_NAMES)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--register", action="store_true", help="log to MLflow and register as the task's model @challenger")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, the encoder's run store, or OUT/mlflow.db")
    add_secret_file_flag(parser)
    return parser


def task_list(text: str) -> tuple[str, ...]:
    """`--task ef,view` -> ("ef", "view"), an unknown name a usage error."""
    try:
        return parse_tasks(text)
    except TaskError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def config_from_args(args: argparse.Namespace) -> FinetuneConfig | MultitaskConfig:
    """The run's config from the flags given; the split's seed follows --seed."""
    split = given_options(args, SplitConfig, dest_prefix=SPLIT_DEST)
    options, joint = given_options(args, FinetuneOptions), given_options(args, JointOptions)
    if len(args.task) > 1:
        return MultitaskConfig(tasks=args.task, **options, **joint, split=split)
    if joint:
        flags = ", ".join(JOINT_FLAG_NAMES.get(name, "--" + name.replace("_", "-")) for name in joint)
        raise FinetuneConfigError(f"{flags}: multi-task options, for several tasks (--task ef,view)")
    return FinetuneConfig(task=args.task[0], **options, split=split)


def run(args: argparse.Namespace) -> int:
    from echofm.data.loader import file_digest
    from echofm.downstream.finetune import finetune
    from echofm.downstream.multitask.train import finetune_multitask
    from echofm.errors import EchoFMError
    from echofm.io.deid import optional_secret
    from echofm.registry.register import log_and_register
    from echofm.store import CHALLENGER, default_tracking_uri

    try:
        config = config_from_args(args)
        tracking_uri = args.tracking_uri or default_tracking_uri(args.encoder, args.out)
        run_finetune = finetune_multitask if isinstance(config, MultitaskConfig) else finetune
        result = run_finetune(config, encoder=args.encoder, shards=args.shards, labels=args.labels,
                              manifest=args.manifest, out_dir=args.out, mask_root=args.mask_root,
                              tracking_uri=tracking_uri, secret=optional_secret(args.secret_file))
    except (EchoFMError, FileNotFoundError) as exc:
        # Not the library's text: a label table's cells and file names can identify patients.
        logger.error("%s", usage_error_message(exc, args))
        return EXIT_USAGE
    summary = result.summary()
    if isinstance(config, MultitaskConfig):
        report = {"tasks": list(config.tasks), "strategy": config.strategy, "loss_balance": config.loss_balance,
                  "counts": result.counts, "comparison": summary["comparison"], "multitask": result.multitask.metrics,
                  "single_task": {t: arm.metrics for t, arm in result.single_task.items()},
                  "random_init": result.random_init.metrics if result.random_init else None,
                  "baselines": {name: arm.metrics for name, arm in result.baselines.items()},
                  "loss_weights": result.multitask.loss_weights, "checkpoint": str(result.checkpoint)}
    else:
        report = {"task": config.task, "strategy": config.strategy, "counts": result.counts,
                  "pretrained": result.pretrained.metrics,
                  "random_init": result.random_init.metrics if result.random_init else None,
                  "baselines": {name: arm.metrics for name, arm in result.baselines.items()},
                  "comparison": summary["comparison"], "checkpoint": str(result.checkpoint)}
    if args.register:
        registered = log_and_register(result.checkpoint, tracking_uri=tracking_uri, labels_digest=file_digest(args.labels))
        report["registered"] = {"model_uri": registered.model_uri, "alias": CHALLENGER, "run_id": registered.run_id,
                                "tracking_uri": tracking_uri}
    print(json.dumps(report, indent=2, default=float))
    return 0
