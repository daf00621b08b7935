"""How head outputs become losses, predictions, metrics and pyfunc columns, per kind of target.

One `Objective` per kind of `echofm.downstream.task.KINDS`; every task of a kind shares it:

- regression: one output per predicted value, standardised by the training split's mean/std
  (MSE loss); predictions in the target's unit (EF %).
- binary: one logit (binary cross-entropy); prediction = probability of the positive class.
- multiclass: one logit per class (cross-entropy); prediction = class probabilities.
- segmentation: one mask logit per pixel `[B, T, H, W]` (BCE + soft Dice on labelled frames);
  prediction = foreground probability. With several structures (`TaskSpec.classes`, e.g.
  CAMUS's LV endocardium, myocardium and atrium) one logit per class and background
  `[B, 1 + K, T, H, W]` (cross-entropy + soft Dice per structure); prediction = class
  probabilities, decoded to a label map (0 background, k the k-th structure).

The pyfunc's answer for a task is one column group `<task>.<field>` (`column_name`), fields by kind:
regression `value` (or one field per named output), binary `probability` and `positive`,
multiclass `class`, `confidence` and `prob_<class>`, segmentation `masks` and `frame_indices`.

`TaskSpec` is a task as one model was fitted to it (its classes, its target statistics); it
travels in the fine-tuned checkpoint and answers for the model through its kind's objective.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from echofm.downstream import metrics
from echofm.downstream.task import Task, TaskError, column_name
from echofm.downstream.tasks import TASKS
from echofm.preprocess.clips import unpad_masks

# A pyfunc output column: (name, MLflow column type) for table outputs; tensors name their dtype
# and shape (-1 for any size): segmentation returns masks, not a table.
Column = tuple[str, str]
TensorColumn = tuple[str, np.dtype, tuple[int, ...]]


class TaskSpecError(TaskError):
    """A task spec that does not describe a registered task consistently."""


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """A registered task as one model was fitted to it.

    classes: multiclass class names in output order; segmentation: the structure of each mask
    label value from 1 (empty or one: a binary mask). target_mean / target_std: regression
    standardisation, one value per output (taken from the training split).
    """

    task: str
    classes: tuple[str, ...] = ()
    target_mean: tuple[float, ...] = (0.0,)
    target_std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise TaskSpecError(f"unknown task {self.task!r}; expected one of {TASKS.names()}")
        # Checkpoints written before multi-output regression hold one float each.
        for name in ("target_mean", "target_std"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(float(v) for v in np.atleast_1d(value)))
        if self.definition.kind == "multiclass" and len(self.classes) < 2:
            raise TaskSpecError(f"{self.task} classification needs at least two classes")
        if min(self.target_std) <= 0:
            raise TaskSpecError("target_std must be positive")

    @property
    def definition(self) -> Task:
        return TASKS[self.task]

    @property
    def objective(self) -> Objective:
        return OBJECTIVES[self.definition.kind]

    @property
    def out_dim(self) -> int:
        return self.objective.out_dim(self)

    @property
    def primary_metric(self) -> tuple[str, bool]:
        """The metric the task is judged by, and whether higher is better."""
        return self.definition.primary_metric, self.definition.higher_is_better

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TaskSpec:
        known = {f.name for f in fields(cls)}  # older checkpoints carry fields since dropped
        data = {k: v for k, v in data.items() if k in known}
        data["classes"] = tuple(data.get("classes", ()))
        return cls(**data)

    def loss(self, output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss of raw head outputs against targets in task units."""
        return self.objective.loss(self, output, target, valid)

    def decode(self, output: torch.Tensor) -> np.ndarray:
        """Raw outputs to predictions (see the module doc)."""
        return self.objective.decode(self, output.detach().float().cpu())

    def score(self, predictions: np.ndarray, targets: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
        """Metrics of decoded predictions against targets."""
        return self.objective.score(self, predictions, targets, valid)


class Objective:
    """What every task of one kind shares (see the module doc)."""

    kind: str

    def out_dim(self, spec: TaskSpec) -> int:
        return 1

    def fit(self, task: Task, train_targets: np.ndarray) -> dict[str, Any]:
        """`TaskSpec` fields learnt from the training split's targets (none by default)."""
        return {}

    def targets(self, values: pd.Series | pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
        """Derived targets of the labelled rows as the array the loss takes."""
        return values.astype(float).to_numpy(np.float32)

    def loss(self, spec: TaskSpec, output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, spec: TaskSpec, output: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def score(self, spec: TaskSpec, predictions: np.ndarray, targets: np.ndarray, valid: np.ndarray | None) -> dict[str, float]:
        raise NotImplementedError

    def outputs(self, spec: TaskSpec, predictions: np.ndarray, clips: list[np.ndarray], frame_indices: np.ndarray,
                threshold: float) -> Any:
        """The pyfunc's answer for decoded predictions of raw `clips`, whose frames `frame_indices`
        `[N, T']` the model saw (`output_columns` names what it holds)."""
        raise NotImplementedError

    def output_columns(self, spec: TaskSpec) -> list[Column] | list[TensorColumn]:
        raise NotImplementedError


class Regression(Objective):
    """Targets `[N, K]` (K = the task's outputs); predictions `[B, K]` in target units."""

    kind = "regression"

    def out_dim(self, spec: TaskSpec) -> int:
        return len(spec.definition.outputs)

    @staticmethod
    def fields(task: Task) -> tuple[str, ...]:
        """One field per output; a task's single output named after the task is its `value`."""
        return ("value",) if task.outputs == (task.name,) else task.outputs

    def fit(self, task: Task, train_targets: np.ndarray) -> dict[str, Any]:
        values = np.asarray(train_targets, dtype=np.float64).reshape(len(train_targets), -1)
        std = values.std(axis=0) if len(values) > 1 else np.zeros(values.shape[1])
        return {"target_mean": tuple(values.mean(axis=0).tolist()),
                "target_std": tuple(float(s) if s > 1e-6 else 1.0 for s in std)}

    def targets(self, values: pd.Series | pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
        return values.astype(float).to_numpy(np.float32).reshape(len(values), -1)

    def _stats(self, spec: TaskSpec, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(spec.target_mean, dtype=like.dtype, device=like.device),
                torch.tensor(spec.target_std, dtype=like.dtype, device=like.device))

    def loss(self, spec: TaskSpec, output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        mean, std = self._stats(spec, output)
        return F.mse_loss(output, (target.float() - mean) / std)

    def decode(self, spec: TaskSpec, output: torch.Tensor) -> np.ndarray:
        mean, std = self._stats(spec, output)
        return (output * std + mean).numpy()

    def score(self, spec: TaskSpec, predictions: np.ndarray, targets: np.ndarray, valid: np.ndarray | None) -> dict[str, float]:
        names = spec.definition.outputs
        per_output = [metrics.regression_metrics(predictions[:, k], targets[:, k]) for k in range(len(names))]
        if len(names) == 1:
            return per_output[0]
        # Several measurements: the mean over them, and each one by name.
        scores = {key: float(np.mean([m[key] for m in per_output])) for key in per_output[0]}
        for name, values in zip(names, per_output):
            scores.update({f"{name}_{key}": value for key, value in values.items()})
        return scores

    def outputs(self, spec: TaskSpec, predictions: np.ndarray, clips: list[np.ndarray], frame_indices: np.ndarray,
                threshold: float) -> Any:
        return pd.DataFrame({column_name(spec.task, name): predictions[:, k].astype(np.float64)
                             for k, name in enumerate(self.fields(spec.definition))})

    def output_columns(self, spec: TaskSpec) -> list[Column] | list[TensorColumn]:
        return [(column_name(spec.task, name), "double") for name in self.fields(spec.definition)]


class Binary(Objective):
    """Targets 0/1 `[N]`; prediction = probability of the positive class `[B]`."""

    kind = "binary"

    def loss(self, spec: TaskSpec, output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output[:, 0], target.float())

    def decode(self, spec: TaskSpec, output: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(output[:, 0]).numpy()

    def score(self, spec: TaskSpec, predictions: np.ndarray, targets: np.ndarray, valid: np.ndarray | None) -> dict[str, float]:
        return metrics.detection_metrics(predictions, targets.astype(int))

    def outputs(self, spec: TaskSpec, predictions: np.ndarray, clips: list[np.ndarray], frame_indices: np.ndarray,
                threshold: float) -> Any:
        return pd.DataFrame({column_name(spec.task, "probability"): predictions.astype(np.float64),
                             column_name(spec.task, "positive"): predictions >= threshold})

    def output_columns(self, spec: TaskSpec) -> list[Column] | list[TensorColumn]:
        return [(column_name(spec.task, "probability"), "double"), (column_name(spec.task, "positive"), "boolean")]


class Multiclass(Objective):
    """Targets class indices `[N]` into `spec.classes`; prediction = class probabilities `[B, K]`."""

    kind = "multiclass"

    def out_dim(self, spec: TaskSpec) -> int:
        return len(spec.classes)

    def targets(self, values: pd.Series | pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(classes)}
        return values.astype(str).map(lookup).to_numpy(np.int64)

    def loss(self, spec: TaskSpec, output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(output, target.long())

    def decode(self, spec: TaskSpec, output: torch.Tensor) -> np.ndarray:
        return torch.softmax(output, dim=1).numpy()

    def score(self, spec: TaskSpec, predictions: np.ndarray, targets: np.ndarray, valid: np.ndarray | None) -> dict[str, float]:
        return metrics.classification_metrics(predictions.argmax(axis=1), targets.astype(int), predictions)

    def outputs(self, spec: TaskSpec, predictions: np.ndarray, clips: list[np.ndarray], frame_indices: np.ndarray,
                threshold: float) -> Any:
        best = predictions.argmax(axis=1)
        frame = pd.DataFrame({column_name(spec.task, "class"): [spec.classes[i] for i in best],
                              column_name(spec.task, "confidence"): predictions.max(axis=1).astype(np.float64)})
        for i, name in enumerate(spec.classes):
            frame[column_name(spec.task, f"prob_{name}")] = predictions[:, i].astype(np.float64)
        return frame

    def output_columns(self, spec: TaskSpec) -> list[Column] | list[TensorColumn]:
        return ([(column_name(spec.task, "class"), "string"), (column_name(spec.task, "confidence"), "double")]
                + [(column_name(spec.task, f"prob_{name}"), "double") for name in spec.classes])


class Segmentation(Objective):
    """Targets uint8 masks `[N, T, s, s]` with labelled-frame flags `[N, T]` (built from the
    label's mask files by `echofm.downstream.dataset`); prediction = mask probabilities."""

    kind = "segmentation"

    @staticmethod
    def structures(spec: TaskSpec) -> int:
        """Structures segmented (1: one binary mask)."""
        return max(1, len(spec.classes))

    def out_dim(self, spec: TaskSpec) -> int:
        k = self.structures(spec)
        return 1 if k == 1 else k + 1

    def targets(self, values: pd.Series | pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
        raise TaskError("segmentation targets are masks read from their files, not label values")

    def loss(self, spec: TaskSpec, output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        if self.structures(spec) == 1:
            return segmentation_loss(output, target.float(), valid)
        return structures_loss(output, target.long(), valid)

    def decode(self, spec: TaskSpec, output: torch.Tensor) -> np.ndarray:
        if self.structures(spec) == 1:
            return torch.sigmoid(output).numpy()
        return torch.softmax(output, dim=1).numpy()

    def label_map(self, spec: TaskSpec, predictions: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Decoded predictions as masks: uint8 `[N, T, H, W]`, 0/1 or structure labels."""
        if self.structures(spec) == 1:
            return (predictions >= threshold).astype(np.uint8)
        return predictions.argmax(axis=1).astype(np.uint8)

    def score(self, spec: TaskSpec, predictions: np.ndarray, targets: np.ndarray, valid: np.ndarray | None) -> dict[str, float]:
        classes = spec.classes if self.structures(spec) > 1 else ()
        return metrics.segmentation_metrics(self.label_map(spec, predictions), targets, valid, classes=classes)

    def outputs(self, spec: TaskSpec, predictions: np.ndarray, clips: list[np.ndarray], frame_indices: np.ndarray,
                threshold: float) -> Any:
        """dict `<task>.masks`: uint8 `[N, T', H, W]` at each input's size (one array per clip when
        the sizes differ; 0/1, or structure labels 1..K for a task of several structures),
        `<task>.frame_indices`: int64 `[N, T']`, the input frames the masks are for."""
        labels = self.label_map(spec, predictions, threshold)
        masks = [_unpad_labels(label, clip.shape[1], clip.shape[2]) for label, clip in zip(labels, clips)]
        frame_indices = frame_indices.astype(np.int64)
        if len({m.shape for m in masks}) == 1:
            stacked = np.stack(masks)
        else:
            stacked = np.empty(len(masks), dtype=object)
            stacked[:] = masks
        return {column_name(spec.task, "masks"): stacked, column_name(spec.task, "frame_indices"): frame_indices}

    def output_columns(self, spec: TaskSpec) -> list[Column] | list[TensorColumn]:
        return [(column_name(spec.task, "masks"), np.dtype(np.uint8), (-1, -1, -1, -1)),
                (column_name(spec.task, "frame_indices"), np.dtype(np.int64), (-1, -1))]


def _unpad_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """A label map `[T, s, s]` back at the input's size `[T, height, width]`, each label alone."""
    out = np.zeros((labels.shape[0], height, width), dtype=np.uint8)
    for value in range(1, max(int(labels.max(initial=0)), 1) + 1):
        out[unpad_masks((labels == value).astype(np.float32), height, width) == 1] = value
    return out


def structures_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy + soft Dice per structure over labelled frames.
    logits `[B, 1 + K, T, H, W]`; target long `[B, T, H, W]` in 0..K; valid bool `[B, T]`."""
    weight = torch.ones(target.shape, device=logits.device) if valid is None else \
        valid.float()[..., None, None].expand(target.shape)
    denom = weight.sum().clamp_min(1.0)
    ce = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / denom
    prob = torch.softmax(logits, dim=1)[:, 1:] * weight[:, None]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float() * weight[:, None]
    inter = (prob * onehot).sum(dim=(2, 3, 4))
    total = prob.sum(dim=(2, 3, 4)) + onehot.sum(dim=(2, 3, 4))
    soft_dice = (2 * inter + 1.0) / (total + 1.0)
    return ce + (1.0 - soft_dice).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """BCE + soft Dice over labelled frames. logits, target `[B, T, H, W]`; valid bool `[B, T]`."""
    weight = torch.ones_like(target) if valid is None else valid.float()[..., None, None].expand_as(target)
    denom = weight.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / denom
    prob = torch.sigmoid(logits) * weight
    inter = (prob * target * weight).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + (target * weight).sum(dim=(1, 2, 3))
    soft_dice = (2 * inter + 1.0) / (total + 1.0)
    return bce + (1.0 - soft_dice).mean()


OBJECTIVES: dict[str, Objective] = {objective.kind: objective for objective in (Regression(), Binary(), Multiclass(), Segmentation())}

# A table column's values as an array, when a model's answer mixes tables and masks.
TABLE_DTYPES: dict[str, np.dtype] = {"double": np.dtype(np.float64), "boolean": np.dtype(np.bool_),
                                     "string": np.dtype(object)}


def joined_columns(specs: tuple[TaskSpec, ...]) -> list[Column] | list[TensorColumn]:
    """The output columns of a model answering `specs`: each task's group side by side.

    All tables: the columns of every group. With a tensor group (segmentation's masks), every
    column is a tensor, a table column `(-1,)` of its values. Raises TaskSpecError when two
    groups share a column name (one task listed twice).
    """
    groups = [spec.objective.output_columns(spec) for spec in specs]
    names = [column[0] for group in groups for column in group]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise TaskSpecError(f"tasks {', '.join(s.task for s in specs)} share output columns {clashes}")
    columns = [column for group in groups for column in group]
    if all(len(column) == 2 for column in columns):
        return columns  # type: ignore[return-value]
    return [column if len(column) == 3 else (column[0], TABLE_DTYPES[column[1]], (-1,)) for column in columns]  # type: ignore[misc]


def join_outputs(groups: list[Any]) -> Any:
    """One answer from each task's `Objective.outputs` (in `joined_columns` order): one group
    as it is; tables side by side as one DataFrame; with a dict group (masks), a dict of arrays."""
    if len(groups) == 1:
        return groups[0]
    if all(isinstance(group, pd.DataFrame) for group in groups):
        return pd.concat(groups, axis=1)
    joined: dict[str, np.ndarray] = {}
    for group in groups:
        items = ({name: group[name].to_numpy() for name in group.columns} if isinstance(group, pd.DataFrame)
                 else group)
        joined.update(items)
    return joined
