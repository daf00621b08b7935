"""What a downstream task is: one `Task` per clinical question, registered in `echofm.downstream.tasks`.

A task says which label columns it reads and how they become a target, which *kind* of target
that is, how a model for it is judged and promoted, and under which name it is registered. The
kind (regression, binary, multiclass, segmentation) decides everything that is the same for all
tasks of that kind: the head's outputs, the loss, how outputs become predictions, the metrics and
the pyfunc's output columns (`echofm.downstream.objectives`). So a new question of a known kind
is one `Task(...)` in `tasks.py`; only a new kind of target needs code elsewhere.

Every value a model returns for a task is a column `<task>.<field>` (`column_name`): one group per
task, so the outputs of several tasks (a multi-task model's, or a prediction table's) sit side by
side without clashing, and `task_of_column` tells which task a column answers.

Torch- and pandas-free: the CLI reads the registry for its choices without loading either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from echofm.errors import DownstreamError


class TaskError(DownstreamError, ValueError):
    """An unknown task name, or a task definition that contradicts its kind."""


# Task names never hold it (names are identifiers), so the group of a column is unambiguous.
GROUP_SEPARATOR = "."


def column_name(task: str, field: str) -> str:
    """The column holding `field` of `task`'s answer: `ef.value`, `view.prob_A4C`."""
    return f"{task}{GROUP_SEPARATOR}{field}"


def task_of_column(column: str) -> str | None:
    """The task a `<task>.<field>` column answers; None for a column of no group."""
    task, separator, field = column.partition(GROUP_SEPARATOR)
    return task if separator and task and field else None


@dataclass(frozen=True)
class Kind:
    """A kind of target. metrics: what scoring a model of this kind reports (every task of the
    kind has them, its primary metric among them); head: the head every task of this kind uses
    whatever the strategy asks for (None: the strategy's head)."""

    name: str
    metrics: tuple[str, ...]
    head: str | None = None


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("regression", ("mae", "rmse", "r2")),
        Kind("binary", ("auroc", "accuracy")),
        Kind("multiclass", ("accuracy", "macro_f1", "macro_auroc")),
        Kind("segmentation", ("dice",), head="segmentation"),
    )
}


@dataclass(frozen=True)
class PromotionRule:
    """The challenger must beat the champion's `metric` by at least `min_improvement`
    (in the metric's own units: EF MAE in percentage points, accuracy/AUROC/Dice as fractions)."""

    metric: str
    higher_is_better: bool
    min_improvement: float


class LabelColumns(Protocol):
    """The label table joined to the manifest, as a target derivation sees it
    (`echofm.downstream.labels.LabelColumns`): a column by its label name (the label's own
    value wins over a manifest column of the same name), and whether one is there."""

    def __call__(self, name: str) -> Any: ...

    def has(self, name: str) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class Task:
    """One downstream task.

    name: the CLI choice, the checkpoint's task, the flows' parameter value (`ef`).
    title: what it predicts, for help texts and model cards.
    kind: a key of `KINDS`.
    label_columns: the label-table columns the target is derived from (the default derivation
        reads the first).
    target: derivation of the raw target per joined row from the label columns (a pandas
        Series; a DataFrame with one column per output for multi-output regression); rows where
        it is missing (NaN, None, "") are not labelled. Default: the first label column, or all
        of them for a multi-output regression.
    outputs: regression: the name of each predicted value, also its pyfunc column (default:
        the task name).
    classes: multiclass: the label values in output order; empty: the sorted values found in
        the training labels (kept in the checkpoint, so a model scores later data the same way).
        segmentation: the structure of each mask label value from 1 (one class: a binary mask);
        empty: the names the mask files give (`classes`), else one structure.
    threshold: binary and segmentation: the probability at which the pyfunc says yes (a
        caller can pass another as the `threshold` parameter).
    promotion: how a challenger is judged against the champion; its metric is the task's
        primary metric.
    study_views: the clip views a study-level value of this task is aggregated over (EF over
        the apical views); empty: every clip of the study; None: the task has no study-level
        value of its own (the view task: a study's views are its summary).
    model_name: the registered model (default `echofm-<name>`, underscores as dashes).
    """

    name: str
    title: str
    kind: str
    label_columns: tuple[str, ...]
    promotion: PromotionRule
    target: Callable[[LabelColumns], Any] | None = None
    outputs: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    threshold: float = 0.5
    study_views: tuple[str, ...] | None = ()
    model_name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise TaskError(f"task name {self.name!r} must be an identifier (it prefixes the task's output columns)")
        if self.kind not in KINDS:
            raise TaskError(f"task {self.name!r}: kind {self.kind!r} not in {tuple(KINDS)}")
        if not self.label_columns:
            raise TaskError(f"task {self.name!r} reads no label column")
        if self.promotion.metric not in KINDS[self.kind].metrics:
            raise TaskError(f"task {self.name!r}: {self.kind} models report {KINDS[self.kind].metrics}, "
                            f"not {self.promotion.metric!r}")
        if self.outputs and self.kind != "regression":
            raise TaskError(f"task {self.name!r}: only regression tasks name outputs")
        if self.classes and self.kind == "multiclass" and len(self.classes) < 2:
            raise TaskError(f"task {self.name!r}: fixed classes need a multiclass task and two or more")
        if self.classes and self.kind not in ("multiclass", "segmentation"):
            raise TaskError(f"task {self.name!r}: only multiclass and segmentation tasks name classes")
        if not 0.0 < self.threshold < 1.0:
            raise TaskError(f"task {self.name!r}: threshold must lie in (0, 1)")
        if self.kind == "regression" and not self.outputs:
            object.__setattr__(self, "outputs", (self.name,))
        if len(self.outputs) > 1 and self.target is None and len(self.label_columns) != len(self.outputs):
            raise TaskError(f"task {self.name!r}: {len(self.outputs)} outputs need as many label columns or a target")
        if not self.model_name:
            object.__setattr__(self, "model_name", f"echofm-{self.name.replace('_', '-')}")

    @property
    def primary_metric(self) -> str:
        return self.promotion.metric

    @property
    def higher_is_better(self) -> bool:
        return self.promotion.higher_is_better

    @property
    def head(self) -> str | None:
        """The head this task always uses (segmentation's decoder), None for the strategy's."""
        return KINDS[self.kind].head

    def derive(self, columns: LabelColumns) -> Any:
        """The raw target per joined row (see `target`)."""
        if self.target is not None:
            return self.target(columns)
        if self.kind == "regression" and len(self.outputs) > 1:
            return columns.frame(self.label_columns)  # type: ignore[attr-defined]
        return columns(self.label_columns[0])


class TaskRegistry:
    """Tasks by name, in registration order (the order CLI choices and reports list them)."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def register(self, task: Task) -> Task:
        if task.name in self._tasks:
            raise TaskError(f"task {task.name!r} is registered twice")
        if any(other.model_name == task.model_name for other in self._tasks.values()):
            raise TaskError(f"registered model name {task.model_name!r} is taken")
        self._tasks[task.name] = task
        return task

    def remove(self, name: str) -> Task:
        """Take a task out again (a plugin's or a test's own)."""
        return self._tasks.pop(name)

    def __getitem__(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise TaskError(f"unknown task {name!r}; expected one of {self.names()}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def by_model_name(self, model_name: str) -> Task:
        """The task whose registered model is `model_name` (`echofm-reduced-ef` -> reduced_ef)."""
        for task in self._tasks.values():
            if task.model_name == model_name:
                return task
        raise TaskError(f"{model_name!r} is the registered model of no task")

    def promotion_rules(self) -> dict[str, PromotionRule]:
        return {task.name: task.promotion for task in self._tasks.values()}
