"""Planning of the synthetic archive: configuration, patients and studies, and each clip's parameters.

Everything random is drawn from generators seeded by (archive seed, purpose, index), so a clip's
parameters depend only on the seed and its index, never on how many clips come after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from pydicom.uid import generate_uid

from echofm.synth.containers import ContainerVariant, RegionSpec, UltrasoundHeader, variant_for_clip
from echofm.synth.heart import VIEWS, HeartParams
from echofm.synth.phi import SyntheticPatient, SyntheticStudy, make_patient, make_study
from echofm.synth.render import Overlay, RenderedClip, render_clip

VIEW_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "A4C": ("Apical 4 chamber", "A4C 2D", "apical four chamber"),
    "A2C": ("Apical 2 chamber", "A2C 2D", "apical two chamber"),
    "A3C": ("Apical 3 chamber", "A3C 2D", "apical long axis"),
    "PLAX": ("Parasternal long axis", "PLAX 2D", "parasternal long axis"),
    "PSAX": ("Parasternal short axis", "PSAX 2D", "parasternal short axis mid"),
}
# SNOMED CT codes of DICOM CID 12226 (Echocardiography Image View).
VIEW_CODES: dict[str, tuple[str, str, str]] = {
    "A4C": ("399214001", "SCT", "Apical four chamber"),
    "A2C": ("399232001", "SCT", "Apical two chamber"),
    "A3C": ("399339008", "SCT", "Apical long axis"),
    "PLAX": ("399139001", "SCT", "Parasternal long axis"),
    "PSAX": ("399306005", "SCT", "Parasternal short axis"),
}
VIEW_TAGS: tuple[str, ...] = ("series_description", "view_code", "both", "none")
FPS_TAG_SETS: tuple[tuple[str, ...], ...] = (
    ("FrameTime",),
    ("CineRate",),
    ("FrameTime", "CineRate"),
    ("FrameTimeVector",),
    ("RecommendedDisplayFrameRate",),
    ("FrameTime", "RecommendedDisplayFrameRate"),
)
# Drawn uniformly from this list: 480x640 and 600x800 (the commonest export sizes) weigh double.
SIZES: tuple[tuple[int, int], ...] = ((480, 640), (480, 640), (600, 800), (600, 800), (576, 768), (720, 960), (768, 1024))
# Variants that are slow to encode or large on disk (uncompressed colour is 3 bytes a pixel) get the
# smallest size, a low frame rate and the shortest duration, so an archive stays quick to write.
COMPACT_VARIANTS: frozenset[str] = frozenset(
    {"j2k_mono2", "rle_rgb", "explicit_le_rgb_planar0", "explicit_be_rgb_planar1", "explicit_le_ybr_full"}
)
COMPACT_MAX_FPS = 24


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """What to generate. Ranges are inclusive; sizes are (height, width) in pixels."""

    n_clips: int
    seed: int
    faults: bool = False
    fps_range: tuple[int, int] = (20, 90)
    duration_range_s: tuple[float, float] = (1.0, 4.0)
    max_frames: int = 64  # caps the duration of high-frame-rate clips (never below 1 s)
    hr_range: tuple[float, float] = (50.0, 120.0)
    ef_range: tuple[float, float] = (20.0, 75.0)
    sizes: tuple[tuple[int, int], ...] = SIZES
    views: tuple[str, ...] = VIEWS
    clips_per_patient: tuple[int, int] = (2, 4)
    mask_frames: str = "ed_es"  # "ed_es": masks of the labelled ED/ES frames; "all": every frame
    workers: int = 1  # processes writing clips; the files do not depend on it

    def __post_init__(self) -> None:
        if self.n_clips < 1:
            raise ValueError(f"n_clips must be >= 1, got {self.n_clips}")
        if not 1 <= self.fps_range[0] <= self.fps_range[1]:
            raise ValueError(f"bad fps_range {self.fps_range}")
        if not 0.0 < self.duration_range_s[0] <= self.duration_range_s[1]:
            raise ValueError(f"bad duration_range_s {self.duration_range_s}")
        if not 30.0 <= self.hr_range[0] <= self.hr_range[1] <= 200.0:
            raise ValueError(f"bad hr_range {self.hr_range}")
        if not 5.0 <= self.ef_range[0] <= self.ef_range[1] <= 85.0:
            raise ValueError(f"bad ef_range {self.ef_range}")
        if not self.sizes or any(h < 240 or w < 320 or h % 2 or w % 2 for h, w in self.sizes):
            raise ValueError(f"sizes must be even and at least 240x320, got {self.sizes}")
        unknown = set(self.views) - set(VIEWS)
        if not self.views or unknown:
            raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {self.views}")
        if not 1 <= self.clips_per_patient[0] <= self.clips_per_patient[1]:
            raise ValueError(f"bad clips_per_patient {self.clips_per_patient}")
        if self.mask_frames not in ("ed_es", "all"):
            raise ValueError(f"mask_frames must be 'ed_es' or 'all', got {self.mask_frames!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2, got {self.max_frames}")


@dataclass(frozen=True, kw_only=True)
class ClipPlan:
    """Everything sampled for one clip before rendering."""

    index: int
    clip_id: str
    rel_path: str
    patient: SyntheticPatient
    study: SyntheticStudy
    instance: int
    variant: ContainerVariant
    view: str
    heart: HeartParams
    fps: int
    n_frames: int
    height: int
    width: int
    depth_cm: float
    gain_db: float
    fps_tags: tuple[str, ...]
    view_tag: str
    has_regions: bool
    regions_valid: bool
    ecg_region: bool
    heart_rate_tag: bool


@dataclass
class PatientSlot:
    """A patient while the archive is planned: their PHI, studies, heart, and next instance number per study."""

    patient: SyntheticPatient
    studies: list[SyntheticStudy]
    ef: float
    edv_ml: float
    next_instance: dict[str, int] = field(default_factory=dict)


def plan_patients(config: SynthConfig, n_clips: int) -> list[tuple[PatientSlot, SyntheticStudy]]:
    """One (patient, study) per clip, in order: each patient gets 2-4 clips over one or two studies."""
    out: list[tuple[PatientSlot, SyntheticStudy]] = []
    p = 0
    while len(out) < n_clips:
        rng = np.random.default_rng([config.seed, 1, p])
        patient = make_patient(p, rng)
        k = int(rng.integers(config.clips_per_patient[0], config.clips_per_patient[1] + 1))
        n_studies = 2 if k >= 3 and rng.random() < 0.5 else 1
        studies = [make_study(p, s + 1, rng, config.hr_range) for s in range(n_studies)]
        ef = float(rng.uniform(*config.ef_range))
        # Reduced EF comes with a dilated ventricle.
        edv = float(rng.uniform(85.0, 150.0) + max(0.0, 50.0 - ef) * 2.0)
        slot = PatientSlot(patient=patient, studies=studies, ef=ef, edv_ml=edv)
        for j in range(k):
            out.append((slot, studies[min(j * n_studies // k, n_studies - 1)]))
        p += 1
    return out[:n_clips]


def plan_clip(config: SynthConfig, index: int, slot: PatientSlot, study: SyntheticStudy) -> ClipPlan:
    """Sample clip `index`: container variant, view, heart, timing, size, and which tags it carries.

    Tag choices cycle with periods that are not multiples of the variant cycle, so across an
    archive every variant meets every frame-rate tag, view tag and region case.
    """
    rng = np.random.default_rng([config.seed, 2, index])
    variant = variant_for_clip(index)
    # Every block of len(views) clips shows every view; the shift per block keeps views from
    # locking onto variants (the weighted variant pattern has period 20).
    view = config.views[(index + index // len(config.views)) % len(config.views)]
    compact = variant.name in COMPACT_VARIANTS
    if compact:
        height, width = min(config.sizes)
        fps = int(rng.integers(config.fps_range[0], max(config.fps_range[0], min(COMPACT_MAX_FPS, config.fps_range[1])) + 1))
    else:
        height, width = config.sizes[int(rng.integers(0, len(config.sizes)))]
        lo, hi = config.fps_range
        fps = int(round(lo + (hi - lo) * float(rng.random()) ** 2.5))  # most clips 20-50 fps, a few up to 90
    hr = float(np.clip(study.heart_rate_bpm + rng.normal(0.0, 2.0), *config.hr_range))
    ef = float(np.clip(slot.ef + rng.normal(0.0, 1.5), config.ef_range[0] - 2.0, config.ef_range[1] + 2.0))
    edv = slot.edv_ml * float(rng.uniform(0.97, 1.03))
    systole = float(np.clip(0.33 + 0.0012 * (hr - 60.0), 0.3, 0.45))
    # Start late in diastole so every clip of at least one second holds an ED and an ES frame.
    heart = HeartParams(
        heart_rate_bpm=hr, edv_ml=edv, esv_ml=edv * (1.0 - ef / 100.0), systole_fraction=systole,
        phase0=float(rng.uniform(0.65, 0.97)),
    )
    beats = int(rng.choice([1, 2, 3, 4], p=[0.6, 0.25, 0.1, 0.05]))
    lo_d, hi_d = config.duration_range_s
    duration = float(np.clip(beats * heart.period_s + 0.1, lo_d, hi_d))
    if compact:
        duration = lo_d
    elif duration * fps > config.max_frames:
        duration = max(lo_d, config.max_frames / fps)
    n_frames = max(2, int(math.ceil(duration * fps - 1e-9)))
    depth = float(rng.uniform(15.0, 18.0) if view in ("A4C", "A2C", "A3C") else rng.uniform(13.0, 16.0))
    is_dicom = variant.container == "dicom"
    # Tag choices cycle with periods coprime with the variant pattern's 20, so every variant meets
    # every frame-rate tag, view tag and region case over an archive; the first 12 clips cover each.
    has_regions = is_dicom and index % 3 != 2
    return ClipPlan(
        index=index,
        clip_id="",
        rel_path="",
        patient=slot.patient,
        study=study,
        instance=0,
        variant=variant,
        view=view,
        heart=heart,
        fps=fps,
        n_frames=n_frames,
        height=height,
        width=width,
        depth_cm=depth,
        gain_db=float(rng.uniform(-5.0, 5.0)),
        fps_tags=FPS_TAG_SETS[(index + index // 7) % len(FPS_TAG_SETS)] if is_dicom else (),
        view_tag=VIEW_TAGS[(index + index // 9) % len(VIEW_TAGS)] if is_dicom else "none",
        has_regions=has_regions,
        regions_valid=not (has_regions and index % 7 == 6),
        ecg_region=has_regions and index % 11 % 2 == 0,
        heart_rate_tag=is_dicom and index % 13 % 3 == 0,
    )


def assign_path(plan: ClipPlan, slot: PatientSlot, suffix: str | None = None) -> ClipPlan:
    """Give the plan its instance number and file name inside the patient's study folder."""
    number = slot.next_instance.get(plan.study.folder, 1)
    slot.next_instance[plan.study.folder] = number + 1
    ext = suffix if suffix is not None else plan.variant.extension
    rel = f"{plan.patient.folder}/{plan.study.folder}/IM_{number:04d}{ext}"
    clip_id = f"{plan.patient.folder}_{plan.study.folder}_IM_{number:04d}"
    return replace(plan, instance=number, rel_path=rel, clip_id=clip_id)


def _overlay(plan: ClipPlan, rng: np.random.Generator) -> Overlay:
    """Burned-in annotations: institution, name, ID, date (and on every other clip the birth date);
    on every third clip measurements inside the fan (a distance label and calipers, on every
    sixth a label across the fan's edge too). The measurements are made-up distances, never a
    label of the clip (an EF burned into the pixels would leak the target)."""
    p, s = plan.patient, plan.study
    right = [f"ID: {p.patient_id}", s.burned_date]
    if plan.index % 2 == 0:
        right.append(f"DOB {p.birth_date.strftime('%d/%m/%Y')}")
    measured = plan.index % 3 == 1
    return Overlay(
        header_left=(p.institution, p.display_name),
        header_right=tuple(right),
        side_left=("2D", f"G {int(rng.integers(40, 70))}", f"DR {int(rng.integers(45, 70))}", f"FR {plan.fps}Hz"),
        side_right=(f"{plan.depth_cm:.0f}cm", f"{rng.choice(['1.7/3.4', '1.5/3.0', '2.0/4.0'])}MHz", f"HR {plan.heart.heart_rate_bpm:.0f}"),
        annotations=(f"D1 {0.27 * plan.depth_cm:.2f}cm",) if measured else (),
        edge_label=f"D2 {0.09 * plan.depth_cm:.2f}cm" if measured and plan.index % 6 == 4 else None,
        calipers=measured,
    )


def _uid(config: SynthConfig, *parts: object) -> str:
    return str(generate_uid(entropy_srcs=["echofm-synth", str(config.seed), *map(str, parts)]))


def _regions(plan: ClipPlan, clip: RenderedClip) -> tuple[RegionSpec, ...]:
    if not plan.has_regions:
        return ()
    cm_per_px = 1.0 / clip.fan.px_per_cm
    x0, y0, x1, y1 = clip.sector_box
    if not plan.regions_valid:
        # Real files do this: a region that runs past the image edge.
        x0, y0, x1, y1 = 0, 0, plan.width + plan.width // 4, plan.height + plan.height // 8
    tissue = RegionSpec(
        x0=x0, y0=y0, x1=x1, y1=y1, delta_x=round(cm_per_px, 6), delta_y=round(cm_per_px, 6),
        reference_x=int(round(clip.fan.apex_x - x0)), reference_y=int(round(clip.fan.apex_y - y0)),
    )
    regions = [tissue]
    if plan.ecg_region and clip.ecg_box is not None:
        ex0, ey0, ex1, ey1 = clip.ecg_box
        seconds_per_px = (plan.n_frames / plan.fps) / max(1, ex1 - ex0)
        regions.append(
            RegionSpec(x0=ex0, y0=ey0, x1=ex1, y1=ey1, spatial_format=4, data_type=9, units=4, delta_x=round(seconds_per_px, 6))
        )
    return tuple(regions)


def build_header(config: SynthConfig, plan: ClipPlan, clip: RenderedClip) -> UltrasoundHeader:
    """The DICOM header of a planned clip; regions come from the rendered fan."""
    p, s = plan.patient, plan.study
    desc = None
    if plan.view_tag in ("series_description", "both"):
        options = VIEW_DESCRIPTIONS[plan.view]
        desc = options[plan.index % len(options)]
    return UltrasoundHeader(
        patient_name=p.dicom_name,
        patient_id=p.patient_id,
        birth_date=p.birth_date.strftime("%Y%m%d"),
        sex=p.sex,
        study_uid=_uid(config, "study", p.folder, s.folder),
        series_uid=_uid(config, "series", plan.rel_path),
        sop_uid=_uid(config, "sop", plan.rel_path),
        study_date=s.dicom_date,
        study_time=s.time,
        accession=s.accession,
        study_description=s.description(p),
        institution=p.institution,
        operator=s.operator,
        referring=s.referring,
        manufacturer=s.manufacturer,
        model=s.model,
        series_number=plan.instance,
        instance_number=1,
        fps=float(plan.fps),
        fps_tags=plan.fps_tags,
        series_description=desc,
        view_code=VIEW_CODES[plan.view] if plan.view_tag in ("view_code", "both") else None,
        heart_rate_bpm=int(round(plan.heart.heart_rate_bpm)) if plan.heart_rate_tag else None,
        regions=_regions(plan, clip),
    )


def render_plan(
    config: SynthConfig,
    plan: ClipPlan,
    mask_frames: Sequence[int] | None = None,
    *,
    annotate: Callable[[Overlay], Overlay] | None = None,
    draw_text: bool = True,
    ecg_gap: int | None = None,
) -> RenderedClip:
    """Render the pixels of a planned clip (frames, LV masks of `mask_frames` or all, fan and overlays).

    annotate: changes the clip's burned-in overlay (e.g. more labels inside the fan); draw_text
    and ecg_gap as in `render_clip`. Neither changes the random numbers drawn, so a clip rendered
    with `draw_text=False` is the text-free twin of the same clip.
    """
    rng = np.random.default_rng([config.seed, 3, plan.index])
    overlay = _overlay(plan, rng)
    return render_clip(
        view=plan.view, heart=plan.heart, height=plan.height, width=plan.width, n_frames=plan.n_frames,
        fps=float(plan.fps), depth_cm=plan.depth_cm, gain_db=plan.gain_db,
        overlay=annotate(overlay) if annotate is not None else overlay, colour=plan.variant.colour, rng=rng,
        speckle_seed=config.seed, mask_frames=mask_frames, draw_text=draw_text, ecg_gap=ecg_gap,
    )
