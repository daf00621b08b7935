"""Downstream labels: load a label table, join it to the manifest, read the columns tasks derive targets from.

A label table (CSV or Parquet) names its clips by `clip_id`, by `source_id` (the manifest's keyed
id of the source file), or by source path (`file`, relative to the archive root, as `echofm
synth` writes it; `source_path` and `path` are accepted too). The manifest never holds paths:
a path is joined by computing its keyed id, `echofm.io.deid.source_id(secret, path)`, under the
secret ingestion used (see docs/deid.md). A label path may carry folders above the ingested
SOURCE (`archive/P0001/S01/IM_0001.dcm` for a SOURCE of `archive/`): each label path is tried
whole, then without its first folder, and so on, and the longest that names a manifest file
wins. Only accepted manifest rows join. Which columns a task reads and how they become its
target is the task's own definition (`echofm.downstream.tasks`); segmentation masks (npz, uint8
`[T, H, W]` at source resolution) are carried through the clip's own frame selection and resize
here (`clip_mask_target`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echofm.errors import DownstreamError
from echofm.preprocess.clips import snap_labelled_frames

_PATH_COLUMNS: tuple[str, ...] = ("file", "source_path", "path")


class LabelError(DownstreamError, ValueError):
    """A label table that cannot serve the task (missing columns, nothing joins, bad masks)."""


def load_labels(path: str | Path) -> pd.DataFrame:
    """Read a label table from `.csv` or `.parquet`; raises LabelError for other suffixes."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise LabelError(f"{path}: labels must be .csv or .parquet")


def _label_path_column(labels: pd.DataFrame) -> str:
    for column in _PATH_COLUMNS:
        if column in labels.columns:
            return column
    raise LabelError(f"labels need a clip_id or source_id column, or one of {_PATH_COLUMNS}")


def label_source_ids(paths: pd.Series, secret: bytes, known: set[str]) -> pd.Series:
    """For each label path, the keyed id of the longest trailing part of it that names a file in
    `known` (source ids of the manifest), or None. Raises LabelError when two label rows name
    the same file (by row number: the paths themselves may identify a patient)."""
    from echofm.io.deid import normalise_rel_path, source_id

    found: list[str | None] = []
    for value in paths.astype(str):
        parts = normalise_rel_path(value).split(b"/")
        ids = (source_id(secret, b"/".join(parts[start:])) for start in range(len(parts)))
        found.append(next((i for i in ids if i in known), None))
    matched = pd.Series(found, index=paths.index, dtype=object)
    repeated = matched[matched.notna() & matched.duplicated(keep=False)]
    if not repeated.empty:
        rows = ", ".join(str(i) for i in repeated.index[:5])
        raise LabelError(f"label rows {rows} name the same file")
    return matched


def join_labels(manifest: pd.DataFrame, labels: pd.DataFrame, *, secret: bytes | None = None) -> pd.DataFrame:
    """Accepted manifest rows with their labels, one row per labelled clip.

    Joins on `clip_id` when the label table's clip ids are manifest clip ids, else on
    `source_id` when the table has that column, else by source path through the keyed id (see
    the module docstring), which needs `secret`; the synthetic archive's own `clip_id` names
    its files, not the manifest's content-derived ids, so it joins by path. Label columns that
    clash with manifest columns get a `label_` prefix (the manifest's `view` is what ingestion
    inferred, the label's `label_view` is the ground truth); `LabelColumns` reads the label's.
    Raises LabelError when no accepted clip has a label, or when a path join has no secret.
    """
    if "status" in manifest.columns:
        manifest = manifest[manifest["status"] == "accepted"]
    manifest = manifest.reset_index(drop=True)
    labels = labels.reset_index(drop=True)
    by_id = "clip_id" in labels.columns and bool(
        set(labels["clip_id"].astype(str)) & set(manifest["clip_id"].astype(str))
    )
    key = "clip_id" if by_id else "source_id"
    if not by_id and "source_id" not in labels.columns:
        column = _label_path_column(labels)
        if secret is None:
            raise LabelError(
                f"labels name files by path ({column!r}): joining them needs the de-identification secret "
                "ingestion used (ECHOFM_DEID_SECRET or --secret-file)"
            )
        labels = labels.assign(source_id=label_source_ids(labels[column], secret, set(manifest["source_id"].astype(str))))
        labels = labels[labels["source_id"].notna()]
    clashes = {c: f"label_{c}" for c in labels.columns if c in manifest.columns and c != key}
    joined = manifest.merge(labels.rename(columns=clashes), on=key, how="inner", validate="many_to_one")
    if joined.empty:
        raise LabelError("no accepted clip in the manifest has a label")
    return joined


class LabelColumns:
    """Label columns of a joined table by their label-table name: `label_<name>` (a label
    column that clashed with a manifest column) wins over `<name>`. What task targets are
    derived from (`Task.derive`)."""

    def __init__(self, joined: pd.DataFrame) -> None:
        self.joined = joined

    def name(self, column: str) -> str | None:
        """The joined table's column holding the label `column`, None when there is none."""
        for candidate in (f"label_{column}", column):
            if candidate in self.joined.columns:
                return candidate
        return None

    def has(self, column: str) -> bool:
        return self.name(column) is not None

    def __call__(self, column: str) -> pd.Series:
        name = self.name(column)
        if name is None:
            raise LabelError(f"labels have no {column!r} column")
        return self.joined[name]

    def frame(self, columns: Sequence[str]) -> pd.DataFrame:
        """Several label columns side by side, under their label names."""
        return pd.DataFrame({column: self(column) for column in columns})


@dataclass(frozen=True)
class SourceMasks:
    """Masks of the labelled frames of one cine, at source resolution.

    masks: uint8 `[K, H, W]`, 0 background, 1..len(classes) the structures (a binary LV mask:
    {0, 1}); frame_indices: int64 `[K]`, the source frame of each; classes: the structure of
    each value from 1 (empty when the file does not name them).
    """

    masks: np.ndarray
    frame_indices: np.ndarray
    classes: tuple[str, ...] = ()


def load_source_masks(mask_path: str | Path) -> SourceMasks:
    """Read a mask file: `masks` `[K, H, W]` with `frame_indices` `[K]` (the synthetic archive's
    layout), or dense `masks` `[T, H, W]` without indices, where the non-empty frames are the
    labelled ones (EchoNet-style ED/ES tracings). With `classes` (structure names, as
    `echofm datasets prepare` writes them) the values 1..K are kept as labels; without, any
    non-zero value is the one structure.

    The messages do not repeat `mask_path`: a label table may name mask files after patients.
    """
    try:
        data = np.load(mask_path)
    except (OSError, ValueError):
        raise LabelError("a mask_file named in the labels cannot be read as .npz") from None
    with data:
        if "masks" not in data:
            raise LabelError("a mask_file named in the labels has no 'masks' array")
        classes = tuple(str(c) for c in data["classes"]) if "classes" in data else ()
        raw = np.asarray(data["masks"])
        masks = raw.astype(np.uint8) if len(classes) > 1 else (raw != 0).astype(np.uint8)
        indices = np.asarray(data["frame_indices"]) if "frame_indices" in data else None
    if len(classes) > 1 and masks.max(initial=0) > len(classes):
        raise LabelError(f"{mask_path}: label values above the {len(classes)} classes it names")
    if masks.ndim != 3:
        raise LabelError(f"a mask_file named in the labels has masks of shape {masks.shape}, not [K, H, W]")
    if indices is None:
        indices = np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1))
        masks = masks[indices]
    if len(indices) != masks.shape[0]:
        raise LabelError(f"a mask_file named in the labels has {len(indices)} frame indices for {masks.shape[0]} masks")
    return SourceMasks(masks=masks, frame_indices=indices.astype(np.int64), classes=classes)


def clip_mask_target(
    source: SourceMasks,
    window: Sequence[int] | np.ndarray,
    resize: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Masks carried through a clip's window and spatial transform.

    window: the source frame of each clip frame `[T]` (non-decreasing, as `plan_windows` gives).
    A labelled source frame goes to the clip frame sampled nearest to it, when that one lies
    within half the window's frame spacing (a window at 25 Hz over a 50 fps cine samples every
    2nd frame, so an ED frame at an odd index still lands on its neighbour, 20 ms away).
    resize: the clip's spatial transform on uint8 `[K, H, W, 1]` (e.g. `resize_pad`); each label
    value is resized as its own binary mask, so structures keep their labels.
    Returns `(mask uint8 [T, S, S], valid bool [T])`; frames without a label are zero and not valid.
    """
    window = np.asarray(window, dtype=np.int64)
    spacing = float(np.median(np.diff(window))) if len(window) > 1 else 1.0
    tolerance = max(spacing, 1.0) / 2.0
    labelled = None
    for value in range(1, max(int(source.masks.max(initial=0)), 1) + 1):
        resized = np.asarray(resize((source.masks == value).astype(np.uint8)[..., None] * 255))
        resized = resized[..., 0] if resized.ndim == 4 else resized
        labelled = np.zeros(resized.shape, np.uint8) if labelled is None else labelled
        labelled[resized >= 128] = value
    out = np.zeros((len(window), *labelled.shape[1:]), dtype=np.uint8)
    valid = np.zeros(len(window), dtype=bool)
    for k_src, k_dst in snap_labelled_frames(window, source.frame_indices, tolerance):
        out[k_dst], valid[k_dst] = labelled[k_src], True
    return out, valid
