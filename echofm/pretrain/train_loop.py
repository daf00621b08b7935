"""One rank's optimiser steps: accumulation, clipping, logging, evaluation and checkpoints.

`echofm.pretrain.loop.run_pretraining` builds the parts and hands them to `TrainLoop`; this module
owns what happens between the first step and the last.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echofm.data.loader import ClipNormalization
from echofm.device import AUTOCAST_DTYPES
from echofm.errors import TrainingError
from echofm.pretrain.checkpointing import gather_rng_states, latest_checkpoint, save_training_checkpoint
from echofm.pretrain.config import PretrainConfig
from echofm.pretrain.distributed import DistContext, all_reduce_mean, any_rank, barrier
from echofm.pretrain.figures import collapse_warning, reconstruction_figure
from echofm.pretrain.plan import RunPlan
from echofm.pretrain.report_set import ReportSet
from echofm.pretrain.tracker import PretrainTracker
from echofm.representation.report import RepresentationReport

log = logging.getLogger(__name__)


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

    @torch.no_grad()
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
