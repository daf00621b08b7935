"""The synthetic echo archive: realistic DICOM/MP4/AVI cines with ground truth.

`generate_archive(OUT, n_clips, seed)` writes

- `OUT/archive/Pnnnn/Snn/IM_nnnn.{dcm,mp4,avi}`: the media, 2-4 clips per patient over one or two
  studies, in every transfer syntax / photometric interpretation the readers support (clip i uses
  `variant_for_clip(i)`: the first 12 clips cover all 12 variants once), with PHI in the headers
  and burned into the pixels;
- `OUT/labels.csv` and `OUT/labels.parquet`: one row per file (columns `LABEL_COLUMNS`);
- `OUT/labels/masks/<clip_id>.npz`: LV masks at source resolution (keys `MASK_NPZ_KEYS`);
- `OUT/phi.json`: every PHI string planted: one sorted list per kind (`patient_names`,
  `patient_name_parts`, `patient_ids`, `birth_dates`, `accession_numbers`, `institutions`,
  `operators`, `referring_physicians`, `study_descriptions`, `series_descriptions`, `study_dates`,
  `burned_in`), `all` (every identifying string, i.e. all kinds but the view-naming series
  descriptions), and `files`: {file: {"header": {kind: value}, "burned_in": [strings drawn]}}.

The same seed gives the same files byte for byte (DICOM; MP4/AVI too with one OpenCV build), and a
clip depends only on the seed and its index, so an archive of N clips is the first N clips of a
larger one with the same seed. Fault files (`faults=True`) come after the clean clips.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echofm.synth import faults as synthetic_faults
from echofm.synth.clip import LABEL_COLUMNS, MASK_NPZ_KEYS, label_row, worker_init, write_clip
from echofm.synth.containers import US_IMAGE_STORAGE, VARIANT_BY_NAME, VARIANTS, UltrasoundHeader, write_dicom, write_video
from echofm.synth.heart import ed_es_frames
from echofm.synth.phi import SyntheticStudy
from echofm.synth.plan import (
    ClipPlan,
    PatientSlot,
    SynthConfig,
    assign_path,
    build_header,
    plan_clip,
    plan_patients,
    render_plan,
)

log = logging.getLogger(__name__)

MIN_CLIPS_FULL_COVERAGE = len(VARIANTS)
# Options for a quick archive in tests: the smallest realistic size, low frame rates, 1 s clips.
# `generate_archive(tmp, MIN_CLIPS_FULL_COVERAGE, 0, faults=True, **SMALL_ARCHIVE_OPTIONS)` takes a
# few seconds and still covers every container variant and fault.
SMALL_ARCHIVE_OPTIONS: dict[str, Any] = {"sizes": ((480, 640),), "fps_range": (20, 30), "max_frames": 30}
__all__ = [
    "LABEL_COLUMNS",
    "MASK_NPZ_KEYS",
    "MIN_CLIPS_FULL_COVERAGE",
    "SMALL_ARCHIVE_OPTIONS",
    "ArchiveSummary",
    "SynthConfig",
    "generate_archive",
]


@dataclass(frozen=True)
class ArchiveSummary:
    """What `generate_archive` wrote and how long it took (seconds, wall clock)."""

    out_dir: Path
    archive_dir: Path
    labels_csv: Path
    labels_parquet: Path
    phi_json: Path
    n_clips: int
    n_faults: int
    seconds: float
    counts_by_variant: dict[str, int] = field(default_factory=dict)

    @property
    def n_files(self) -> int:
        return self.n_clips + self.n_faults


class _PhiLedger:
    """Collects every PHI string planted, by kind and per file."""

    KINDS = (
        "patient_names", "patient_name_parts", "patient_ids", "birth_dates", "accession_numbers", "institutions",
        "operators", "referring_physicians", "study_descriptions", "series_descriptions", "study_dates", "burned_in",
    )

    def __init__(self) -> None:
        self.kinds: dict[str, set[str]] = {k: set() for k in self.KINDS}
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, rel_path: str, header: UltrasoundHeader | None, burned_in: list[str]) -> None:
        entry: dict[str, Any] = {"burned_in": list(burned_in)}
        self.kinds["burned_in"].update(burned_in)
        if header is not None:
            values = {
                "patient_names": header.patient_name, "patient_ids": header.patient_id, "birth_dates": header.birth_date,
                "accession_numbers": header.accession, "institutions": header.institution, "operators": header.operator,
                "referring_physicians": header.referring, "study_descriptions": header.study_description,
                "study_dates": header.study_date,
            }
            if header.series_description is not None:
                values["series_descriptions"] = header.series_description
            for kind, value in values.items():
                self.kinds[kind].add(value)
            self.kinds["patient_name_parts"].update(header.patient_name.split("^"))
            entry["header"] = values
        self.files[rel_path] = entry

    def alias(self, rel_path: str, source: str) -> None:
        """`rel_path` holds the same bytes (hence the same PHI) as `source`."""
        self.files[rel_path] = self.files[source]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: sorted(v) for k, v in self.kinds.items()}
        # `all`: strings that identify someone; view descriptions such as "Apical 4 chamber" do not.
        out["all"] = sorted(set().union(*(self.kinds[k] for k in self.KINDS if k != "series_descriptions")))
        out["files"] = self.files
        return out


def _fault_row(base: dict[str, Any], fault: str, detail: str = "", **overrides: Any) -> dict[str, Any]:
    """A fault file's label row: the source clip's truth where it still applies, blanks elsewhere."""
    row = dict(base)
    row.update(fault=fault, fault_detail=detail, mask_file="")
    row.update(overrides)
    return row


def _blank_row(plan: ClipPlan, fault: str, detail: str, container: str) -> dict[str, Any]:
    row = {col: "" for col in LABEL_COLUMNS}
    row.update(
        file=plan.rel_path, clip_id=plan.clip_id, patient=plan.patient.key, study=f"{plan.patient.key}-{plan.study.folder}",
        ef=float("nan"), edv_ml=float("nan"), esv_ml=float("nan"), heart_rate_bpm=float("nan"), fps=float("nan"),
        duration_s=float("nan"), depth_cm=float("nan"), n_frames=None, height=None, width=None, planar_configuration=None,
        container=container, has_regions=False, regions_valid=True, fault=fault, fault_detail=detail,
    )
    return row


def _fault_plan(config: SynthConfig, k: int, kind: str, slots: list[tuple[PatientSlot, SyntheticStudy]]) -> ClipPlan:
    """A short, small clip (index past the clean clips) as the material of fault `k`, filed among the patients."""
    slot, study = slots[(3 * k + 1) % len(slots)]
    small = replace(config, sizes=(min(config.sizes),))
    plan = plan_clip(small, config.n_clips + k, slot, study)
    plan = replace(
        plan,
        variant=VARIANT_BY_NAME["mp4" if kind == "corrupt_video" else "explicit_le_mono2"],
        n_frames=min(plan.n_frames, 2 * plan.fps, 40),
        fps_tags=("FrameTime",),
        has_regions=False,
        regions_valid=True,
        ecg_region=False,
    )
    return assign_path(plan, slot, ".mp4" if kind == "corrupt_video" else ".dcm")


def _write_byte_fault(
    kind: str, archive: Path, plan: ClipPlan, rows: list[dict[str, Any]], phi: _PhiLedger
) -> dict[str, Any]:
    """Faults made of bytes alone: an empty file, a text file named .dcm, an exact duplicate."""
    path = archive / plan.rel_path
    if kind == "empty":
        synthetic_faults.write_empty(path)
    elif kind == "not_dicom":
        synthetic_faults.write_not_dicom(path)
    else:
        source = next((r for r in rows if r["variant"] == "explicit_le_mono2"), rows[0])
        synthetic_faults.write_duplicate(path, archive / source["file"])
        phi.alias(plan.rel_path, source["file"])
        detail = f"duplicate_of={source['file']}"
        return _fault_row(source, kind, detail, file=plan.rel_path, clip_id=plan.clip_id, mask_file=source["mask_file"])
    return _blank_row(plan, kind, "", "dicom")


def _write_clip_fault(
    kind: str, path: Path, plan: ClipPlan, config: SynthConfig, phi: _PhiLedger, rng: np.random.Generator
) -> dict[str, Any]:
    """Faults made from a rendered clip: truncated, CT, single frame, corrupt MP4, frozen, blank."""
    clip = render_plan(config, plan, ())
    header = build_header(config, plan, clip)
    ed, es = ed_es_frames(plan.n_frames, float(plan.fps), plan.heart)
    row = label_row(plan, clip, header, ed, es, "")
    no_ef = {"ef": float("nan"), "edv_ml": float("nan"), "esv_ml": float("nan"), "ed_frames": "", "es_frames": ""}
    if kind == "not_ultrasound":
        synthetic_faults.write_ct(path, header, rng)
        phi.add(plan.rel_path, header, [])
        return _blank_row(plan, kind, "CT image storage", "dicom")
    phi.add(plan.rel_path, header, clip.burned_in)
    if kind == "truncated":
        write_dicom(path, clip.frames, plan.variant, header)
        return _fault_row(row, kind, f"cut_to_bytes={synthetic_faults.truncate_file(path, 0.6)}")
    if kind == "single_frame":
        write_dicom(path, clip.frames[:1], plan.variant, header, sop_class=US_IMAGE_STORAGE)
        return _fault_row(row, kind, "US Image Storage", n_frames=1, fps=float("nan"), duration_s=float("nan"), fps_tag="default", **no_ef)
    if kind == "corrupt_video":
        source = path.with_name(path.stem + "_src.mp4")
        write_video(source, clip.frames, float(plan.fps), "mp4")
        synthetic_faults.write_corrupt_video(path, source, rng)
        source.unlink()
        return _fault_row(row, kind, "valid header then random bytes", fps_tag="container")
    if kind == "frozen":
        write_dicom(path, np.repeat(clip.frames[:1], plan.n_frames, axis=0), plan.variant, header)
        return _fault_row(row, kind, "all frames identical", **no_ef)
    if kind == "blank":
        write_dicom(path, np.zeros_like(clip.frames), plan.variant, header)
        return _fault_row(row, kind, "all pixels zero", **no_ef)
    raise ValueError(f"unknown fault kind {kind!r}")


def _write_faults(
    out_dir: Path,
    config: SynthConfig,
    slots: list[tuple[PatientSlot, SyntheticStudy]],
    rows: list[dict[str, Any]],
    phi: _PhiLedger,
) -> list[dict[str, Any]]:
    """One file of each kind in `synthetic_faults.FAULT_KINDS`, filed in the patients' study folders."""
    rng = np.random.default_rng([config.seed, 4])
    out: list[dict[str, Any]] = []
    for k, kind in enumerate(synthetic_faults.FAULT_KINDS):
        plan = _fault_plan(config, k, kind, slots)
        archive = out_dir / "archive"
        path = archive / plan.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind in ("empty", "not_dicom", "duplicate"):
            out.append(_write_byte_fault(kind, archive, plan, rows, phi))
        else:
            out.append(_write_clip_fault(kind, path, plan, config, phi, rng))
    return out


def generate_archive(out_dir: Path, n_clips: int, seed: int, faults: bool = False, **options: Any) -> ArchiveSummary:
    """Write a synthetic echo archive of `n_clips` clips (plus one file per fault kind with `faults`).

    `options` are the other `SynthConfig` fields (fps_range, duration_range_s, max_frames, hr_range,
    ef_range, sizes, views, clips_per_patient, mask_frames, workers); an unknown name raises TypeError.
    `MIN_CLIPS_FULL_COVERAGE` (12) clips cover every container variant. Raises FileExistsError when
    `out_dir/archive` already holds files, so two archives never mix.
    """
    config = SynthConfig(n_clips=n_clips, seed=seed, faults=faults, **options)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    archive = out_dir / "archive"
    if archive.exists() and any(archive.iterdir()):
        raise FileExistsError(f"{archive} is not empty; refusing to mix two archives")
    archive.mkdir(parents=True, exist_ok=True)
    (out_dir / "labels" / "masks").mkdir(parents=True, exist_ok=True)

    phi = _PhiLedger()
    slots = plan_patients(config, n_clips)
    # Paths are assigned here, in clip order, so the archive does not depend on the worker count.
    plans = [assign_path(plan_clip(config, index, slot, study), slot) for index, (slot, study) in enumerate(slots)]
    if config.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=config.workers, mp_context=ctx, initializer=worker_init) as pool:
            results = list(pool.map(write_clip, repeat(out_dir), repeat(config), plans, chunksize=2))
    else:
        results = [write_clip(out_dir, config, plan) for plan in plans]
    rows: list[dict[str, Any]] = []
    for plan, (row, header, burned_in) in zip(plans, results):
        rows.append(row)
        phi.add(plan.rel_path, header, burned_in)
    if faults:
        rows += _write_faults(out_dir, config, slots, rows, phi)

    labels = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    labels = labels.astype({"n_frames": "Int64", "height": "Int64", "width": "Int64", "planar_configuration": "Int64",
                            "has_regions": bool, "regions_valid": bool})
    labels.to_csv(out_dir / "labels.csv", index=False)
    labels.to_parquet(out_dir / "labels.parquet", index=False)
    (out_dir / "phi.json").write_text(json.dumps(phi.to_json(), indent=1, sort_keys=True), encoding="utf-8")
    seconds = time.perf_counter() - start
    n_faults = int((labels["fault"] != "").sum())
    counts = labels.loc[labels["fault"] == "", "variant"].value_counts().to_dict()
    log.info("synthetic archive: %d clips + %d fault files in %.1f s under %s", n_clips, n_faults, seconds, out_dir)
    return ArchiveSummary(
        out_dir=out_dir, archive_dir=archive, labels_csv=out_dir / "labels.csv", labels_parquet=out_dir / "labels.parquet",
        phi_json=out_dir / "phi.json", n_clips=n_clips, n_faults=n_faults, seconds=seconds,
        counts_by_variant={str(k): int(v) for k, v in counts.items()},
    )
