"""`echofm pretrain --shards OUTPUT/shards --preset tiny|base|large ...`: MAE + triplet pretraining.

One process by default (in this process; under an outside `torchrun` it joins that job). With
`--nproc-per-node N` > 1 or `--nnodes M` > 1 it starts torchrun itself and streams its output;
on a cluster run the same command on every node with the same `--rdzv-endpoint HOST:PORT`.
The run directory (`--out`) receives checkpoints, `encoder.pt`, figures and, unless
MLFLOW_TRACKING_URI is set, the MLflow store `mlflow.db`.

Exit status: 0 done; 2 invalid options or inputs (no shards, too few clips, no usable checkpoint
for `--resume`, a checkpoint of another run); 3 the loss became NaN/inf (resume from the last
checkpoint with a lower lr); 1 any other failure of the job.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from echofm.cli.options import add_option_flags, given_options
from echofm.data import storage
from echofm.pretrain.config import LaunchSpec, PretrainConfig

EXIT_USAGE = 2
EXIT_DIVERGED = 3
logger = logging.getLogger(__name__)

# The run's options this command offers (the rest keep the config's defaults), and the flags
# whose spelling is not `--field-name`.
RUN_FLAGS: tuple[str, ...] = (
    "preset", "schedule_steps", "batch_size", "accum_steps", "base_lr", "warmup_steps", "precision", "device",
    "img_size", "num_frames", "mask_ratio", "num_workers", "cache_mib", "holdout_clips", "ckpt_every", "keep_last", "eval_every",
    "seed", "register_model", "experiment_name", "triplet_mode", "report_clips", "probe_labels", "compile",
    "activation_checkpointing",
)
LAUNCH_FLAGS: tuple[str, ...] = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_id")
FLAG_NAMES: dict[str, str] = {"experiment_name": "--experiment", "register_model": "--no-register"}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "pretrain",
        help="MAE + triplet pretraining on the shards (torchrun DDP, MLflow)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shards", type=storage.location, required=True, help="directory or s3:// URL of *.tar shards (OUTPUT/shards)")
    add_option_flags(parser.add_mutually_exclusive_group(required=True), PretrainConfig, ("steps", "epochs"))
    add_option_flags(parser, PretrainConfig, RUN_FLAGS, flags=FLAG_NAMES)
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    add_option_flags(parser, LaunchSpec, LAUNCH_FLAGS)
    return parser


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    given = given_options(args, PretrainConfig)
    if args.no_augment:
        given["augment"] = None
    return PretrainConfig(**given)


def run(args: argparse.Namespace) -> int:
    from echofm.errors import EchoFMError
    from echofm.pretrain.checkpointing import CHECKPOINTS_DIR, latest_checkpoint
    from echofm.pretrain.distributed import cleanup_distributed
    from echofm.pretrain.launch import TrainingDiverged, TrainingJobFailed, TrainingJobRejected, launch_pretraining
    from echofm.pretrain.loop import pretrain
    from echofm.pretrain.train_loop import NonFiniteLoss

    try:
        config = config_from_args(args)
        spec = LaunchSpec(**given_options(args, LaunchSpec))
    except EchoFMError as exc:
        sys.stderr.write(f"echofm pretrain: invalid options: {exc}\n")
        return EXIT_USAGE
    try:
        if spec.world_size > 1:
            result = launch_pretraining(config, args.shards, args.out, spec=spec, resume=args.resume, on_line=_echo)
            if result:
                _report(result)
            return 0
        try:
            _report(pretrain(config, args.shards, args.out, resume=args.resume).to_dict())
        finally:
            cleanup_distributed()  # only does something under an outside torchrun
        return 0
    except TrainingDiverged as exc:
        sys.stderr.write(f"echofm pretrain: the loss diverged; see {exc.path}/failure.json\n")
        return EXIT_DIVERGED
    except NonFiniteLoss as exc:
        sys.stderr.write(f"echofm pretrain: {exc}\n")
        return EXIT_DIVERGED
    except TrainingJobRejected as exc:
        sys.stderr.write(f"echofm pretrain: {exc}\n")
        return EXIT_USAGE
    except TrainingJobFailed as exc:
        can_resume = not args.resume and latest_checkpoint(Path(args.out) / CHECKPOINTS_DIR) is not None
        hint = "; resume with --resume" if can_resume else "; its output above says why"
        sys.stderr.write(f"echofm pretrain: the job failed (exit {exc.returncode}){hint}\n")
        return 1
    except (EchoFMError, FileNotFoundError) as exc:
        sys.stderr.write(f"echofm pretrain: {exc}\n")
        return EXIT_USAGE


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _report(result: dict) -> None:
    registered = result.get("registered")
    where = f", registered {registered['name']} v{registered['version']} @{registered['alias']}" if registered else ""
    sys.stdout.write(
        f"pretrained {result['step']} steps, final loss {result['final_loss']:.4f}, "
        f"{result['clips_per_s']:.1f} clips/s, checkpoint {result['checkpoint']}{where}\n"
    )
