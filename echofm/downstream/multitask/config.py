"""The options of a multi-task fine-tuning run, defined once.

`JointOptions` are what only a joint run has: how the task losses are balanced and whether
single-task models are fitted beside it for the comparison. `MultitaskConfig` is a run:
`FinetuneOptions` (strategy, epochs, learning rate, split, ... as for one task) + `JointOptions`
+ the tasks. Torch-free, so the command line reads it.

A run's tasks are written `ef,view,reduced_ef` on the command line (`parse_tasks`); the model
they make is registered as `echofm-multitask-<tasks>` (`multitask_model_name`), the tasks in
registry order, so `view,ef` and `ef,view` are versions of one model.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from echofm.downstream.config import FinetuneConfigError, FinetuneOptions
from echofm.downstream.task import TaskError
from echofm.downstream.tasks import TASKS
from echofm.options import Options

# How the per-task losses become one: see `echofm.downstream.multitask.balancing`.
LossBalance = Literal["initial", "uncertainty", "fixed"]
# Chosen by measurement (docs/benchmarks.md, "Multi-task loss balancing"): with full fine-tuning
# on a 200-clip partially labelled archive, `uncertainty` gave the lowest EF error and the best
# Dice on every seed; `initial` the highest EF error.
DEFAULT_LOSS_BALANCE: LossBalance = "uncertainty"
MULTITASK_PREFIX = "echofm-multitask-"
TASK_SEPARATOR = ","


def parse_tasks(text: str) -> tuple[str, ...]:
    """`"ef,view"` -> `("ef", "view")`; TaskError for an unknown, repeated or missing name."""
    names = tuple(part.strip() for part in text.split(TASK_SEPARATOR))
    if not all(names):
        raise TaskError(f"{text!r}: empty task name; write tasks as ef,view,reduced_ef")
    for name in names:
        TASKS[name]  # raises TaskError naming the registered tasks
    if len(set(names)) != len(names):
        raise TaskError(f"{text!r} names a task twice")
    return names


def canonical_tasks(tasks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The tasks in registry order (the order of a model's name and of its report)."""
    return tuple(name for name in TASKS.names() if name in set(tasks))


def multitask_model_name(tasks: tuple[str, ...] | list[str]) -> str:
    """`echofm-multitask-ef-view-reduced-ef`: one registered model per set of tasks."""
    return MULTITASK_PREFIX + "-".join(TASKS[name].model_name.removeprefix("echofm-") for name in canonical_tasks(tasks))


def is_multitask_model(name: str) -> bool:
    return name.startswith(MULTITASK_PREFIX)


class JointOptions(Options):
    """What a joint run adds to the per-task options.

    loss_balance: `fixed` sums `w_t * L_t`; `initial` sums `w_t * L_t / L_t(0)`, each task's
    loss divided by its value on the training clips before training; `uncertainty` learns one
    log-variance `s_t` per task and sums `w_t * (exp(-s_t) * L_t + s_t)`. loss_weights: `w_t`,
    one per task in the run's task order (default 1 each).
    """

    error: ClassVar[type[Exception]] = FinetuneConfigError

    loss_balance: LossBalance = Field(default=DEFAULT_LOSS_BALANCE,
                                      description="fixed weights, each loss over its initial value, or learned uncertainty weights")
    loss_weights: tuple[float, ...] = Field(default=(), description="one loss weight per task, in task order (default 1 each)")
    compare_single_task: bool = Field(default=True, description="also fine-tune one single-task model per task (the comparison)")

    @field_validator("loss_weights")
    @classmethod
    def _non_negative(cls, weights: tuple[float, ...]) -> tuple[float, ...]:
        if any(w < 0 for w in weights) or (weights and not any(w > 0 for w in weights)):
            raise ValueError("loss weights must be >= 0, at least one of them > 0")
        return weights


class MultitaskConfig(FinetuneOptions, JointOptions):
    """One joint run: the per-task options and the joint ones, for two or more registered tasks."""

    tasks: tuple[str, ...] = Field(min_length=2, description="registered tasks, trained together on one encoder")

    @field_validator("tasks")
    @classmethod
    def _registered_once(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        return parse_tasks(TASK_SEPARATOR.join(tasks))

    @model_validator(mode="after")
    def _fits_tasks(self) -> MultitaskConfig:
        if self.loss_weights and len(self.loss_weights) != len(self.tasks):
            raise ValueError(f"{len(self.loss_weights)} loss weights for {len(self.tasks)} tasks")
        for name in self.tasks:
            self.for_task(name)  # the head and strategy must suit every task (`for_task`: its single-task run)
        return self

    @classmethod
    def build(cls, tasks: tuple[str, ...] | list[str], options: FinetuneOptions, joint: JointOptions) -> MultitaskConfig:
        """A run from its parts (the flow's and the command's forms)."""
        return cls(tasks=tuple(tasks), **{name: getattr(options, name) for name in FinetuneOptions.model_fields},
                   **{name: getattr(joint, name) for name in JointOptions.model_fields})

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.loss_weights or (1.0,) * len(self.tasks)))

    @property
    def model_name(self) -> str:
        return multitask_model_name(self.tasks)
