"""The pretraining loop: MAE + temporal triplet on the shards, one process or many under torchrun.

    result = pretrain(PretrainConfig(preset="tiny", steps=1000), "OUTPUT/shards", "runs/tiny")

Run directory layout: `checkpoints/step-*.pt` (rotated), `encoder.pt` (the final weights with
config and normalisation, what downstream loads), `normalization.json`, `figures/`,
`mlflow.db` + `mlartifacts/` (when no tracking server is set), `result.json` (rank 0, at the end),
`samples/rank-*.txt` and `weights-rank-*.sha256` (with `record_samples`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
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
    gather_rng_states,
    weights_digest,
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from echofm.device import AUTOCAST_DTYPES, resolve_device, resolve_precision
from echofm.pretrain.config import PretrainConfig
from echofm.pretrain.distributed import (
    DistContext,
    all_reduce_mean,
    any_rank,
    barrier,
    init_distributed,
    wrap_model,
)
from echofm.pretrain.optim import build_optimizer, build_scheduler
from echofm.pretrain.plan import RunData, RunPlan, check_resumable, fix_normalization, plan_data
from echofm.pretrain.figures import collapse_warning, reconstruction_figure
from echofm.pretrain.report_set import ReportSet
from echofm.representation.report import RepresentationReport
from echofm.pretrain.tracker import PretrainTracker, RegisteredEncoder, dataset_digest, dataset_record, run_params
from echofm.store import code_version
from echofm.errors import TrainingError

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
ENCODER_FILE = "encoder.pt"  # final weights + config + normalisation, no optimiser state


class NonFiniteLoss(TrainingError, FloatingPointError):
    """The training loss became NaN or infinite; the run stopped before applying that step.

    `step` is the optimiser step (1-based) whose loss was not finite; `last_checkpoint` is the
    newest checkpoint left in the run directory (None when none was written yet).
    """

    def __init__(self, step: int, losses: dict[str, float], last_checkpoint: Path | None) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in losses.items())
        where = f"resume from {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        super().__init__(f"non-finite loss at step {step} ({shown}); stopped, {where}")
        self.step = step
        self.losses = losses
        self.last_checkpoint = last_checkpoint


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


@dataclass(kw_only=True)
class TrainLoop:
    """Optimiser steps from `start_step` to the end: accumulation, clipping, logging, evaluation
    and checkpoints, over the parts `run_pretraining` hands it."""

    config: PretrainConfig
    plan: RunPlan
    ctx: DistContext
    device: torch.device
    precision: str
    model: nn.Module
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ckpt_dir: Path
    out_dir: Path
    tracker: PretrainTracker | None
    eval_batch: torch.Tensor | None
    report_set: ReportSet | None
    normalization: ClipNormalization
    checkpoint_extra: dict[str, Any]
    last_report: RepresentationReport | None = field(default=None, init=False)  # rank 0, with a report set
    # Of the last optimiser step, for its log line.
    lr: float = field(default=0.0, init=False)
    grad_norm: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        dtype = AUTOCAST_DTYPES[self.precision]
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
        )

    def run(self, loader: torch.utils.data.DataLoader, start_step: int) -> dict[str, float]:
        config, plan, ctx = self.config, self.plan, self.ctx
        batches = _micro_batches(loader, start_step * config.accum_steps, plan.steps_per_epoch * config.accum_steps)
        samples_file = None
        if config.record_samples:
            (self.out_dir / "samples").mkdir(exist_ok=True)
            samples_file = open(self.out_dir / "samples" / f"rank-{ctx.rank}.txt", "a")  # noqa: SIM115
        step = start_step
        loss_value, clips_per_s, wait_total, time_total = float("nan"), 0.0, 0.0, 0.0
        try:
            self.model.train()
            while step < plan.total_steps:
                started = time.perf_counter()
                losses, waited = self._accumulate(batches, step, samples_file)
                self._optimizer_step(step + 1, losses)
                step += 1
                elapsed = time.perf_counter() - started
                wait_total += waited
                time_total += elapsed
                clips_per_s = plan.effective_batch / elapsed
                loss_value = losses["loss"]
                if step % config.log_every == 0 or step == plan.total_steps:
                    self._log_step(step, losses, clips_per_s, waited / elapsed)
                if config.eval_every and (step % config.eval_every == 0 or step == plan.total_steps):
                    self._evaluate(step)
                if step % config.ckpt_every == 0 or step == plan.total_steps:
                    self._checkpoint(step)
        finally:
            batches.close()
            if samples_file is not None:
                samples_file.close()
        return {
            "loss": loss_value,
            "clips_per_s": clips_per_s,
            "data_wait_fraction": wait_total / time_total if time_total else 0.0,
        }

    def _accumulate(self, batches: Iterator[Any], step: int, samples_file: Any) -> tuple[dict[str, float], float]:
        """Forward/backward over `accum_steps` micro-batches; gradients sync on the last only."""
        config = self.config
        totals = torch.zeros(3, device=self.device)
        waited = 0.0
        for micro in range(config.accum_steps):
            wait_start = time.perf_counter()
            video, keys = next(batches)
            video = video.to(self.device, non_blocking=True)
            waited += time.perf_counter() - wait_start
            if samples_file is not None:
                samples_file.write(f"{step + 1} {' '.join(keys)}\n")
            last = micro == config.accum_steps - 1
            sync = contextlib.nullcontext() if last or not self.ctx.distributed else self.ddp_model.no_sync()
            with sync:
                with self.autocast():
                    out = self.ddp_model(video, config.mask_ratio)
                self.scaler.scale(out.loss / config.accum_steps).backward()
            totals += torch.stack([out.loss.detach(), out.recon_loss.detach(), out.triplet_loss.detach()]).float()
        totals /= config.accum_steps
        if any_rank(not bool(torch.isfinite(totals).all()), self.ctx, self.device):
            values = dict(zip(("loss", "recon_loss", "triplet_loss"), totals.tolist(), strict=True))
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(step + 1, values, latest_checkpoint(self.ckpt_dir))
        mean = all_reduce_mean(totals, self.ctx).tolist()
        return dict(zip(("loss", "recon_loss", "triplet_loss"), mean, strict=True)), waited

    def _optimizer_step(self, step: int, losses: dict[str, float]) -> None:
        self.lr = self.scheduler.get_last_lr()[0]
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        self.grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad))
            if self.config.clip_grad is not None
            else float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _log_step(self, step: int, losses: dict[str, float], clips_per_s: float, wait_fraction: float) -> None:
        if self.tracker is None:
            return
        metrics = {
            **losses,
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            "clips_per_s": clips_per_s,
            "data_wait_fraction": wait_fraction,
        }
        self.tracker.log_metrics(metrics, step)
        log.info(
            "step %d/%d loss %.4f (recon %.4f, triplet %.4f) lr %.2e %.1f clips/s",
            step,
            self.plan.total_steps,
            losses["loss"],
            losses["recon_loss"],
            losses["triplet_loss"],
            self.lr,
            clips_per_s,
        )

    @torch.no_grad()
    def _evaluate(self, step: int) -> None:
        """Rank 0: held-out reconstruction figure and loss, and the representation report.

        A private generator fixes the masks, so figures are comparable across steps and the
        global RNG (training masks) is untouched, which keeps resumed runs exact.
        """
        if self.tracker is None or self.eval_batch is None:
            return
        self.model.eval()
        video = self.eval_batch.to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        out = self.model(video, self.config.mask_ratio, generator=generator)
        if self.report_set is not None:
            self.last_report = self.report_set.report(self.model, step)
            collapse_warning(self.last_report)
            self.tracker.log_report(self.last_report)
        self.model.train()
        self.tracker.log_metrics(
            {
                "eval_loss": float(out.loss),
                "eval_recon_loss": float(out.recon_loss),
                "eval_triplet_loss": float(out.triplet_loss),
            },
            step,
        )
        self.tracker.log_figure(
            reconstruction_figure(self.model, video, out.pred, out.mask, self.normalization), step
        )

    def measure_final(self, step: int) -> None:
        """Rank 0: the representation report of the final weights when `run` measured none: a
        run resumed from its last checkpoint (killed before registering) trains no step, and an
        encoder registered without a report is one the promotion gate refuses."""
        if self.last_report is not None or self.report_set is None or self.tracker is None:
            return
        self.last_report = self.report_set.report(self.model, step)
        collapse_warning(self.last_report)
        self.tracker.log_report(self.last_report)

    def _checkpoint(self, step: int) -> None:
        rng_states = gather_rng_states(self.ctx)  # every rank takes part in the gather
        if self.ctx.is_main:
            if self.tracker is not None:
                # Before the checkpoint exists: a run killed right after it resumes past these
                # steps, so their metrics must already be in MLflow.
                self.tracker.flush()
            save_training_checkpoint(
                self.ckpt_dir,
                step=step,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                config={**self.config.to_dict(), "_plan": asdict(self.plan)},
                rng_states=rng_states,
                keep_last=self.config.keep_last,
                extra=self.checkpoint_extra,
            )
        barrier(self.ctx)


def _micro_batches(loader: torch.utils.data.DataLoader, start: int, epoch_length: int) -> Iterator[Any]:
    """Endless micro-batches from micro-batch index `start` on, epoch after epoch, from one
    iteration of `loader` (its workers live for the whole run)."""
    epoch, offset = divmod(start, epoch_length)
    loader.dataset.set_epoch(epoch, skip_batches=offset, epochs=None)
    yield from loader


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
