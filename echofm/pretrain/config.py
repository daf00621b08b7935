"""The frozen configuration of one pretraining run, defined once.

Everything that decides the weights a run ends with lives here (the checkpoint stores it, and a
resumed run refuses a config that differs in any of those fields); paths and the process layout
(ranks, nodes: `echofm.pretrain.launch.LaunchSpec`) are given to `pretrain` and the launcher
separately. `echofm pretrain` builds its flags from these fields and the `pretrain` flow takes
them as its form (`PretrainOptions`); torch-free, so neither has to load torch to do so.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from echofm.data.augment_config import AugmentConfig
from echofm.errors import TrainingError
from echofm.options import Options
from echofm.store import ENCODER_MODEL_NAME

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda"]
# `echofm.model.config.TRIPLET_MODES`, spelled out so this module stays torch-free (a test keeps
# the two equal): "phase" (the default), or "self", the seed's design (docs/representation.md).
TripletMode = Literal["phase", "self"]

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
        "cache_mib",
        "tracking",
        "register_model",
        "record_samples",
        "report_clips",
        "probe_labels",
        "compile",
        "activation_checkpointing",
    }
)


class PretrainConfigError(TrainingError, ValueError):
    """A pretraining configuration is inconsistent (ranges, missing run length)."""


class PretrainConfig(Options):
    """One pretraining run.

    Run length: `steps` optimiser steps, or `epochs` x `steps_per_epoch` (default: one pass over
    the training clips at the effective batch). An optimiser step consumes `accum_steps`
    micro-batches of `batch_size` clips on every rank: effective batch = batch_size x accum_steps
    x world_size, and lr = base_lr x effective batch / 256 (the MAE rule).
    """

    error: ClassVar[type[Exception]] = PretrainConfigError

    preset: str = Field(default="tiny", description="model preset: tiny, base or large")
    img_size: int | None = Field(default=None, ge=16, description="frame side in pixels (default: the preset's)")
    num_frames: int | None = Field(default=None, ge=4, description="frames per clip (default: the preset's; fewer than 32 subsample time)")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="further ModelConfig fields")
    mask_ratio: float | None = Field(default=None, ge=0.0, lt=1.0, description="default: the model config's (0.75)")
    triplet_mode: TripletMode | None = Field(default=None, description="temporal triplet design (default: the model config's, phase; self: the seed's)")

    steps: int | None = Field(default=None, ge=1, description="optimiser steps")
    epochs: int | None = Field(default=None, ge=1, description="passes over the training clips")
    steps_per_epoch: int | None = Field(default=None, ge=1, description="default: one pass at the effective batch")
    # Set it to the full length when a long schedule is run in pieces (`steps` = where this
    # piece stops, then `--resume`).
    schedule_steps: int | None = Field(default=None, ge=1, description="steps the lr schedule spans (default: the run)")
    batch_size: int = Field(default=8, ge=1, description="clips per process per micro-batch")
    accum_steps: int = Field(default=1, ge=1, description="micro-batches per optimiser step")

    base_lr: float = Field(default=1.5e-4, gt=0, description="lr per 256 clips of effective batch")
    min_lr: float = Field(default=0.0, ge=0, description="lr at the end of the cosine")
    warmup_steps: int | None = Field(default=None, ge=0, description="linear warm-up steps (default 5% of the run)")
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW betas, each in [0, 1)")
    clip_grad: float | None = Field(default=1.0, gt=0, description="gradient norm clip (none: no clipping)")
    precision: Precision = Field(default="auto", description="auto: bf16 where supported, else fp16 on GPU, fp32 on CPU")
    device: Device = "auto"

    num_workers: int = Field(default=2, ge=0, description="data-loader processes per rank")
    shuffle_buffer: int = Field(default=64, ge=1, description="clips mixed across a worker's shards")
    # Changes the cost, never the batches (echofm/data/clip_cache.py), so a resume may change it.
    cache_mib: int = Field(
        default=1024, ge=0,
        description="MiB per rank for holding the training clips in memory, resampled, when all fit (0: stream)",
    )
    augment: AugmentConfig | None = Field(default_factory=AugmentConfig, description="per-clip intensity and affine augmentation (none: off)")
    norm_max_clips: int = Field(default=256, ge=1, description="clips the normalisation statistics are computed from")
    holdout_clips: int = Field(default=8, ge=0, description="held-out clips for the reconstruction figure and eval loss")
    # The held-out clips, then training clips in the same stable order (`report_set.py`).
    report_clips: int = Field(default=128, ge=0, description="clips the representation report measures at each evaluation (0: off)")
    probe_labels: str | None = Field(default=None, description="CSV/Parquet keyed by clip_id with view/ef/patient: the report's frozen probes")
    compile: bool = Field(default=False, description="torch.compile the training model (measure with echofm bench pretrain)")
    activation_checkpointing: bool = Field(default=False, description="recompute block activations in backward: less memory, more compute")

    ckpt_every: int = Field(default=100, ge=1, description="steps between checkpoints")
    keep_last: int = Field(default=3, ge=1, description="checkpoints kept")
    eval_every: int = Field(default=100, ge=0, description="steps between evaluations (0: none)")
    log_every: int = Field(default=1, ge=1, description="steps between logged metrics")
    seed: int = 0
    tracking: bool = Field(default=True, description="MLflow records on rank 0 (off: benchmarks, debugging)")
    register_model: bool = Field(default=True, description="register the encoder as echofm-encoder@challenger")
    registered_model_name: str = ENCODER_MODEL_NAME
    experiment_name: str = Field(default="echofm-pretrain", description="MLflow experiment name")
    record_samples: bool = Field(default=False, description="write each rank's clip ids (tests of the data split)")

    @model_validator(mode="after")
    def _consistent(self) -> PretrainConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        if self.register_model and not self.tracking:
            raise ValueError("register_model needs tracking (the model is logged to MLflow)")
        if self.eval_every and self.holdout_clips < 2:
            raise ValueError("evaluation (eval_every > 0) needs holdout_clips >= 2")
        if self.report_clips == 1:
            raise ValueError("the representation report needs report_clips >= 2 (or 0: off)")
        if self.min_lr > self.base_lr:
            raise ValueError("need 0 <= min_lr <= base_lr")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        return self

    def model_kwargs(self) -> dict[str, Any]:
        """Overrides for `echofm.model.build_model(self.preset, **...)`."""
        kwargs = dict(self.model_overrides)
        if self.img_size is not None:
            kwargs["img_size"] = self.img_size
        if self.num_frames is not None:
            kwargs["num_frames"] = self.num_frames
        if self.triplet_mode is not None:
            kwargs["triplet_mode"] = self.triplet_mode
        return kwargs

    def resume_conflicts(self, other: PretrainConfig) -> list[str]:
        """Fields that differ from `other` and would change what a resumed run computes."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs[k])


class LaunchError(TrainingError, ValueError):
    """A process layout that cannot start (a node rank outside the job, no rendezvous for several nodes)."""


class LaunchSpec(Options):
    """Process layout of a job: processes per node, nodes and the rendezvous.

    rdzv_endpoint: `HOST:PORT` of the c10d rendezvous (required with nnodes > 1).
    rdzv_id: a name shared by every node of one job.
    """

    error: ClassVar[type[Exception]] = LaunchError

    nproc_per_node: int = Field(default=1, ge=1, description="processes on this node (GPUs, or CPU ranks)")
    nnodes: int = Field(default=1, ge=1, description="nodes in the job")
    node_rank: int = Field(default=0, ge=0, description="this node's place among them")
    rdzv_endpoint: str | None = Field(default=None, description="HOST:PORT of the c10d rendezvous (multi-node)")
    rdzv_id: str = Field(default="echofm-pretrain-job", description="job id shared by every node")
    max_restarts: int = Field(default=0, ge=0, description="times torchrun restarts a failed worker group")
    python: str | None = Field(default=None, description="the workers' interpreter (default: this one)")

    @model_validator(mode="after")
    def _layout(self) -> LaunchSpec:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} outside {self.nnodes} nodes")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("a multi-node job needs rdzv_endpoint HOST:PORT")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


# The run length of a pretraining flow run that names none.
DEFAULT_FLOW_STEPS = 100


class PretrainOptions(PretrainConfig, LaunchSpec):
    """The `pretrain` flow's form: the run (`PretrainConfig`), its process layout (`LaunchSpec`)
    and how the flow retries it. Without `steps` or `epochs` it runs DEFAULT_FLOW_STEPS steps."""

    retries: int = Field(default=2, ge=0, le=10, description="resumed retries after an infrastructure failure")
    retry_delay_seconds: int = Field(default=30, ge=0, description="pause before a retry (lets a node come back)")
    resume: bool = Field(default=False, description="continue the run directory's last checkpoint")

    @model_validator(mode="before")
    @classmethod
    def _default_length(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("steps") is None and data.get("epochs") is None:
            data = {**data, "steps": DEFAULT_FLOW_STEPS}
        return data

    def to_config(self) -> PretrainConfig:
        return self.narrow(PretrainConfig)

    def to_spec(self) -> LaunchSpec:
        return self.narrow(LaunchSpec)
