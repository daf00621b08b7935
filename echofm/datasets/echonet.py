"""The EchoNet datasets (Stanford AIMI): Dynamic, Pediatric and LVH, in their published layouts.

- EchoNet-Dynamic: `Videos/<FileName>.avi`, `FileList.csv` (EF, volumes, the official
  TRAIN/VAL/TEST split) and `VolumeTracings.csv` (chord tracings of two frames per video).
- EchoNet-Pediatric: `A4C/` and `PSAX/`, each with `FileList.csv` (EF and a fold 0-9) and
  `VolumeTracings.csv` (an outline polygon per traced frame); videos in `<view>/Videos/`.
- EchoNet-LVH: `Batch1/` .. `Batch4/` of PLAX videos and `MeasurementsList.csv` (one row per
  caliper measurement: IVS, LVID, LVPW in cm, with the official train/val/test split).

Of the traced frames, the one with the larger cavity is end-diastole, the smaller end-systole
(EchoNet's own code relies on the tracings being listed in that order; comparing areas needs no
such promise). Demographic columns (Pediatric's Sex, Age, Weight, Height) are never read further.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from echofm.datasets.dataset import (
    LabelMasks,
    Listing,
    ListedVideo,
    file_index,
    number,
    read_table,
    require_file,
)
from echofm.datasets.tracings import chord_polygon, masks_from_polygons, polygon_area
from echofm.downstream.tasks import REDUCED_EF_THRESHOLD

if TYPE_CHECKING:
    import pandas as pd

    from echofm.io.deid import Pseudonymizer

# EchoNet's de-identified video names: "0X" and 16 hex digits.
ECHONET_RECORD = re.compile(r"^0X[0-9A-F]{16}$", re.IGNORECASE)
DYNAMIC_SPLITS = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
PEDIATRIC_VIEWS = ("A4C", "PSAX")
# MeasurementsList `Calc` values (published names, with and without the diastolic suffix) -> column.
LVH_MEASUREMENTS: dict[str, str] = {"IVS": "ivs_mm", "IVSD": "ivs_mm", "LVID": "lvid_mm", "LVIDD": "lvid_mm",
                                    "LVPW": "lvpw_mm", "LVPWD": "lvpw_mm"}
LVH_COLUMNS: tuple[str, ...] = ("ivs_mm", "lvid_mm", "lvpw_mm")
MM_PER_CM = 10.0
_NO_TRACE_FRAMES = {"No Systolic", "No Diastolic"}

Polygons = dict[int, np.ndarray]  # traced frame -> outline [P, 2] (x, y)


def stem(file_name: str) -> str:
    """A FileName with or without its `.avi` suffix, as the video's record."""
    name = PurePosixPath(str(file_name).strip()).name
    return name[:-4] if name.lower().endswith(".avi") else name


def reduced_ef(ef: float | None) -> float | None:
    """1.0 below the project's reduced-EF threshold, 0.0 at or above it (EchoNet-Dynamic's paper
    reports HFrEF at EF < 50 %; this column follows the project's `reduced_ef` task)."""
    return None if ef is None else float(ef < REDUCED_EF_THRESHOLD)


def _chord_tracings(table: pd.DataFrame) -> dict[str, Polygons]:
    out: dict[str, Polygons] = {}
    for (name, frame), rows in table.groupby([table["FileName"].map(stem), "Frame"], sort=False):
        values = rows[["X1", "Y1", "X2", "Y2"]].astype(float).to_numpy()
        out.setdefault(name, {})[int(float(frame))] = chord_polygon(*values.T)
    return out


def _point_tracings(table: pd.DataFrame) -> dict[str, Polygons]:
    table = table[~table["Frame"].isin(_NO_TRACE_FRAMES)]
    out: dict[str, Polygons] = {}
    for (name, frame), rows in table.groupby([table["FileName"].map(stem), "Frame"], sort=False):
        out.setdefault(name, {})[int(float(frame))] = rows[["X", "Y"]].astype(float).to_numpy()
    return out


def _ed_es(polygons: Polygons) -> dict[str, Any]:
    """`ed_frame`, `es_frame` from the traced frames (larger cavity = ED); empty without two."""
    if len(polygons) < 2:
        return {}
    by_area = sorted(polygons, key=lambda frame: polygon_area(polygons[frame]))
    return {"ed_frame": int(by_area[-1]), "es_frame": int(by_area[0])}


def _lv_masks(polygons: Polygons, height: int, width: int) -> LabelMasks:
    masks, frames = masks_from_polygons(polygons.items(), height, width)
    return LabelMasks(masks=masks, frame_indices=frames, classes=("lv",))


def _video_size(root: Path, rel_path: str, height: float | None, width: float | None) -> Callable[[], tuple[int, int]]:
    """The frame size the table states, else the container's (read only when masks are built)."""
    def size() -> tuple[int, int]:
        if height and width:
            return int(height), int(width)
        from echofm.io.video import probe_video

        header = probe_video(root / rel_path)
        return header.height, header.width
    return size


def _masks_builder(polygons: Polygons, size: Callable[[], tuple[int, int]]) -> Callable[[], LabelMasks] | None:
    if not polygons:
        return None
    return lambda: _lv_masks(polygons, *size())


def read_dynamic(root: Path, keys: Pseudonymizer) -> Listing:
    files = read_table(require_file(root, "FileList.csv"),
                       ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"))
    tracings = _chord_tracings(read_table(require_file(root, "VolumeTracings.csv"),
                                          ("FileName", "X1", "Y1", "X2", "Y2", "Frame")))
    listing = Listing(videos=[])
    for row in files.itertuples(index=False):
        record = stem(row.FileName)
        rel = f"Videos/{record}.avi"
        split = DYNAMIC_SPLITS.get(str(row.Split).strip().upper())
        if split is None:
            listing.unusable.append((record, "unknown_split"))
            continue
        if not (root / rel).is_file():
            listing.unusable.append((record, "video_missing"))
            continue
        polygons = tracings.get(record, {})
        ef = number(row.EF)
        targets = {"ef": ef, "esv": number(row.ESV), "edv": number(row.EDV), "reduced_ef": reduced_ef(ef),
                   "view": "A4C", **_ed_es(polygons)}
        size = _video_size(root, rel, number(row.FrameHeight), number(row.FrameWidth))
        listing.videos.append(ListedVideo(rel_path=rel, record=record, patient=record, split=split, targets=targets,
                                          masks=_masks_builder(polygons, size)))
    return listing


def _pediatric_video(root: Path, view: str, record: str) -> str | None:
    for rel in (f"{view}/Videos/{record}.avi", f"{view}/{record}.avi"):
        if (root / rel).is_file():
            return rel
    return None


def read_pediatric(root: Path, keys: Pseudonymizer) -> Listing:
    listing = Listing(videos=[])
    views = [view for view in PEDIATRIC_VIEWS if (root / view).is_dir()]
    if not views:
        require_file(root, f"{PEDIATRIC_VIEWS[0]}/FileList.csv")
    for view in views:
        files = read_table(require_file(root, f"{view}/FileList.csv"), ("FileName", "EF", "Split"))
        tracings = _point_tracings(read_table(require_file(root, f"{view}/VolumeTracings.csv"),
                                              ("FileName", "X", "Y", "Frame")))
        for row in files.itertuples(index=False):
            record = stem(row.FileName)
            fold = number(row.Split)
            if fold is None or fold != int(fold):
                listing.unusable.append((record, "unknown_split"))
                continue
            rel = _pediatric_video(root, view, record)
            if rel is None:
                listing.unusable.append((record, "video_missing"))
                continue
            polygons = tracings.get(record, {})
            targets = {"ef": number(row.EF), "reduced_ef": reduced_ef(number(row.EF)), "view": view, **_ed_es(polygons)}
            listing.videos.append(ListedVideo(rel_path=rel, record=record, patient=record, split=int(fold),
                                              targets=targets,
                                              masks=_masks_builder(polygons, _video_size(root, rel, None, None))))
    return listing


def read_lvh(root: Path, keys: Pseudonymizer) -> Listing:
    table = read_table(require_file(root, "MeasurementsList.csv"),
                       ("HashedFileName", "Calc", "CalcValue", "Frame", "X1", "X2", "Y1", "Y2", "split"))
    videos = file_index(root, (".avi",))
    listing = Listing(videos=[])
    for name, rows in table.groupby("HashedFileName", sort=True):
        record = stem(name)
        splits = {str(s).strip().lower() for s in rows["split"]}
        values: dict[str, list[float]] = {}
        for calc, value in zip(rows["Calc"], rows["CalcValue"]):
            column, cm = LVH_MEASUREMENTS.get(str(calc).strip().upper()), number(value)
            if column is not None and cm is not None:
                values.setdefault(column, []).append(cm * MM_PER_CM)
        rel = videos.get(f"{record}.avi")
        if len(splits) != 1 or not splits <= {"train", "val", "test"}:
            listing.unusable.append((record, "unknown_split"))
        elif not values:
            listing.unusable.append((record, "no_measurement"))
        elif rel is None:
            listing.unusable.append((record, "video_missing"))
        else:
            targets = {column: float(np.mean(values[column])) if column in values else None for column in LVH_COLUMNS}
            listing.videos.append(ListedVideo(rel_path=rel, record=record, patient=record, split=splits.pop(),
                                              targets={**targets, "view": "PLAX"}))
    return listing

