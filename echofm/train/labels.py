"""Downstream labels: load a label table, join it to the manifest, derive task targets.

A label table (CSV or Parquet) names its clips either by `clip_id` or by source path (`file`,
relative to the archive root, as `echofm synth` writes it; `source_path` is accepted too). The
join keeps accepted manifest rows only and matches a source path by its trailing path
components, so it works whether the manifest stores absolute paths or paths relative to the
ingested SOURCE. Targets per task:

- `ef`: ejection fraction in percent (float).
- `view`: canonical view name (str), turned into a class index by the fine-tuner.
- `reduced_ef`: 1 when EF < 40 %, else 0 (derived from `ef` when the table has no column).
- `segmentation`: LV masks from `mask_file` (npz, uint8 `[T, H, W]` at source resolution),
  carried through the clip's own frame selection and resize (see `clip_mask_target`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

TASKS: tuple[str, ...] = ("ef", "view", "reduced_ef", "segmentation")
# Reduced ejection fraction: EF below 40 % (heart-failure with reduced EF, HFrEF).
REDUCED_EF_THRESHOLD = 40.0
_PATH_COLUMNS: tuple[str, ...] = ("file", "source_path", "path")


class LabelError(ValueError):
    """A label table that cannot serve the task (missing columns, nothing joins, bad masks)."""


def load_labels(path: str | Path) -> pd.DataFrame:
    """Read a label table from `.csv` or `.parquet`; raises LabelError for other suffixes."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise LabelError(f"{path}: labels must be .csv or .parquet")


def _path_key(path: str, depth: int) -> str:
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    return "/".join(parts[-depth:])


def _label_path_column(labels: pd.DataFrame) -> str:
    for column in _PATH_COLUMNS:
        if column in labels.columns:
            return column
    raise LabelError(f"labels need a clip_id column or one of {_PATH_COLUMNS}")


def _match_source_paths(manifest: pd.DataFrame, labels: pd.DataFrame, column: str) -> pd.Series:
    """For each manifest row, the index of the label row whose path is a suffix of its source.

    The label path's own depth decides how many trailing components must match, so `a/x.dcm`
    and `b/x.dcm` in the labels stay distinct.
    """
    by_key: dict[str, object] = {}
    depths = set()
    for index, value in labels[column].items():
        depth = len(PurePosixPath(str(value).replace("\\", "/")).parts)
        key = _path_key(value, depth)
        if key in by_key:
            raise LabelError(f"label path {value!r} appears twice")
        by_key[key] = index
        depths.add(depth)
    matches = []
    for source in manifest["source_path"].astype(str):
        found = None
        for depth in sorted(depths, reverse=True):
            found = by_key.get(_path_key(source, depth))
            if found is not None:
                break
        matches.append(found)
    return pd.Series(matches, index=manifest.index, dtype=object)


def join_labels(manifest: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Accepted manifest rows with their labels, one row per labelled clip.

    Joins on `clip_id` when the label table has it, else on source path (see module doc).
    Label columns that clash with manifest columns keep the manifest's value and get a
    `label_` prefix (e.g. the synthetic archive's `patient` stays `patient`). Raises LabelError
    when no accepted clip has a label.
    """
    if "status" in manifest.columns:
        manifest = manifest[manifest["status"] == "accepted"]
    manifest = manifest.reset_index(drop=True)
    labels = labels.reset_index(drop=True)
    clashes = {c: f"label_{c}" for c in labels.columns if c in manifest.columns and c != "clip_id"}
    if "clip_id" in labels.columns:
        joined = manifest.merge(
            labels.rename(columns=clashes), on="clip_id", how="inner", validate="one_to_one"
        )
    else:
        column = _label_path_column(labels)
        if "source_path" not in manifest.columns:
            raise LabelError("manifest has no source_path column to join labels on")
        match = _match_source_paths(manifest, labels, column)
        keep = match.notna()
        picked = labels.loc[match[keep].astype(int).to_numpy()].rename(columns=clashes)
        joined = pd.concat(
            [manifest[keep].reset_index(drop=True), picked.reset_index(drop=True)], axis=1
        )
    if joined.empty:
        raise LabelError("no accepted clip in the manifest has a label")
    return joined


def task_target_column(joined: pd.DataFrame, task: str) -> pd.Series:
    """The raw target per row for `task`; rows without a target are NaN/None.

    ef: float percent; view: str; reduced_ef: float 0/1; segmentation: the mask file path.
    """
    if task not in TASKS:
        raise LabelError(f"unknown task {task!r}; expected one of {TASKS}")
    if task == "ef":
        return _column(joined, "ef").astype(float)
    if task == "view":
        return _column(joined, "view").where(lambda s: s.notna() & (s.astype(str) != ""))
    if task == "reduced_ef":
        if "reduced_ef" in joined.columns:
            return joined["reduced_ef"].astype(float)
        ef = _column(joined, "ef").astype(float)
        return (ef < REDUCED_EF_THRESHOLD).astype(float).where(ef.notna())
    return _column(joined, "mask_file").where(lambda s: s.notna() & (s.astype(str) != ""))


def _column(joined: pd.DataFrame, name: str) -> pd.Series:
    for candidate in (name, f"label_{name}"):
        if candidate in joined.columns:
            return joined[candidate]
    raise LabelError(f"labels have no {name!r} column")


def parse_frame_list(value: object) -> list[int]:
    """Frame numbers from a label cell: a list, a JSON-ish "[3, 40]" or "3;40" string, or NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [int(v) for v in value]
    text = str(value).strip().strip("[]")
    return [int(float(v)) for v in text.replace(";", ",").split(",") if v.strip()]


def load_source_masks(mask_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """LV masks at source resolution: `(masks uint8 [T, H, W], labelled bool [T])`.

    The npz holds `masks` (or its single array) `[T, H, W]`; an optional `frames` array lists
    the labelled frame indices, otherwise a frame counts as labelled when its mask is not empty
    (the synthetic archive and EchoNet-style tracings label ED and ES frames only).
    """
    with np.load(mask_path) as data:
        names = list(data.keys())
        key = "masks" if "masks" in names else names[0]
        masks = np.asarray(data[key])
        labelled_frames = np.asarray(data["frames"]) if "frames" in names else None
    if masks.ndim != 3:
        raise LabelError(f"{mask_path}: masks must be [T, H, W], got {masks.shape}")
    masks = (masks != 0).astype(np.uint8)
    labelled = np.zeros(masks.shape[0], dtype=bool)
    if labelled_frames is not None:
        labelled[labelled_frames.astype(int)] = True
    else:
        labelled = masks.reshape(masks.shape[0], -1).any(axis=1)
    return masks, labelled


def clip_mask_target(
    masks: np.ndarray,
    labelled: np.ndarray,
    frame_indices: Sequence[int] | np.ndarray,
    resize: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Source masks carried through the clip's frame selection and spatial transform.

    masks: uint8 `[T_src, H, W]`; labelled: bool `[T_src]`; frame_indices: the source frame of
    each clip frame `[T]` (indices past the source end are clamped, as a padded window repeats
    its last frame); resize: the clip's spatial transform applied to `[T, H, W, 1]` uint8 (it
    must use nearest-neighbour interpolation for masks). Returns `(mask uint8 [T, S, S] in
    {0, 1}, valid bool [T])`.
    """
    idx = np.clip(np.asarray(frame_indices, dtype=np.int64), 0, masks.shape[0] - 1)
    selected = masks[idx][..., None] * 255
    resized = np.asarray(resize(selected))
    if resized.ndim == 4:
        resized = resized[..., 0]
    return (resized >= 128).astype(np.uint8), labelled[idx].copy()
