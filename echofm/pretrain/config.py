"""The frozen configuration of one pretraining run.

Everything that decides the weights a run ends with lives here (the checkpoint stores it, and a
resumed run refuses a config that differs in any of those fields); paths and the process layout
(ranks, nodes) are given to `pretrain` and the launcher separately.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from echofm.data.augment import AugmentConfig
from echofm.store import ENCODER_MODEL_NAME
from echofm.errors import TrainingError

PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

# Fields that may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {
        "steps",
        "epochs",
        "schedule_steps",
        "ckpt_every",
        "keep_last",
        "eval_every",
        "log_every",
        "tracking",
        "register_model",
        "record_samples",
    }
)


class PretrainConfigError(TrainingError, ValueError):
    """A pretraining configuration is inconsistent (ranges, missing run length)."""


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """One pretraining run.

    Run length: `steps` optimiser steps, or `epochs` x `steps_per_epoch` (default: one pass over
    the training clips at the effective batch). An optimiser step consumes `accum_steps`
    micro-batches of `batch_size` clips on every rank: effective batch = batch_size x accum_steps
    x world_size, and lr = base_lr x effective batch / 256 (the MAE rule).
    """

    preset: str = "tiny"
    img_size: int | None = None  # None: the preset's
    num_frames: int | None = None  # None: the preset's; fewer than 32 subsample time
    model_overrides: dict[str, Any] = field(default_factory=dict)
    mask_ratio: float | None = None  # None: the model config's

    steps: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    # Steps the lr schedule spans (default: the run length). Set it to the full length when a
    # long schedule is run in pieces (`steps` = where this piece stops, then `--resume`).
    schedule_steps: int | None = None
    batch_size: int = 8
    accum_steps: int = 1

    base_lr: float = 1.5e-4
    min_lr: float = 0.0
    warmup_steps: int | None = None  # None: 5% of the run
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = 1.0
    precision: str = "auto"
    device: str = "auto"

    num_workers: int = 2
    shuffle_buffer: int = 64
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    norm_max_clips: int = 256
    holdout_clips: int = 8  # fixed held-out batch for the reconstruction figure and collapse monitor

    ckpt_every: int = 100
    keep_last: int = 3
    eval_every: int = 100
    log_every: int = 1
    seed: int = 0
    tracking: bool = True  # MLflow records on rank 0 (off: benchmarks, debugging)
    register_model: bool = True
    registered_model_name: str = ENCODER_MODEL_NAME
    experiment_name: str = "echofm-pretrain"
    record_samples: bool = False  # write each rank's clip ids (tests of the data split)

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise PretrainConfigError("give exactly one of steps or epochs")
        for name in ("steps", "epochs", "steps_per_epoch", "schedule_steps", "img_size", "num_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PretrainConfigError(f"{name} must be at least 1, got {value}")
        for name in ("batch_size", "accum_steps", "ckpt_every", "keep_last", "log_every", "norm_max_clips"):
            if getattr(self, name) < 1:
                raise PretrainConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_every < 0 or self.num_workers < 0 or self.holdout_clips < 0:
            raise PretrainConfigError("eval_every, num_workers and holdout_clips must be >= 0")
        if self.register_model and not self.tracking:
            raise PretrainConfigError("register_model needs tracking (the model is logged to MLflow)")
        if self.eval_every and self.holdout_clips < 2:
            raise PretrainConfigError("evaluation (eval_every > 0) needs holdout_clips >= 2")
        if not self.base_lr > 0 or self.min_lr < 0 or self.min_lr > self.base_lr:
            raise PretrainConfigError("need base_lr > 0 and 0 <= min_lr <= base_lr")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise PretrainConfigError("warmup_steps must be >= 0")
        if self.weight_decay < 0:
            raise PretrainConfigError("weight_decay must be >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise PretrainConfigError(f"betas must be two values in [0, 1), got {self.betas}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise PretrainConfigError("clip_grad must be > 0 or None")
        if self.precision not in PRECISIONS:
            raise PretrainConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise PretrainConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.mask_ratio is not None and not 0.0 <= self.mask_ratio < 1.0:
            raise PretrainConfigError("mask_ratio must lie in [0, 1)")

    def model_kwargs(self) -> dict[str, Any]:
        """Overrides for `echofm.model.build_model(self.preset, **...)`."""
        kwargs = dict(self.model_overrides)
        if self.img_size is not None:
            kwargs["img_size"] = self.img_size
        if self.num_frames is not None:
            kwargs["num_frames"] = self.num_frames
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (checkpoints load with `weights_only=True`; JSON and MLflow params)."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        data = dict(data)
        if data.get("augment") is not None:
            data["augment"] = AugmentConfig(**data["augment"])
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def resume_conflicts(self, other: PretrainConfig) -> list[str]:
        """Fields that differ from `other` and would change what a resumed run computes."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs[k])


def resolve_precision(choice: str, device: torch.device) -> str:
    """The precision actually used: `auto` is bf16 on GPUs that have it, fp16 (with a gradient
    scaler) on older GPUs, and on CPU bf16 only where the CPU computes it natively (AVX-512 BF16 /
    AMX); elsewhere CPU bf16 is emulated and slower than fp32, so fp32."""
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if native_bf16 else "fp32"


AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
