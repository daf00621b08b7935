"""`echofm pretrain --shards OUTPUT/shards --preset tiny|base|large ...`: MAE + triplet pretraining.

One process by default (in this process; under an outside `torchrun` it joins that job). With
`--nproc-per-node N` > 1 or `--nnodes M` > 1 it starts torchrun itself and streams its output;
on a cluster run the same command on every node with the same `--rdzv-endpoint HOST:PORT`.
The run directory (`--out`) receives checkpoints, `encoder.pt`, figures and, unless
MLFLOW_TRACKING_URI is set, the MLflow store `mlflow.db`.

Exit status: 0 done; 2 invalid options or no usable checkpoint for `--resume`; 3 the loss became
NaN/inf (resume from the last checkpoint with a lower lr); 1 any other failure of the job.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from echofm.pretrain.config import PretrainConfig

EXIT_USAGE = 2
EXIT_DIVERGED = 3
logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "pretrain",
        help="MAE + triplet pretraining on the shards (torchrun DDP, MLflow)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shards", type=Path, required=True, help="directory of *.tar shards (OUTPUT/shards)")
    parser.add_argument("--preset", default="tiny", help="model preset: tiny, base or large (default tiny)")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimiser steps")
    length.add_argument("--epochs", type=int, help="passes over the training clips")
    parser.add_argument("--schedule-steps", type=int, default=None, help="steps the lr schedule spans (default: the run)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per process per micro-batch (default 8)")
    parser.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimiser step (default 1)")
    parser.add_argument("--base-lr", type=float, default=1.5e-4, help="lr per 256 clips of effective batch")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default 5%% of the run)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--img-size", type=int, default=None, help="frame side in pixels (default: the preset's)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the preset's)")
    parser.add_argument("--mask-ratio", type=float, default=None, help="default: the model config's (0.75)")
    parser.add_argument("--num-workers", type=int, default=2, help="data-loader processes per rank (default 2)")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--ckpt-every", type=int, default=100)
    parser.add_argument("--keep-last", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=100, help="0: no evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    parser.add_argument("--no-register", action="store_true", help="do not register the encoder in MLflow")
    parser.add_argument("--experiment", default="echofm-pretrain", help="MLflow experiment name")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes on this node (GPUs, or CPU ranks)")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of the c10d rendezvous (multi-node)")
    parser.add_argument("--rdzv-id", default="echofm-pretrain", help="job id shared by all nodes")
    return parser


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    from echofm.data.augment import AugmentConfig
    from echofm.pretrain.config import PretrainConfig

    return PretrainConfig(
        preset=args.preset,
        img_size=args.img_size,
        num_frames=args.num_frames,
        mask_ratio=args.mask_ratio,
        steps=args.steps,
        epochs=args.epochs,
        schedule_steps=args.schedule_steps,
        batch_size=args.batch_size,
        accum_steps=args.accum_steps,
        base_lr=args.base_lr,
        warmup_steps=args.warmup_steps,
        precision=args.precision,
        device=args.device,
        num_workers=args.num_workers,
        augment=None if args.no_augment else AugmentConfig(),
        ckpt_every=args.ckpt_every,
        keep_last=args.keep_last,
        eval_every=args.eval_every,
        seed=args.seed,
        register_model=not args.no_register,
        experiment_name=args.experiment,
    )


def run(args: argparse.Namespace) -> int:
    from echofm.model import ModelConfigError, UnknownPreset
    from echofm.pretrain.checkpointing import NoCheckpoint, ResumeMismatch
    from echofm.pretrain.config import PretrainConfigError
    from echofm.pretrain.distributed import cleanup_distributed
    from echofm.pretrain.launch import LaunchSpec, TrainingDiverged, TrainingJobFailed, launch_pretraining
    from echofm.pretrain.loop import NonFiniteLoss, pretrain

    try:
        config = config_from_args(args)
        spec = LaunchSpec(
            nproc_per_node=args.nproc_per_node,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            rdzv_endpoint=args.rdzv_endpoint,
            rdzv_id=args.rdzv_id,
        )
    except (PretrainConfigError, ValueError) as exc:
        sys.stderr.write(f"echofm pretrain: invalid options: {exc}\n")
        return EXIT_USAGE
    if spec.nproc_per_node > 1 or spec.nnodes > 1:
        try:
            result = launch_pretraining(
                config, args.shards, args.out, spec=spec, resume=args.resume, on_line=_echo
            )
        except TrainingDiverged as exc:
            sys.stderr.write(f"echofm pretrain: the loss diverged; see {exc.path}/failure.json\n")
            return EXIT_DIVERGED
        except TrainingJobFailed as exc:
            sys.stderr.write(f"echofm pretrain: the job failed (exit {exc.returncode}); resume with --resume\n")
            return 1
        if result:
            _report(result)
        return 0
    try:
        result = pretrain(config, args.shards, args.out, resume=args.resume)
    except (NoCheckpoint, ResumeMismatch, UnknownPreset, ModelConfigError, FileNotFoundError) as exc:
        sys.stderr.write(f"echofm pretrain: {exc}\n")
        return EXIT_USAGE
    except NonFiniteLoss as exc:
        sys.stderr.write(f"echofm pretrain: {exc}\n")
        return EXIT_DIVERGED
    finally:
        cleanup_distributed()  # only does something under an outside torchrun
    _report(result.to_dict())
    return 0


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
