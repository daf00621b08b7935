"""What a pretraining run will do, decided before it trains: its data, its sizes, whether it may resume.

`plan_data` splits the clips into training and held-out ones and derives the run's length,
warm-up and learning rate (`plan_run`); `check_run` finds every user error a job can be refused
for before any training process starts, so the launcher never starts a torchrun job that every
rank would stop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echofm.data import storage
from echofm.data.loader import ClipNormalization, NotEnoughClips, select_holdout, training_clips
from echofm.model import preset_config
from echofm.pretrain.checkpointing import CHECKPOINTS_DIR, ResumeMismatch, read_checkpoint
from echofm.pretrain.config import PretrainConfig, PretrainConfigError
from echofm.pretrain.distributed import DistContext, barrier
from echofm.pretrain.optim import scaled_lr


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """Sizes a run derives from its config, the data and the world."""

    total_steps: int
    schedule_steps: int
    warmup_steps: int
    steps_per_epoch: int
    effective_batch: int
    peak_lr: float


def plan_run(config: PretrainConfig, n_clips: int, world_size: int) -> RunPlan:
    """Derive the run length, warm-up and learning rate (see `PretrainConfig`)."""
    effective_batch = config.batch_size * config.accum_steps * world_size
    steps_per_epoch = config.steps_per_epoch or max(1, math.ceil(n_clips / effective_batch))
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    schedule = config.schedule_steps or total
    if schedule < total:
        raise PretrainConfigError(f"schedule_steps ({schedule}) must cover the run ({total} steps)")
    warmup = config.warmup_steps if config.warmup_steps is not None else round(0.05 * schedule)
    return RunPlan(
        total_steps=total,
        schedule_steps=schedule,
        warmup_steps=min(warmup, schedule),
        steps_per_epoch=steps_per_epoch,
        effective_batch=effective_batch,
        peak_lr=scaled_lr(config.base_lr, effective_batch),
    )


@dataclass(frozen=True, kw_only=True)
class RunData:
    """The clips of a run (clip_id -> shard): all of them, the held-out few, the ones trained
    on, and the sizes they give the run in a world of `world_size` ranks."""

    clips: dict[str, Path]
    holdout: list[str]
    train_clips: dict[str, Path]
    plan: RunPlan


def plan_data(config: PretrainConfig, shards_dir: storage.Location, world_size: int) -> RunData:
    """Which clips train and which are held out, and the run plan they give.

    Raises NoShardsFound / ManifestError (no usable data), NotEnoughClips (fewer training clips
    than loader slots), PretrainConfigError (a schedule shorter than the run).
    """
    clips = training_clips(shards_dir)
    holdout = select_holdout(clips, config.holdout_clips)
    train_clips = {k: v for k, v in clips.items() if k not in set(holdout)}
    slots = world_size * max(1, config.num_workers)
    if len(train_clips) < slots:
        raise NotEnoughClips(len(train_clips), slots, shards_dir)
    return RunData(clips=clips, holdout=holdout, train_clips=train_clips,
                   plan=plan_run(config, len(train_clips), world_size))


def check_run(config: PretrainConfig, shards_dir: str | Path, out_dir: str | Path, *, world_size: int,
              resume: bool) -> None:
    """Every user error a run can be refused for, found before any training process starts:
    an unknown preset or model size, no usable shards, too few clips for the ranks and loader
    workers, and with `resume` no checkpoint or one of another run (NoCheckpoint,
    ResumeMismatch). The launcher calls it, so torchrun never starts a job that would stop on
    these in every rank."""
    preset_config(config.preset, **config.model_kwargs())
    data = plan_data(config, storage.location(shards_dir), world_size)
    if resume:
        stored = read_checkpoint(Path(out_dir) / CHECKPOINTS_DIR)
        if stored.world_size != world_size:
            raise ResumeMismatch(stored.path, f"written by {stored.world_size} ranks, resuming with {world_size}")
        check_resumable(config, data.plan, stored.config, stored.path)


def check_resumable(config: PretrainConfig, plan: RunPlan, stored: dict[str, Any], path: Path) -> None:
    stored = dict(stored)
    stored_plan = stored.pop("_plan", {})
    conflicts = config.resume_conflicts(PretrainConfig.from_dict(stored))
    if conflicts:
        raise ResumeMismatch(path, f"config differs from the checkpoint's in {conflicts}")
    for key in ("schedule_steps", "warmup_steps", "effective_batch", "steps_per_epoch"):
        if stored_plan.get(key) != getattr(plan, key):
            raise ResumeMismatch(
                path,
                f"{key} is {getattr(plan, key)} now but {stored_plan.get(key)} in the checkpoint "
                "(to run a schedule in pieces, set schedule_steps to its full length in every piece)",
            )


def fix_normalization(config: PretrainConfig, shards_dir: storage.Location, out_dir: Path, ctx: DistContext) -> ClipNormalization:
    """Rank 0 computes (or reads) the statistics and fixes them in the run directory; the others
    wait and read that file, so every rank and every resumption uses the same numbers."""
    path = out_dir / "normalization.json"
    if ctx.is_main and not path.exists():
        stats = ClipNormalization.for_shards(shards_dir, max_clips=config.norm_max_clips)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(stats.to_dict(), indent=2))
        tmp.replace(path)
    barrier(ctx)
    return ClipNormalization.from_dict(json.loads(path.read_text()))
