"""Pretraining runs: MAE + temporal triplet on the shards, one process or many under torchrun.

    result = pretrain(PretrainConfig(preset="tiny", steps=1000), "OUTPUT/shards", "runs/tiny")

Run directory layout: `checkpoints/step-*.pt` (rotated), `encoder.pt` (the final weights with
config and normalisation, what downstream loads), `normalization.json`, `figures/`,
`mlflow.db` + `mlartifacts/` (when no tracking server is set), `result.json` (rank 0, at the end),
`samples/rank-*.txt` and `weights-rank-*.sha256` (with `record_samples`). The steps themselves
are `echofm.pretrain.train_loop.TrainLoop`'s.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from echofm.data import storage
from echofm.data.loader import ClipNormalization, load_clips, make_pretrain_loader
from echofm.model import build_model, save_checkpoint
from echofm.pretrain.checkpointing import (
    CHECKPOINTS_DIR,
    checkpoint_path,
    latest_checkpoint,
    load_training_checkpoint,
    weights_digest,
)
from echofm.device import resolve_device, resolve_precision
from echofm.pretrain.config import PretrainConfig
from echofm.pretrain.distributed import DistContext, barrier, init_distributed, wrap_model
from echofm.pretrain.optim import build_optimizer, build_scheduler
from echofm.pretrain.plan import RunData, check_resumable, fix_normalization, plan_data
from echofm.pretrain.report_set import ReportSet
from echofm.pretrain.tracker import PretrainTracker, RegisteredEncoder, dataset_digest, dataset_record, run_params
from echofm.pretrain.train_loop import TrainLoop
from echofm.store import code_version

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
ENCODER_FILE = "encoder.pt"  # final weights + config + normalisation, no optimiser state


@dataclass(frozen=True, kw_only=True)
class PretrainResult:
    """What a finished run produced (also written to `RUN_DIR/result.json` by rank 0)."""

    out_dir: Path
    step: int
    checkpoint: Path
    final_loss: float
    clips_per_s: float
    data_wait_fraction: float
    run_id: str | None = None
    registered: RegisteredEncoder | None = None
    representation: dict[str, Any] | None = None  # the last `RepresentationReport.to_dict()`

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["checkpoint"] = str(self.checkpoint)
        return data


@dataclass(kw_only=True)
class PretrainRun:
    """One rank's run, built and ready to train: what `run_pretraining` works with."""

    config: PretrainConfig
    ctx: DistContext
    device: torch.device
    precision: str
    shards_dir: storage.Location
    out_dir: Path
    ckpt_dir: Path
    data: RunData
    normalization: ClipNormalization
    model: nn.Module
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    start_step: int
    resume: bool


def build_run(
    config: PretrainConfig,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
) -> PretrainRun:
    """Join the process group, plan the data, build model, optimiser and schedule, and with
    `resume` restore them from the run directory's last checkpoint."""
    ctx = init_distributed()
    shards_dir, out_dir = storage.location(shards_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / CHECKPOINTS_DIR
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    data = plan_data(config, shards_dir, ctx.world_size)
    plan = data.plan
    normalization = fix_normalization(config, shards_dir, out_dir, ctx)

    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts)
    model = build_model(config.preset, **config.model_kwargs()).to(device)
    model.activation_checkpointing = config.activation_checkpointing
    ddp_model = wrap_model(model, ctx)
    if config.compile:
        ddp_model = torch.compile(ddp_model)
    optimizer = build_optimizer(model, lr=plan.peak_lr, weight_decay=config.weight_decay, betas=config.betas)
    scheduler = build_scheduler(
        optimizer,
        total_steps=plan.schedule_steps,
        warmup_steps=plan.warmup_steps,
        min_ratio=config.min_lr / config.base_lr,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    start_step = 0
    if resume:
        state = load_training_checkpoint(
            ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ctx=ctx
        )
        check_resumable(config, plan, state.config, state.path)
        start_step = state.step
        log.info("rank %d resumed from %s at step %d", ctx.rank, state.path, start_step)
    else:
        # Masking noise differs per rank; the data already does.
        _seed_everything(config.seed + 1 + ctx.rank)
    return PretrainRun(
        config=config, ctx=ctx, device=device, precision=precision, shards_dir=shards_dir, out_dir=out_dir,
        ckpt_dir=ckpt_dir, data=data, normalization=normalization, model=model, ddp_model=ddp_model,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, start_step=start_step, resume=resume,
    )


def pretrain(
    config: PretrainConfig,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
) -> PretrainResult:
    """Train `config` on `shards_dir`, writing into `out_dir`; continue its last checkpoint with
    `resume`. Under torchrun every rank calls this; only rank 0 writes checkpoints and MLflow.

    Raises:
        NonFiniteLoss: the loss became NaN/inf (no checkpoint is written for that step).
        NoCheckpoint, ResumeMismatch: `resume` without a usable checkpoint of the same run.
    """
    return run_pretraining(build_run(config, shards_dir, out_dir, resume=resume))


def run_pretraining(run: PretrainRun) -> PretrainResult:
    """Train a built run to its last step: the loop, MLflow on rank 0, the final encoder and
    its registration, `result.json`."""
    config, ctx, plan, data = run.config, run.ctx, run.data.plan, run.data
    mcfg = run.model.config
    log.info(
        "rank %d/%d on %s (%s): steps %d..%d, %d training clips, effective batch %d, peak lr %.3g",
        ctx.rank,
        ctx.world_size,
        run.device,
        run.precision,
        run.start_step,
        plan.total_steps,
        len(data.train_clips),
        plan.effective_batch,
        plan.peak_lr,
    )
    loader = make_pretrain_loader(
        run.shards_dir,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
        epoch_length=plan.steps_per_epoch * config.accum_steps,
        img_size=mcfg.img_size,
        num_frames=mcfg.num_frames,
        augment=config.augment,
        normalization=run.normalization,
        rank=ctx.rank,
        world_size=ctx.world_size,
        shuffle_buffer=config.shuffle_buffer,
        with_keys=True,
        clips=data.train_clips,
        cache_mib=config.cache_mib,
    )
    eval_batch = None
    report_set = None
    tracker = None
    if ctx.is_main and config.tracking:
        if config.eval_every and data.holdout:
            eval_batch = load_clips(
                data.clips, data.holdout, img_size=mcfg.img_size, num_frames=mcfg.num_frames,
                normalization=run.normalization,
            )
            if config.report_clips:
                report_set = ReportSet.load(config, data.clips, run.normalization, run.device)
        tracker = PretrainTracker(run.out_dir, experiment_name=config.experiment_name)
        tracker.start(
            params=run_params(config, plan, mcfg, ctx.world_size, run.precision, len(data.train_clips)),
            dataset=dataset_record(run.shards_dir, data.train_clips),
            resume=run.resume,
        )

    loop = TrainLoop(
        config=config,
        plan=plan,
        ctx=ctx,
        device=run.device,
        precision=run.precision,
        model=run.model,
        ddp_model=run.ddp_model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        ckpt_dir=run.ckpt_dir,
        out_dir=run.out_dir,
        tracker=tracker,
        eval_batch=eval_batch,
        report_set=report_set,
        normalization=run.normalization,
        checkpoint_extra={
            "normalization": run.normalization.to_dict(),
            "mlflow_run_id": tracker.run_id if tracker is not None else None,
        },
    )
    try:
        summary = loop.run(loader, run.start_step)
        if ctx.is_main:
            loop.measure_final(plan.total_steps)
    except BaseException:
        if tracker is not None:
            tracker.end(status="FAILED")
        raise
    if config.record_samples:
        (run.out_dir / f"weights-rank-{ctx.rank}.sha256").write_text(weights_digest(run.model))

    registered = None
    run_id = tracker.run_id if tracker is not None else None
    final_ckpt = latest_checkpoint(run.ckpt_dir)
    encoder_file = run.out_dir / ENCODER_FILE
    if ctx.is_main:
        save_checkpoint(
            encoder_file,
            run.model,
            extra={
                "normalization": run.normalization.to_dict(),
                "mlflow_run_id": run_id,
                "step": plan.total_steps,
                "pretrain_config": config.to_dict(),
            },
        )
    if tracker is not None:
        if config.register_model:
            registered = tracker.register_encoder(
                run.model,
                checkpoint=encoder_file,
                name=config.registered_model_name,
                tags={
                    "manifest_digest": dataset_digest(run.shards_dir),
                    "preset": config.preset,
                    "code_version": code_version(),
                    "checkpoint": str(final_ckpt),
                },
                report=loop.last_report,
            )
        tracker.end()
    result = PretrainResult(
        out_dir=run.out_dir,
        step=plan.total_steps,
        checkpoint=final_ckpt if final_ckpt is not None else checkpoint_path(run.ckpt_dir, plan.total_steps),
        final_loss=summary["loss"],
        clips_per_s=summary["clips_per_s"],
        data_wait_fraction=summary["data_wait_fraction"],
        run_id=run_id,
        registered=registered,
        representation=loop.last_report.to_dict() if loop.last_report is not None else None,
    )
    if ctx.is_main:
        (run.out_dir / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2))
    barrier(ctx)
    return result


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
