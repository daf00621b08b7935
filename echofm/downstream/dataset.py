"""Labelled clips for one downstream task: manifest + labels + shards -> arrays split by patient.

`build_task_data` joins the labels to the accepted manifest rows, drops rows without a target,
splits by patient, reads the clips from their shards (each shard once) already fitted to the
encoder's input size, and, for segmentation, carries each LV mask through the same window and
resize the clip went through at ingestion.

Memory: clips are kept as uint8 at the encoder's input size (`[N, T, s, s, C]`), e.g. 0.6 MB per
clip at 16 x 112 x 112 x 3, so labelled sets of tens of thousands of clips fit in RAM.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echofm.data import storage
from echofm.preprocess.resample import plan_windows, resize_pad, window_span_ms
from echofm.data.loader import decode_sample, iter_shard_samples
from echofm.preprocess.clips import InputSpec, fit_clip, fit_mask
from echofm.downstream.labels import (
    LabelColumns,
    LabelError,
    clip_mask_target,
    join_labels,
    load_labels,
    load_source_masks,
)
from echofm.downstream.objectives import OBJECTIVES
from echofm.downstream.splits import SplitConfig, assign_splits, official_splits
from echofm.downstream.tasks import TASKS

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    """Labelled clips of one task, aligned by row.

    clips: uint8 `[N, T, s, s, C]`; targets: what the task's objective trains on (float `[N, K]`
    for regression, float 0/1 `[N]`, int class `[N]`, or uint8 masks `[N, T, s, s]`); valid:
    bool `[N, T]` labelled frames (segmentation only); split: "train" | "val" | "test" per row;
    classes: class names (multiclass tasks only). split_rule: how `split` was drawn, for the
    model card ("patient", "official", or "fold K"); still: bool `[N]`, the rows whose source was
    a single image, entered as its frame repeated.
    """

    clip_ids: list[str]
    patients: list[str]
    split: np.ndarray
    clips: np.ndarray
    targets: np.ndarray
    valid: np.ndarray | None
    classes: tuple[str, ...] = ()
    split_rule: str = "patient"
    still: np.ndarray | None = None

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def subset(self, idx: np.ndarray) -> TaskData:
        """The rows `idx`, in that order."""
        return TaskData(
            clip_ids=[self.clip_ids[i] for i in idx],
            patients=[self.patients[i] for i in idx],
            split=self.split[idx],
            clips=self.clips[idx],
            targets=self.targets[idx],
            valid=self.valid[idx] if self.valid is not None else None,
            classes=self.classes,
            split_rule=self.split_rule,
            still=self.still[idx] if self.still is not None else None,
        )

    @property
    def still_clips(self) -> int:
        return 0 if self.still is None else int(self.still.sum())

    def counts(self) -> dict[str, dict[str, int]]:
        """Clips and distinct patients per split."""
        out = {}
        for name in ("train", "val", "test"):
            idx = self.indices(name)
            out[name] = {"clips": int(len(idx)), "patients": len({self.patients[i] for i in idx})}
        return out


def read_shard_clips(
    shard_paths: Iterable[str | Path], clip_ids: Iterable[str], spec: InputSpec
) -> dict[str, np.ndarray]:
    """Decode the wanted clips from their shards, fitted to `spec`: `{clip_id: [T', s, s, C]}`.

    Each shard is read once, front to back (tar archives have no index); samples not wanted are
    skipped without decoding.
    """
    wanted = set(clip_ids)
    found: dict[str, np.ndarray] = {}
    for sample in iter_shard_samples(sorted({storage.location(p) for p in shard_paths}, key=str)):
        key = sample["__key__"]
        if key in wanted and key not in found:
            found[key] = fit_clip(decode_sample(sample), spec)
    return found


def read_manifest_frame(manifest: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The manifest as a DataFrame, from a path (`read_manifest`) or as given."""
    if isinstance(manifest, pd.DataFrame):
        return manifest
    from echofm.data.manifest import read_manifest

    table = read_manifest(manifest)
    return table.to_pandas() if hasattr(table, "to_pandas") else table


def _patient_column(joined: pd.DataFrame) -> str:
    for column in ("patient_id", "label_patient", "patient"):
        if column in joined.columns and joined[column].notna().all():
            return column
    raise LabelError("no complete patient pseudonym column (patient_id or the labels' patient)")


def split_rule(joined: pd.DataFrame, config: SplitConfig) -> str:
    """Which rule `task_splits` applies to these rows: "official", "fold K" or "patient"."""
    if config.official and LabelColumns(joined).has("split"):
        return "official" if config.fold is None else f"fold {config.fold}"
    return "patient"


def task_splits(joined: pd.DataFrame, config: SplitConfig) -> pd.Series:
    """The split of every joined row: the labels' own `split` column when they have one and
    `config.official` (a public dataset's official split), else the patient split."""
    columns = LabelColumns(joined)
    if config.official and columns.has("split"):
        return official_splits(columns("split").reset_index(drop=True), config)
    return assign_splits(joined, config, patient_column=_patient_column(joined))


# Tasks whose targets the representation report probes, by its probe-table column.
PROBE_TASKS: tuple[str, ...] = ("view", "ef")


def probe_label_table(manifest: str | Path | pd.DataFrame, labels: str | Path | pd.DataFrame, *,
                      secret: bytes | None = None) -> pd.DataFrame:
    """The representation report's probe labels (`echofm.representation.labels`): one row per
    accepted, labelled clip with `clip_id`, whichever of `PROBE_TASKS` the labels give, and
    `patient`, a digest of the patient pseudonym (the report only needs to know which clips
    share a patient, so the pseudonym itself never leaves this function). secret: needed when
    the labels name files by path (see `join_labels`).
    Raises LabelError when no accepted clip has a label."""
    label_frame = labels if isinstance(labels, pd.DataFrame) else load_labels(labels)
    joined = join_labels(read_manifest_frame(manifest), label_frame, secret=secret)
    table = pd.DataFrame({"clip_id": joined["clip_id"].astype(str)})
    columns = LabelColumns(joined)
    for task in PROBE_TASKS:
        try:
            table[task] = pd.Series(TASKS[task].derive(columns)).to_numpy()
        except LabelError:
            continue  # the labels lack this task's columns: the report skips its probe
    try:
        patients = joined[_patient_column(joined)].astype(str)
        table["patient"] = [hashlib.sha256(p.encode()).hexdigest()[:16] for p in patients]
    except LabelError:
        pass  # no patient known: every clip is its own group
    return table


def _window_indices(row: pd.Series, heart_rate_bpm: float | None, shard_frames: int) -> np.ndarray:
    """Source frames of the clip's window, recomputed as ingestion planned them.

    The plan is redone from the manifest's frame count and fps (and the label's heart rate when
    known) and checked against the recorded window start/end; when ingestion used another window
    length, the frames are spread evenly between the recorded start and end instead.
    """
    n_source, fps = int(row["n_frames_source"]), float(row["fps"])
    window = int(row.get("window_index") or 0)
    start, end = float(row["window_start_ms"]), float(row["window_end_ms"])
    plans = plan_windows(n_source, fps, num_frames=shard_frames, heart_rate_bpm=heart_rate_bpm,
                         max_windows=window + 1)
    if len(plans) > window:
        span = window_span_ms(plans[window], fps)
        if abs(span[0] - start) < 1e-3 and abs(span[1] - end) < 1e-3:
            return plans[window]
    frame_ms = 1000.0 / fps
    first, last = start / frame_ms, end / frame_ms - 1.0
    # Ingestion samples instants s + k W / N; the last one is (N - 1) / N of the way to s + W.
    step = (last - first) / max(shard_frames - 1, 1)
    idx = np.floor(first + np.arange(shard_frames) * step + 0.5).astype(np.int64)
    return np.clip(idx, 0, n_source - 1)


def _mask_targets(
    rows: pd.DataFrame, mask_root: Path, spec: InputSpec, mask_column: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Masks `[N, T, s, s]`, labelled frames `[N, T]` and the structures the mask files name
    (all the same, else LabelError)."""
    masks, valid, classes = [], [], set()
    hr_column = next((c for c in ("label_heart_rate_bpm", "heart_rate_bpm") if c in rows.columns), None)
    for _, row in rows.iterrows():
        source = load_source_masks(mask_root / str(row[mask_column]))
        classes.add(source.classes)
        heart_rate = float(row[hr_column]) if hr_column and pd.notna(row[hr_column]) else None
        window = _window_indices(row, heart_rate, spec.shard_frames)
        mask, ok = clip_mask_target(source, window, lambda f: resize_pad(f, spec.shard_size))
        fitted, fitted_ok = fit_mask(mask, ok, spec)
        masks.append(fitted)
        valid.append(fitted_ok)
    if len(classes) > 1:
        raise LabelError(f"mask files name different structures: {sorted(classes)}")
    return np.stack(masks), np.stack(valid), classes.pop()


def _labelled(target: pd.Series | pd.DataFrame) -> pd.Series:
    """Rows whose derived target is there: not NaN/None, not an empty string (every column of a
    multi-output target)."""
    present = target.notna() & (target.astype(str) != "")
    return present.all(axis=1) if isinstance(present, pd.DataFrame) else present


@dataclass
class TaskRows:
    """One task's labelled rows before any clip is read, aligned by row.

    joined: the label rows joined to accepted manifest rows; target: the derived raw target
    (a Series, or a DataFrame for several outputs); split: "train" | "val" | "test" per row;
    keys: the shard sample key of each row's clip; shard_files: its shard; classes: the class
    names (multiclass tasks; for segmentation the structures asked for, if any); split_rule: how
    `split` was drawn (see `split_rule`); still: bool per row, the rows whose source was a still.
    """

    task: str
    joined: pd.DataFrame
    target: pd.Series | pd.DataFrame
    split: pd.Series
    keys: list[str]
    shard_files: list[Path]
    classes: tuple[str, ...] = ()
    split_rule: str = "patient"
    still: np.ndarray | None = None

    def found_in(self, found: dict[str, np.ndarray]) -> TaskRows:
        """The rows whose clip was read from its shard; LabelError when none was."""
        present = np.array([k in found for k in self.keys])
        if not present.all():
            log.warning("%d labelled %s clips are missing from their shards and are skipped",
                        int((~present).sum()), self.task)
        if not present.any():
            raise LabelError(f"none of the {self.task}-labelled clips was found in the shards")
        keep = lambda frame: frame[present].reset_index(drop=True)  # noqa: E731
        return TaskRows(task=self.task, joined=keep(self.joined), target=keep(self.target), split=keep(self.split),
                        keys=[k for k, ok in zip(self.keys, present) if ok],
                        shard_files=[f for f, ok in zip(self.shard_files, present) if ok], classes=self.classes,
                        split_rule=self.split_rule, still=None if self.still is None else self.still[present])

    @property
    def clip_ids(self) -> list[str]:
        return [str(c) for c in self.joined["clip_id"]]

    @property
    def patients(self) -> list[str]:
        return [str(p) for p in self.joined[_patient_column(self.joined)]]


def task_rows(
    task: str,
    *,
    manifest: pd.DataFrame,
    labels: pd.DataFrame,
    shards_dir: str | Path,
    split_config: SplitConfig,
    classes: tuple[str, ...] | None = None,
    secret: bytes | None = None,
) -> TaskRows:
    """The labelled rows of `task` and their split (see `build_task_data`; `task_splits`).

    A patient's split depends on its pseudonym and the seed (`echofm.downstream.splits`), so the
    rows of one task are split the same way whichever other tasks are built beside it.
    Raises LabelError when no accepted clip has a label for the task.
    """
    definition = TASKS[task]
    joined = join_labels(manifest, labels, secret=secret)
    target = definition.derive(LabelColumns(joined))
    labelled = _labelled(target)
    joined = joined[labelled].reset_index(drop=True)
    target = target[labelled].reset_index(drop=True)
    names: tuple[str, ...] = ()
    if definition.kind == "multiclass":
        names = tuple(classes or definition.classes or sorted(set(target.astype(str))))
        keep = target.astype(str).isin(names)
        joined, target = joined[keep].reset_index(drop=True), target[keep].reset_index(drop=True)
    elif definition.kind == "segmentation":
        names = tuple(classes or definition.classes or ())
    if joined.empty:
        raise LabelError(f"no accepted clip has a {task} label")
    split = task_splits(joined, split_config)
    shards_dir = storage.location(shards_dir)
    shard_files = [storage.join(shards_dir, storage.name(str(s))) for s in joined["shard"]]
    keys = [str(k) if pd.notna(k) else str(c) for k, c in zip(joined.get("key", joined["clip_id"]), joined["clip_id"])]
    still = (joined["n_frames_source"] == 1).to_numpy() if "n_frames_source" in joined.columns else None
    return TaskRows(task=task, joined=joined, target=target, split=split, keys=keys, shard_files=shard_files,
                    classes=names, split_rule=split_rule(joined, split_config), still=still)


def task_targets(rows: TaskRows, *, spec: InputSpec,
                 mask_root: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """What the task's objective trains on for each row, the labelled-frame flags (segmentation
    only; see `TaskData`) and the class names (for segmentation: the structures asked for, else
    those the mask files name when there are several)."""
    definition = TASKS[rows.task]
    if definition.kind == "segmentation":
        column = LabelColumns(rows.joined).name(definition.label_columns[0])
        targets, valid, structures = _mask_targets(rows.joined, mask_root, spec, column)
        return targets, valid, rows.classes or (structures if len(structures) > 1 else ())
    return OBJECTIVES[definition.kind].targets(rows.target, rows.classes), None, rows.classes


def mask_root_for(labels: str | Path | pd.DataFrame, mask_root: str | Path | None) -> Path:
    """Where `mask_file` paths are relative to: `mask_root`, else the labels file's directory
    (the working directory for an in-memory table)."""
    if mask_root is not None:
        return Path(mask_root)
    return Path(labels).parent if not isinstance(labels, pd.DataFrame) else Path.cwd()


def label_frame_of(labels: str | Path | pd.DataFrame) -> pd.DataFrame:
    return labels if isinstance(labels, pd.DataFrame) else load_labels(labels)


def build_task_data(
    *,
    task: str,
    manifest: str | Path | pd.DataFrame,
    labels: str | Path | pd.DataFrame,
    shards_dir: str | Path,
    spec: InputSpec,
    split_config: SplitConfig,
    classes: tuple[str, ...] | None = None,
    mask_root: str | Path | None = None,
    secret: bytes | None = None,
) -> TaskData:
    """Everything a fine-tuning or evaluation run of `task` needs, in memory.

    mask_root: directory `mask_file` paths are relative to (default: the labels file's
    directory). secret: the de-identification secret, needed when the labels name files by
    path (see `join_labels`). classes: the class names of a multiclass task (default: the task's fixed classes,
    else the sorted values present), so a model evaluated later keeps its training order; rows
    of other classes are dropped.
    Raises LabelError when no usable labelled clip remains.
    """
    rows = task_rows(task, manifest=read_manifest_frame(manifest), labels=label_frame_of(labels),
                     shards_dir=shards_dir, split_config=split_config, classes=classes, secret=secret)
    found = read_shard_clips(rows.shard_files, rows.keys, spec)
    rows = rows.found_in(found)
    targets, valid, names = task_targets(rows, spec=spec, mask_root=mask_root_for(labels, mask_root))
    return TaskData(
        clip_ids=rows.clip_ids,
        patients=rows.patients,
        split=rows.split.to_numpy(dtype=object).astype(str),
        clips=np.stack([found[k] for k in rows.keys]),  # `fit_clip` gave every clip spec's channels
        targets=targets,
        valid=valid,
        classes=names,
        split_rule=rows.split_rule,
        still=rows.still,
    )
