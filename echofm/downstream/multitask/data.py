"""Clips labelled for any of several tasks, each clip read once, with every task's labels.

Labels are partial: EF is known for some clips, the view for others, masks for a few frames of
a few clips. `build_joint_data` builds each task's labelled rows as a single-task run does
(`echofm.downstream.dataset.task_rows`: same rows, same patient split), reads the union of their
clips in one pass over the shards, and keeps, per task, which clips it labels and their targets.

The split of a clip is its task's: a task is scored on exactly the clips its single-task model
is scored on. A patient's split depends only on its pseudonym and the seed, so it agrees across
tasks except where `min_patients_per_split` moved a patient for one task's small cohort; such a
patient is held out of training for every task, so no clip one head is scored on trains another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echofm.downstream.dataset import (
    TaskData,
    label_frame_of,
    mask_root_for,
    read_manifest_frame,
    read_shard_clips,
    task_rows,
    task_targets,
)
from echofm.downstream.splits import SPLITS, SplitConfig
from echofm.preprocess.clips import InputSpec


@dataclass
class TaskLabels:
    """One task's labelled clips inside a `JointData`, aligned by row.

    rows: int64 `[n]`, each row's clip in `JointData.clips`; targets, valid, classes: as in
    `TaskData`; split: "train" | "val" | "test" per row.
    """

    rows: np.ndarray
    targets: np.ndarray
    valid: np.ndarray | None
    split: np.ndarray
    classes: tuple[str, ...] = ()


@dataclass
class JointData:
    """The clips labelled for at least one task: uint8 `[N, T, s, s, C]` with their ids and
    patients, and each task's `TaskLabels`, in the run's task order."""

    clip_ids: list[str]
    patients: list[str]
    clips: np.ndarray
    labels: dict[str, TaskLabels]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.labels)

    def held_out_patients(self) -> set[str]:
        """Patients in the val or test split of any task."""
        return {self.patients[r] for labels in self.labels.values()
                for r, s in zip(labels.rows, labels.split) if s != "train"}

    def lookup(self, split: str) -> dict[str, np.ndarray]:
        """Per task, int64 `[N]`: the row of each clip in the task's labels when the clip is in
        `split` for that task, else -1. Training excludes held-out patients (module doc)."""
        excluded = self.held_out_patients() if split == "train" else set()
        out = {}
        for task, labels in self.labels.items():
            table = np.full(len(self.clip_ids), -1, dtype=np.int64)
            for position, (row, s) in enumerate(zip(labels.rows, labels.split)):
                if s == split and self.patients[row] not in excluded:
                    table[row] = position
            out[task] = table
        return out

    def task_data(self, task: str) -> TaskData:
        """The task's rows as a single-task `TaskData` (its clips copied out), what its
        single-task model is fitted and scored on."""
        labels = self.labels[task]
        return TaskData(clip_ids=[self.clip_ids[r] for r in labels.rows], patients=[self.patients[r] for r in labels.rows],
                        split=labels.split, clips=self.clips[labels.rows], targets=labels.targets, valid=labels.valid,
                        classes=labels.classes)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per task, clips and distinct patients per split (as `TaskData.counts`)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for task, labels in self.labels.items():
            out[task] = {}
            for name in SPLITS:
                rows = labels.rows[labels.split == name]
                out[task][name] = {"clips": int(len(rows)), "patients": len({self.patients[r] for r in rows})}
        return out


def build_joint_data(
    *,
    tasks: tuple[str, ...],
    manifest: str | Path | pd.DataFrame,
    labels: str | Path | pd.DataFrame,
    shards_dir: str | Path,
    spec: InputSpec,
    split_config: SplitConfig,
    classes: dict[str, tuple[str, ...]] | None = None,
    mask_root: str | Path | None = None,
    secret: bytes | None = None,
) -> JointData:
    """Every task's labelled rows and the union of their clips, read once (module doc).

    classes: per multiclass task, the class names a model was trained with (see
    `build_task_data`); secret: needed when the labels name files by path (`join_labels`).
    Raises LabelError when a task has no usable labelled clip.
    """
    manifest_frame, label_frame = read_manifest_frame(manifest), label_frame_of(labels)
    rows = {task: task_rows(task, manifest=manifest_frame, labels=label_frame, shards_dir=shards_dir,
                            split_config=split_config, classes=(classes or {}).get(task), secret=secret)
            for task in tasks}
    found = read_shard_clips({f for r in rows.values() for f in r.shard_files}, {k for r in rows.values() for k in r.keys},
                             spec)
    rows = {task: r.found_in(found) for task, r in rows.items()}
    # The union in first-seen order, so a run's clip order does not depend on set iteration.
    position: dict[str, int] = {}
    keys: list[str] = []
    patients: list[str] = []
    clip_ids: list[str] = []
    for r in rows.values():
        for key, clip_id, patient in zip(r.keys, r.clip_ids, r.patients):
            if clip_id not in position:
                position[clip_id] = len(clip_ids)
                keys.append(key)
                clip_ids.append(clip_id)
                patients.append(patient)
    root = mask_root_for(labels, mask_root)
    task_labels = {}
    for task, r in rows.items():
        targets, valid, classes = task_targets(r, spec=spec, mask_root=root)
        task_labels[task] = TaskLabels(rows=np.array([position[c] for c in r.clip_ids], dtype=np.int64),
                                       targets=targets, valid=valid, split=r.split.to_numpy(dtype=object).astype(str),
                                       classes=classes)
    return JointData(clip_ids=clip_ids, patients=patients, clips=np.stack([found[k] for k in keys]), labels=task_labels)
