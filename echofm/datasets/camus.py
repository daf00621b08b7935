"""CAMUS (Creatis, Lyon): 500 patients, apical two- and four-chamber half cycles with expert
segmentations, in the NIfTI release and the older MetaImage (`.mhd` + `.raw`) one.

Layout: `patientNNNN/` folders anywhere under ROOT (`database_nifti/`, or `training/` and
`testing/` in the older release), each with `patientNNNN_{2CH,4CH}_half_sequence.nii.gz` (older:
`_sequence.mhd`), its label volume `..._gt` when published, the `_ED`/`_ES` frames with their
`_gt` masks, and `Info_{2CH,4CH}.cfg` ("Key: value" lines: ED, ES, NbFrame, EF or the older
LVef with LVedv/LVesv, FrameRate, ...). Labels: 1 LV endocardium (cavity), 2 LV epicardium
(myocardium), 3 left atrium. The official split is `database_split/subgroup_{training,
validation,testing}.txt` where the release has it; otherwise clips are split by patient.

ED and ES in Info are 1-based frame numbers of the half sequence; the columns here are 0-based.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from echofm.datasets.dataset import DatasetLayoutError, LabelMasks, Listing, ListedVideo, number

if TYPE_CHECKING:
    from echofm.io.deid import Pseudonymizer

CAMUS_RECORD = re.compile(r"^patient\d{4}_(2CH|4CH)$")
STRUCTURES: tuple[str, ...] = ("lv_endo", "lv_myo", "la")  # label values 1, 2, 3
CAMUS_VIEWS = {"2CH": "A2C", "4CH": "A4C"}
SPLIT_FILES = {"subgroup_training.txt": "train", "subgroup_validation.txt": "val", "subgroup_testing.txt": "test"}
_PATIENT_DIR = re.compile(r"^patient\d{4}$")
_SEQUENCE_NAMES = ("half_sequence", "sequence")
_EXTENSIONS = {".nii.gz": "nifti", ".nii": "nifti", ".mhd": "mhd"}
_INFO_REQUIRED = ("ED", "ES")


def parse_info(path: Path) -> dict[str, str]:
    """`Info_*.cfg` as `{key: value}`; DatasetLayoutError naming the file and the missing keys."""
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    missing = [key for key in _INFO_REQUIRED if key not in fields]
    if "EF" not in fields and "LVef" not in fields:
        missing.append("EF (or LVef)")
    if missing:
        raise DatasetLayoutError(f"{path}: missing key(s) {', '.join(missing)}")
    return fields


def _find(folder: Path, base: str) -> tuple[Path, str] | None:
    for suffix, volume_format in _EXTENSIONS.items():
        path = folder / f"{base}{suffix}"
        if path.is_file():
            return path, volume_format
    return None


def _companions(path: Path, volume_format: str) -> tuple[Path, ...]:
    if volume_format != "mhd":
        return ()
    return tuple(p for p in (path.with_suffix(".raw"), path.with_suffix(".zraw")) if p.is_file())


def official_splits(root: Path) -> dict[str, str]:
    """`{patientNNNN: split}` from the release's split files (empty when it has none)."""
    found: dict[str, str] = {}
    for name, split in SPLIT_FILES.items():
        for path in sorted(root.rglob(name)):
            for line in path.read_text().split():
                found[line.strip()] = split
    return found


def _masks(folder: Path, patient: str, view: str, sequence: Path, ed: int, es: int) -> LabelMasks | None:
    """Masks of every frame from the sequence's label volume, else of the ED and ES frames."""
    from echofm.io.volume import read_label_volume

    whole = _find(folder, f"{sequence.name.split('.')[0]}_gt")
    if whole is not None:
        labels = read_label_volume(*whole)
        return LabelMasks(masks=labels, frame_indices=np.arange(len(labels), dtype=np.int64), classes=STRUCTURES)
    frames, masks = [], []
    for instant, index in (("ED", ed), ("ES", es)):
        found = _find(folder, f"{patient}_{view}_{instant}_gt")
        if found is not None:
            masks.append(read_label_volume(*found)[0])
            frames.append(index)
    if not frames:
        return None
    return LabelMasks(masks=np.stack(masks), frame_indices=np.array(frames, dtype=np.int64), classes=STRUCTURES)


def _has_masks(folder: Path, patient: str, view: str, sequence: Path) -> bool:
    base = sequence.name.split(".")[0]
    return any(_find(folder, name) for name in (f"{base}_gt", f"{patient}_{view}_ED_gt", f"{patient}_{view}_ES_gt"))


def read_camus(root: Path, keys: Pseudonymizer) -> Listing:
    folders = sorted(p for p in root.rglob("patient*") if p.is_dir() and _PATIENT_DIR.match(p.name))
    if not folders:
        raise DatasetLayoutError(f"{root}: no patientNNNN/ folder (the published layout has patient0001/ ...)")
    splits = official_splits(root)
    listing = Listing(videos=[])
    for folder in folders:
        patient = folder.name
        for view, canonical in CAMUS_VIEWS.items():
            record = f"{patient}_{view}"
            sequence = next((found for name in _SEQUENCE_NAMES if (found := _find(folder, f"{record}_{name}"))), None)
            info = folder / f"Info_{view}.cfg"
            if sequence is None:
                listing.unusable.append((record, "video_missing"))
                continue
            if not info.is_file():
                listing.unusable.append((record, "info_missing"))
                continue
            if splits and patient not in splits:
                listing.unusable.append((record, "not_in_split_files"))
                continue
            fields = parse_info(info)
            ed, es = int(number(fields["ED"]) or 1) - 1, int(number(fields["ES"]) or 1) - 1
            targets: dict[str, Any] = {
                "ef": number(fields.get("EF", fields.get("LVef"))),
                "edv": number(fields.get("LVedv", "")),
                "esv": number(fields.get("LVesv", "")),
                "view": canonical,
                "ed_frame": ed,
                "es_frame": es,
                "image_quality": fields.get("ImageQuality") or None,
            }
            path, volume_format = sequence
            masks = None
            if _has_masks(folder, patient, view, path):
                masks = partial(_masks, folder, patient, view, path, ed, es)
            listing.videos.append(ListedVideo(
                rel_path=path.relative_to(root).as_posix(), record=record, patient=patient, split=splits.get(patient),
                targets=targets, masks=masks,
                companions=tuple(c.relative_to(root).as_posix() for c in _companions(path, volume_format)),
            ))
    return listing
