"""One clean clip of the synthetic archive: render, write, save its LV masks, and its label row.

Kept apart from `synthetic.py` (which needs pandas) so the worker processes of a parallel archive
import only what one clip needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from echofm.synth.containers import UltrasoundHeader, write_dicom, write_video
from echofm.synth.heart import ed_es_frames
from echofm.synth.plan import ClipPlan, SynthConfig, build_header, render_plan
from echofm.synth.render import Box, RenderedClip

# labels.csv / labels.parquet, one row per file. Beyond the obvious: `file` is relative to OUT/archive
# and `mask_file` to OUT; `patient` is a label key (SYNnnnn), never PHI; `ef` = (EDV - ESV) / EDV * 100
# from the LV volume curve; `ed_frames` / `es_frames` are ";"-joined source frame indices; `fps_tag`
# is the frame-rate source a reader should report (FrameTime > FrameTimeVector > CineRate >
# RecommendedDisplayFrameRate, "container" for video, "default" when none); `view_tag` says where
# the header names the view (series_description | view_code | both | none); boxes are "x0;y0;x1;y1"
# inclusive pixels (`text_boxes` outside the fan and `fan_text_boxes` inside it joined by "|"); `sector_geometry` is "apex_x;apex_y;r0;r1;half_angle_deg";
# `fault` is "" for a clean clip, else a kind of `synthetic_faults.FAULT_KINDS`, with `fault_detail`.
LABEL_COLUMNS: tuple[str, ...] = (
    "file", "clip_id", "patient", "study", "view", "ef", "edv_ml", "esv_ml", "ed_frames", "es_frames",
    "heart_rate_bpm", "fps", "n_frames", "duration_s", "height", "width", "container", "variant",
    "transfer_syntax", "photometric", "planar_configuration", "fps_tag", "view_tag", "has_regions",
    "regions_valid", "fault", "fault_detail", "mask_file", "sector_box", "sector_geometry", "ecg_box",
    "colour_box", "text_boxes", "fan_text_boxes", "depth_cm",
)
# Keys of each mask file: `masks` uint8 [K, H, W] (1 = LV cavity, clipped to the fan),
# `frame_indices` int64 [K] (source frame of each mask), `is_ed` bool [K] (True at the labelled ED
# frames), `lv_area_px` float64 [T] and `lv_volume_ml` float64 [T] for every frame, `sector` uint8
# [H, W] (1 inside the fan). With mask_frames="ed_es" (default) K covers the ED and ES frames;
# with "all", K = T.
MASK_NPZ_KEYS: tuple[str, ...] = ("masks", "frame_indices", "is_ed", "lv_area_px", "lv_volume_ml", "sector")


def fmt_box(box: Box | None) -> str:
    """"x0;y0;x1;y1", or "" for no box."""
    return "" if box is None else ";".join(str(int(v)) for v in box)


def save_masks(out_dir: Path, plan: ClipPlan, clip: RenderedClip, ed: list[int]) -> str:
    """Write the clip's mask file (keys `MASK_NPZ_KEYS`); returns its path relative to `out_dir`."""
    rel = f"labels/masks/{plan.clip_id}.npz"
    np.savez_compressed(
        out_dir / rel,
        masks=clip.lv_masks,
        frame_indices=clip.mask_frames,
        is_ed=np.isin(clip.mask_frames, ed),
        lv_area_px=clip.lv_area_px,
        lv_volume_ml=clip.lv_volume_ml,
        sector=clip.sector,
    )
    return rel


def label_row(
    plan: ClipPlan, clip: RenderedClip | None, header: UltrasoundHeader | None, ed: list[int], es: list[int], mask_file: str
) -> dict[str, Any]:
    """The labels.csv row of a clip (keys `LABEL_COLUMNS`)."""
    heart, variant = plan.heart, plan.variant
    fan = clip.fan if clip is not None else None
    colour_dicom = variant.container == "dicom" and variant.colour and variant.photometric != "PALETTE COLOR"
    return {
        "file": plan.rel_path,
        "clip_id": plan.clip_id,
        "patient": plan.patient.key,
        "study": f"{plan.patient.key}-{plan.study.folder}",
        "view": plan.view,
        "ef": round(heart.ef, 3),
        "edv_ml": round(heart.edv_ml, 3),
        "esv_ml": round(heart.esv_ml, 3),
        "ed_frames": ";".join(map(str, ed)),
        "es_frames": ";".join(map(str, es)),
        "heart_rate_bpm": round(heart.heart_rate_bpm, 2),
        "fps": float(plan.fps),
        "n_frames": plan.n_frames,
        "duration_s": round(plan.n_frames / plan.fps, 4),
        "height": plan.height,
        "width": plan.width,
        "container": variant.container,
        "variant": variant.name,
        "transfer_syntax": variant.transfer_syntax,
        "photometric": variant.photometric,
        "planar_configuration": variant.planar if colour_dicom else None,
        "fps_tag": header.expected_fps_source if header is not None else "container",
        "view_tag": plan.view_tag,
        "has_regions": plan.has_regions,
        "regions_valid": plan.regions_valid,
        "fault": "",
        "fault_detail": "",
        "mask_file": mask_file,
        "sector_box": fmt_box(clip.sector_box) if clip is not None else "",
        "sector_geometry": (
            f"{fan.apex_x:.2f};{fan.apex_y:.2f};{fan.r0:.2f};{fan.r1:.2f};{math.degrees(fan.half_angle_rad):.3f}"
            if fan is not None
            else ""
        ),
        "ecg_box": fmt_box(clip.ecg_box) if clip is not None else "",
        "colour_box": fmt_box(clip.colour_box) if clip is not None else "",
        "text_boxes": "|".join(fmt_box(b) for b in clip.text_boxes) if clip is not None else "",
        "fan_text_boxes": "|".join(fmt_box(b) for b in clip.fan_text_boxes) if clip is not None else "",
        "depth_cm": round(plan.depth_cm, 3),
    }


def write_clip(out_dir: Path, config: SynthConfig, plan: ClipPlan) -> tuple[dict[str, Any], UltrasoundHeader | None, list[str]]:
    """Render, write and label one clean clip. Returns its label row, header and burned-in strings.

    A top-level function of picklable arguments, so worker processes can run it.
    """
    ed, es = ed_es_frames(plan.n_frames, float(plan.fps), plan.heart)
    clip = render_plan(config, plan, None if config.mask_frames == "all" else ed + es)
    header = build_header(config, plan, clip) if plan.variant.container == "dicom" else None
    path = out_dir / "archive" / plan.rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if header is not None:
        write_dicom(path, clip.frames, plan.variant, header)
    else:
        write_video(path, clip.frames, float(plan.fps), plan.variant.container)
    mask_file = save_masks(out_dir, plan, clip, ed)
    return label_row(plan, clip, header, ed, es, mask_file), header, clip.burned_in


def worker_init() -> None:
    """Initializer of the worker processes of a parallel archive."""
    # One OpenCV thread per worker process: the processes already use the cores.
    cv2.setNumThreads(1)
