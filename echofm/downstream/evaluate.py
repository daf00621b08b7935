"""Score a fine-tuned model on one split of a labelled archive.

    metrics = evaluate("models:/echofm-ef@champion", shards="OUT/shards", labels="labels.csv")

The model is a fine-tuned checkpoint (`model.pt`), a fine-tuning output directory, or a
registered `models:/` / `runs:/` URI (its `checkpoint` artifact is downloaded). The split is the
one the model was trained with (its seed and fractions travel in the checkpoint), so "test"
means the same patients it never saw, unless `split_config` says otherwise.

A multi-task model is scored one task at a time by `evaluate(..., task=TASK)` (its head for that
task, on the clips a single-task model of the task is scored on), or on all its tasks with one
encoder pass by `evaluate_tasks`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from echofm.data import storage
from echofm.data.loader import manifest_path_for
from echofm.downstream.dataset import build_task_data
from echofm.downstream.model import DownstreamModel
from echofm.downstream.finetune import CHECKPOINT_NAME, TaskBatches, encode_clips, evaluate_split
from echofm.downstream.multitask.data import build_joint_data
from echofm.downstream.multitask.model import MultiTaskModel, load_fine_tuned
from echofm.downstream.multitask.train import JointBatches, score_joint
from echofm.downstream.splits import SPLITS, SplitConfig
from echofm.errors import DownstreamError
from echofm.store import downloaded, is_registry_uri

log = logging.getLogger(__name__)


class EvaluationError(DownstreamError, ValueError):
    """The model or the split cannot be evaluated (unknown split, task mismatch, empty split)."""


def _checkpoint_in(directory: Path) -> Path:
    found = sorted(directory.rglob(CHECKPOINT_NAME))
    if not found:
        raise EvaluationError(f"{directory}: no {CHECKPOINT_NAME} inside")
    return found[0]


def load_model(model: str | Path, *, tracking_uri: str | None = None) -> DownstreamModel | MultiTaskModel:
    """A fine-tuned model from a checkpoint, an output directory or a models:/ / runs:/ URI."""
    return _load(model, tracking_uri)[0]


FineTunedModel = DownstreamModel | MultiTaskModel


def _load(model: str | Path, tracking_uri: str | None) -> tuple[FineTunedModel, dict[str, Any]]:
    text = str(model)
    if is_registry_uri(text):
        # The checkpoint is read into memory, so the downloaded copy can go right away.
        with downloaded(text, tracking_uri) as local:
            loaded = load_fine_tuned(_checkpoint_in(local))
        return loaded.model, loaded.meta
    path = Path(text)
    if path.is_dir():
        path = _checkpoint_in(path)
    loaded = load_fine_tuned(path)
    return loaded.model, loaded.meta


def _given(model: str | Path | FineTunedModel, tracking_uri: str | None) -> tuple[FineTunedModel, dict[str, Any]]:
    if isinstance(model, (DownstreamModel, MultiTaskModel)):
        return model, {}
    return _load(model, tracking_uri)


def _split_config(meta: dict[str, Any]) -> SplitConfig:
    saved = (meta.get("config") or {}).get("split")
    if not saved:
        return SplitConfig()
    names = set(SplitConfig.model_fields)
    return SplitConfig(**{k: v for k, v in saved.items() if k in names})


def evaluate(
    model: str | Path | FineTunedModel,
    *,
    shards: str | Path,
    labels: str | Path | pd.DataFrame,
    manifest: str | Path | pd.DataFrame | None = None,
    task: str | None = None,
    split: str = "test",
    split_config: SplitConfig | None = None,
    mask_root: str | Path | None = None,
    tracking_uri: str | None = None,
    batch_size: int = 8,
    secret: bytes | None = None,
) -> dict[str, float]:
    """Metrics of `model` on `split` (see module doc); adds `n_clips` to the dict.

    task: when given, must match the model's task (a guard against scoring an EF model on view
    labels); a multi-task model needs it, and is scored by its head for that task. secret:
    needed when the labels name files by path (see `join_labels`). Raises
    EvaluationError for an unknown or empty split.
    """
    if split not in SPLITS:
        raise EvaluationError(f"split {split!r} not in {SPLITS}")
    downstream, meta = _given(model, tracking_uri)
    if isinstance(downstream, MultiTaskModel):
        if task not in downstream.specs:
            raise EvaluationError(f"the model predicts {', '.join(downstream.tasks)}: name one of them as the task")
        downstream = downstream.head_model(task)
    spec = downstream.task
    if task is not None and task != spec.task:
        raise EvaluationError(f"the model predicts {spec.task!r}, not {task!r}")
    shards = storage.location(shards)
    manifest = manifest if manifest is not None else manifest_path_for(shards)
    data = build_task_data(
        task=spec.task, manifest=manifest, labels=labels, shards_dir=shards, spec=downstream.inputs,
        split_config=split_config or _split_config(meta), classes=spec.classes or None, mask_root=mask_root,
        secret=secret,
    )
    idx = data.indices(split)
    if len(idx) == 0:
        raise EvaluationError(f"the {split} split holds no labelled clip")
    downstream = downstream.cpu().eval()
    subset = data.subset(idx)
    device = torch.device("cpu")
    # Encoder outputs once, then the head: the same arithmetic as the model's forward.
    cache = encode_clips(downstream, subset.clips, batch_size, device)
    everything = np.arange(len(idx))
    _, metrics = evaluate_split(downstream.head, TaskBatches(subset, downstream.inputs, cache, device), everything,
                                spec, batch_size)
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["n_clips"] = float(len(idx))
    log.info("%s on %s (%d clips): %s", spec.task, split, len(idx), metrics)
    return metrics


def evaluate_tasks(
    model: str | Path | FineTunedModel,
    *,
    shards: str | Path,
    labels: str | Path | pd.DataFrame,
    manifest: str | Path | pd.DataFrame | None = None,
    split: str = "test",
    split_config: SplitConfig | None = None,
    mask_root: str | Path | None = None,
    tracking_uri: str | None = None,
    batch_size: int = 8,
    secret: bytes | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of every task of `model` on `split`, by task (each with `n_clips`): `evaluate`
    for a single-task model; for a multi-task one each clip is read and encoded once, and every
    task scored on its own labelled clips of the split (the numbers `evaluate(task=...)` gives)."""
    if split not in SPLITS:
        raise EvaluationError(f"split {split!r} not in {SPLITS}")
    downstream, meta = _given(model, tracking_uri)
    if isinstance(downstream, DownstreamModel):
        return {downstream.task.task: evaluate(downstream, shards=shards, labels=labels, manifest=manifest, split=split,
                                               split_config=split_config or _split_config(meta), mask_root=mask_root,
                                               batch_size=batch_size, secret=secret)}
    shards = storage.location(shards)
    data = build_joint_data(
        tasks=downstream.tasks, manifest=manifest if manifest is not None else manifest_path_for(shards),
        labels=labels, shards_dir=shards, spec=downstream.inputs, split_config=split_config or _split_config(meta),
        classes={task: spec.classes for task, spec in downstream.specs.items() if spec.classes}, mask_root=mask_root,
        secret=secret,
    )
    lookup = data.lookup(split)
    empty = [task for task, table in lookup.items() if not (table >= 0).any()]
    if empty:
        raise EvaluationError(f"the {split} split holds no clip labelled for {', '.join(empty)}")
    downstream = downstream.cpu().eval()
    scores = score_joint(downstream, JointBatches(data, downstream.inputs, None, torch.device("cpu")), lookup, batch_size)
    out = {}
    for task, (_, metrics) in scores.items():
        out[task] = {**{k: float(v) for k, v in metrics.items()}, "n_clips": float((lookup[task] >= 0).sum())}
    log.info("%s on %s: %s", ",".join(downstream.tasks), split, out)
    return out
