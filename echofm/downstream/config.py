"""The options of a fine-tuning run, defined once.

`FinetuneOptions` is everything but the task: the `finetune-and-register` flow's form and the
flags of `echofm finetune` / `echofm pipeline`. `FinetuneConfig` adds the task and is what
`finetune` runs and the checkpoint records. Torch-free, so the command line can read it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, field_validator, model_validator

from echofm.downstream.baselines import DEFAULT_BASELINES, Baseline, parse_baselines
from echofm.downstream.splits import SplitConfig
from echofm.downstream.tasks import TASKS
from echofm.errors import DownstreamError
from echofm.options import Options

# A frozen strategy trains only the head it names; `full` and `progressive` train the encoder too.
FrozenStrategy = Literal["linear", "mlp", "attentive"]
Strategy = Literal[FrozenStrategy, "full", "progressive"]
Head = Literal[FrozenStrategy, "segmentation"]
FROZEN_STRATEGIES: tuple[str, ...] = get_args(FrozenStrategy)
STRATEGIES: tuple[str, ...] = (*FROZEN_STRATEGIES, "full", "progressive")
# Base learning rates when none is given: a head alone takes larger steps than a whole encoder.
FROZEN_LR, ENCODER_LR = 1e-3, 3e-4


class FinetuneConfigError(DownstreamError, ValueError):
    """A fine-tuning configuration that cannot run (unknown task/strategy, bad numbers)."""


class FinetuneOptions(Options):
    """How to fine-tune, whatever the task.

    head: the head for `full`/`progressive` (default linear); frozen strategies use the head
    they name, segmentation tasks their decoder. lr: base learning rate (default FROZEN_LR for
    frozen strategies, ENCODER_LR otherwise); encoder layer i of depth d trains at
    `lr * layer_decay ** (d + 1 - i)`. Learning rates follow a cosine over the epochs. The
    patient split's seed follows `seed` unless the split names its own.
    """

    error: ClassVar[type[Exception]] = FinetuneConfigError

    strategy: Strategy = Field(default="linear", description="frozen encoder + linear/mlp/attentive head, full fine-tuning, or progressive unfreezing")
    head: Head | None = Field(default=None, description="head for full/progressive (default linear)")
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=8, ge=1, description="clips per optimiser step")
    lr: float | None = Field(default=None, gt=0,
                             description=f"base learning rate (default {FROZEN_LR:g} frozen, {ENCODER_LR:g} full/progressive)")
    weight_decay: float = Field(default=0.05, ge=0)
    layer_decay: float = Field(default=0.75, gt=0, le=1, description="layer-wise lr decay")
    unfreeze_every: int = Field(default=1, ge=1, description="progressive: epochs per newly unfrozen block")
    hidden_dim: int = Field(default=256, ge=1, description="width of the MLP head")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="head dropout")
    split: SplitConfig = Field(default_factory=SplitConfig, description="patient split into train/val/test")
    seed: int = Field(default=0, description="initialisation, batch order and (unless the split sets one) split seed")
    compare: tuple[str, ...] = Field(
        default=DEFAULT_BASELINES,
        description="initialisations trained beside the encoder with the same head and split: random, "
                    "NAME:SOURCE (imagenet:PATH, kinetics:PATH, echofm-published:PATH: any checkpoint "
                    "load_pretrained reads) or none; comma- or space-separated")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")

    @field_validator("compare", mode="before")
    @classmethod
    def _baselines(cls, value: Any) -> tuple[str, ...]:
        return tuple(b.spec for b in parse_baselines([value] if isinstance(value, str) else value))

    @property
    def baselines(self) -> tuple[Baseline, ...]:
        """The comparison arms, in order (`echofm.downstream.baselines`)."""
        return parse_baselines(self.compare)

    @model_validator(mode="before")
    @classmethod
    def _split_seed_follows_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:
            split = data.get("split")
            if split is None:
                data = {**data, "split": {"seed": data["seed"]}}
            elif isinstance(split, dict) and "seed" not in split:
                data = {**data, "split": {**split, "seed": data["seed"]}}
        return data

    @property
    def frozen(self) -> bool:
        return self.strategy in FROZEN_STRATEGIES

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return FROZEN_LR if self.frozen else ENCODER_LR

    def for_task(self, task: str) -> FinetuneConfig:
        return FinetuneConfig(task=task, **{name: getattr(self, name) for name in FinetuneOptions.model_fields})


class FinetuneConfig(FinetuneOptions):
    """One fine-tuning run: `FinetuneOptions` for one registered task."""

    task: str = Field(description="a registered task (echofm.downstream.tasks)")

    @field_validator("task")
    @classmethod
    def _registered(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"task {task!r} not in {TASKS.names()}")
        return task

    @model_validator(mode="after")
    def _head_fits_task(self) -> FinetuneConfig:
        if self.head == "segmentation" and TASKS[self.task].head != "segmentation":
            raise ValueError("the segmentation head is for segmentation tasks only")
        return self

    @property
    def head_kind(self) -> str:
        forced = TASKS[self.task].head
        if forced is not None:
            return forced
        if self.frozen:
            return self.strategy
        return self.head or "linear"

