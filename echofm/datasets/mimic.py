"""MIMIC-IV-ECHO (PhysioNet): DICOM echo studies under `files/pNN/p<subject_id>/s<study_id>/`,
with `echo-study-list.csv` (`subject_id`, `study_id`, ...) naming the studies.

The DICOM files ingest like any archive; what this layout adds is the study join: each DICOM
belongs to the study its folder names, and study-level labels (the study list's columns that are
project label columns, e.g. an `ef` joined from MIMIC-IV measurements) attach to every clip of
the study. MIMIC's `subject_id` and `study_id` link to the credentialed clinical database, so
they never reach an output: the study and patient are written as keyed pseudonyms under the
run's secret (`study`, `patient`), the record as `<study pseudonym>_<instance number>`, and every
other study-list column (dates, note ids) is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from echofm.datasets.dataset import Listing, ListedVideo, number, read_table, require_file

if TYPE_CHECKING:
    from echofm.io.deid import Pseudonymizer

STUDY_LIST = "echo-study-list.csv"
# Study-list columns carried as study-level labels (project names); anything else is dropped.
STUDY_LABELS: tuple[str, ...] = ("ef", "reduced_ef", "esv", "edv", "ivs_mm", "lvid_mm", "lvpw_mm")
_DICOM_PATH = re.compile(r"(?:^|/)p(\d+)/s(\d+)/(?:[^/]*?_)?(\d+)\.dcm$", re.IGNORECASE)


def read_mimic_echo(root: Path, keys: Pseudonymizer) -> Listing:
    study_list = require_file(root, STUDY_LIST)
    studies = read_table(study_list, ("subject_id", "study_id"), optional=STUDY_LABELS)
    by_study = {row["study_id"].strip(): row for row in studies.to_dict("records")}
    seen: set[str] = set()
    listing = Listing(videos=[])
    for path in sorted((root / "files").rglob("*.dcm")) if (root / "files").is_dir() else []:
        rel = path.relative_to(root).as_posix()
        match = _DICOM_PATH.search(rel)
        # Every DICOM under files/ is accounted for; one outside the listed studies (or whose
        # folder names another patient than the list) is reported, never ingested or labelled.
        if match is None:
            listing.unusable.append(("", "not_a_study_path"))
            continue
        subject, study, instance = match.groups()
        row = by_study.get(study)
        if row is None or row["subject_id"].strip() != subject:
            listing.unusable.append((keys.pseudonym("study", study), "study_not_listed" if row is None
                                     else "subject_mismatch"))
            continue
        seen.add(study)
        study_key = keys.pseudonym("study", study)
        listing.videos.append(ListedVideo(
            rel_path=rel, record=f"{study_key}_{int(instance):04d}", patient=keys.pseudonym("patient", subject),
            targets={"study": study_key, **{c: number(row[c]) for c in STUDY_LABELS if c in row}},
        ))
    listing.unusable.extend((keys.pseudonym("study", s), "video_missing") for s in sorted(set(by_study) - seen))
    return listing
