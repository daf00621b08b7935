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

from echofm.cli.options import add_option_flags, given_options
from echofm.cli.finetune import task_list
from echofm.downstream.config import FinetuneOptions
from echofm.downstream.multitask.config import JointOptions, parse_tasks
from echofm.downstream.tasks import PIPELINE_TASKS, TASKS
from echofm.ingest.config import IngestOptions
from echofm.pretrain.config import DEFAULT_FLOW_STEPS, PretrainOptions

log = logging.getLogger(__name__)

# Each stage's options this command offers, by the flow parameter they fill, with the flag of
# each (a stage's options keep their names, but three stages have a `batch_size` and two a
# number of workers). The secret file is ingestion's option; fine-tuning is handed the same one
# by the flow. A small archive needs the pretraining's holdout and loader workers: its training
# clips must feed every loader slot.
STAGE_FLAGS: dict[str, tuple[type[Any], dict[str, str]]] = {
    "ingest": (IngestOptions, {"workers": "--workers", "batch_size": "--ingest-batch-size",
                               "secret_file": "--secret-file", "path_map": "--path-map", "rehash": "--rehash"}),
    "pretraining": (PretrainOptions, {"preset": "--preset", "steps": "--steps", "batch_size": "--batch-size",
                                      "base_lr": "--base-lr", "img_size": "--img-size", "num_frames": "--num-frames",
                                      "nproc_per_node": "--nproc-per-node", "triplet_mode": "--triplet-mode",
                                      "mask_ratio": "--mask-ratio", "holdout_clips": "--holdout-clips",
                                      "eval_every": "--eval-every", "num_workers": "--loader-workers",
                                      "cache_mib": "--cache-mib"}),
    "finetuning": (FinetuneOptions, {"epochs": "--finetune-epochs", "strategy": "--strategy", "compare": "--compare"}),
    "joint": (JointOptions, {"loss_balance": "--loss-balance"}),
}


STAGE_NOTES: dict[str, str] = {
    "pretraining": f"without --steps a run of {DEFAULT_FLOW_STEPS} steps",
    "joint": "for the multi-task entries of --tasks (ef,view)",
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("pipeline", help="ingest, pretrain, fine-tune, evaluate and register in one flow",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pipeline_arguments(parser)
    parser.add_argument("source", type=Path, help="archive to ingest")
    parser.add_argument("output", type=Path, help="ingestion output directory")
    parser.add_argument("--runs", type=Path, required=True, help="directory for pretraining and fine-tuning runs")
    parser.add_argument("--labels", type=Path, default=None, help="labels CSV/Parquet; without it the pipeline stops after pretraining")
    return parser


def add_pipeline_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """Options shared by `echofm pipeline` and `echofm demo`; `defaults` replaces the stages'
    own defaults for a command (`{"tasks": [...], "pretraining": {"steps": 300}, ...}`)."""
    defaults = defaults or {}
    tasks = list(defaults.get("tasks", PIPELINE_TASKS))
    parser.add_argument("--tasks", nargs="+", type=task_list, default=tasks, metavar="TASK[,TASK...]",
                        help=f"downstream tasks to fine-tune, of {' '.join(TASKS.names())}; tasks joined by commas "
                             f"train one multi-task model (default {' '.join(tasks)})")
    for stage, (model, flags) in STAGE_FLAGS.items():
        group = parser.add_argument_group(f"{stage} options", STAGE_NOTES.get(stage))
        add_option_flags(group, model, flags, flags=flags, dest_prefix=f"{stage}.", defaults=defaults.get(stage))


def task_entry(entry: str | tuple[str, ...]) -> str | list[str]:
    """A --tasks entry as the flow takes it: a task name, or a list of them (one multi-task model).
    Defaults arrive as the strings the command set, given flags as parsed tuples."""
    names = parse_tasks(entry) if isinstance(entry, str) else tuple(entry)
    return names[0] if len(names) == 1 else list(names)


def pipeline_parameters(args: argparse.Namespace, *, source: Path, output: Path, runs: Path,
                        labels: Path | None) -> dict[str, Any]:
    """The flow's parameters from the command line (only what the user set overrides a default).
    SOURCE travels as a `SecretStr`, which Prefect stores masked."""
    from pydantic import SecretStr

    params: dict[str, Any] = {
        "source": SecretStr(str(source.resolve())),
        "output": str(output.resolve()),
        "runs": str(runs.resolve()),
        "labels": str(labels.resolve()) if labels else None,
        "tasks": [task_entry(entry) for entry in args.tasks],
    }
    for stage, (model, _) in STAGE_FLAGS.items():
        params[stage] = model(**given_options(args, model, dest_prefix=f"{stage}."))
    return params


def run(args: argparse.Namespace) -> int:
    from echofm.boundary import public_message
    from echofm.errors import EchoFMError
    from echofm.io.deid import DeidError, load_secret
    from flows.pipeline import echo_pipeline

    try:
        params = pipeline_parameters(args, source=args.source, output=args.output, runs=args.runs, labels=args.labels)
    except EchoFMError as exc:
        log.error("invalid options: %s", exc)
        return 2
    try:
        load_secret(secret_file=params["ingest"].secret_file, output=args.output)  # no secret: one line, no work
    except DeidError as exc:
        log.error("%s", exc)
        return 2
    try:
        result = echo_pipeline(**params)
    except Exception as exc:  # the flow run already logged the traceback; say which stage in one line
        log.error("pipeline failed: %s", public_message(exc))
        return 1
    print(result["summary"])
    return 0
