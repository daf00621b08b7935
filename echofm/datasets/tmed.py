"""TMED-2 (Tufts Medical Echocardiogram Dataset): PNG stills with view and aortic stenosis labels.

Layout: the images under the folder each row names (`SourceFolder`, e.g.
`view_and_diagnosis_labeled_set/labeled/`) and a CSV with `query_key` (the image's file name,
`<patient>s<study>_<n>.png`), `view_label`, `diagnosis_label`, `diagnosis_classifier_split` and
`SourceFolder`. The release ships one such CSV per fold; the first by name (fold 0) is used.

Targets: `aortic_stenosis` in the three grades the EchoFM paper reports (none, non-significant:
mild or mild-to-moderate, significant: moderate or severe; `Not_Provided` has no grade) and
`view`. A still enters the model as a clip of its one frame repeated (ingestion does that).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from echofm.datasets.dataset import DatasetLayoutError, Listing, ListedVideo, file_index, read_table

if TYPE_CHECKING:
    from echofm.io.deid import Pseudonymizer

TMED_COLUMNS = ("query_key", "view_label", "diagnosis_label", "diagnosis_classifier_split", "SourceFolder")
# diagnosis_label (lower case, without the `_AS` suffix) -> the aortic_stenosis task's class.
AS_GRADES: dict[str, str | None] = {
    "no": "none", "mild": "non_significant", "mildtomod": "non_significant",
    "moderate": "significant", "severe": "significant", "not_provided": None,
}
VIEWS: dict[str, str] = {"PLAX": "PLAX", "PSAX": "PSAX", "A4C": "A4C", "A2C": "A2C", "A4CORA2COROTHER": "OTHER_CARDIAC"}
SPLITS = ("train", "val", "test")
_PATIENT = re.compile(r"^(\d+)s\d+")


def as_grade(label: str) -> str | None:
    """The aortic_stenosis class of a TMED-2 diagnosis_label; None for Not_Provided.
    Raises KeyError for a label outside the published set."""
    key = label.strip().lower()
    key = key[:-3] if key.endswith("_as") else key
    return AS_GRADES[key]


def _label_table(root: Path) -> Path:
    for path in sorted(root.rglob("*.csv")):
        try:
            header = path.open(errors="replace").readline()
        except OSError:
            continue
        if "query_key" in header:
            return path
    raise DatasetLayoutError(f"{root}: no CSV with a query_key column (the published layout has one per fold, "
                             f"with columns {', '.join(TMED_COLUMNS)})")


def read_tmed2(root: Path, keys: Pseudonymizer) -> Listing:
    table = read_table(_label_table(root), TMED_COLUMNS)
    images = file_index(root, (".png",))
    listing = Listing(videos=[])
    for row in table.itertuples(index=False):
        record = row.query_key.strip()
        split = row.diagnosis_classifier_split.strip().lower()
        rel = f"{row.SourceFolder.strip().strip('/')}/{record}"
        if not (root / rel).is_file():
            rel = images.get(record, "")
        try:
            grade = as_grade(row.diagnosis_label)
        except KeyError:
            listing.unusable.append((record, "unknown_diagnosis_label"))
            continue
        if split not in SPLITS:
            listing.unusable.append((record, "unknown_split"))
        elif not rel:
            listing.unusable.append((record, "video_missing"))
        else:
            match = _PATIENT.match(record)
            listing.videos.append(ListedVideo(
                rel_path=rel, record=record, patient=match.group(1) if match else record.split("_")[0], split=split,
                targets={"aortic_stenosis": grade, "view": VIEWS.get(row.view_label.strip().upper())},
            ))
    return listing
