"""Per-clip quality control: each failed check is a named reason, each measure a manifest column.

Checks run in two steps so a file that cannot pass is never decoded: `header_qc` needs only the
header (frame count, duration, fps, size); `pixel_qc` needs the decoded, sector-masked frames
(blank, frozen, sector, saturated). Duplicates are decided by the batch and the run, which see more
than one clip (`pixel_sha256` gives them the exact content hash).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from echofm.ingest.config import QCThresholds

QC_REASONS: tuple[str, ...] = (
    "too_few_frames",
    "too_short",
    "fps_out_of_range",
    "too_small",
    "blank",
    "frozen",
    "no_sector",
    "sector_area_implausible",
    "saturated",
    "duplicate",
)
# Pixels at or above this level count as saturated (JPEG ringing keeps true whites near 255).
SATURATION_LEVEL = 250
MEASURE_MAX_SIDE = 256  # pixels: resolution the pixel measures are taken at (see measure_pixels)


@dataclass(frozen=True)
class PixelMetrics:
    """Measures over the sector of the decoded frames (grey levels 0-255, fractions in [0, 1])."""

    mean_intensity: float
    std_intensity: float
    motion_energy: float  # mean |difference| between consecutive decoded frames, grey levels
    saturated_fraction: float
    sector_area_fraction: float


@dataclass(frozen=True)
class QCResult:
    """reasons: named failures in check order (empty when the clip passes)."""

    reasons: tuple[str, ...]
    metrics: PixelMetrics | None = None

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str | None:
        """The first failure: what the manifest's `reason` column records."""
        return self.reasons[0] if self.reasons else None

    def metric_columns(self) -> dict[str, float | None]:
        """Manifest QC columns (`qc_` prefix), None when pixels were not measured."""
        names = PixelMetrics.__dataclass_fields__
        values = asdict(self.metrics) if self.metrics is not None else dict.fromkeys(names)
        return {f"qc_{name}": (None if value is None else float(value)) for name, value in values.items()}


def header_qc(
    *, n_frames: int, fps: float, height: int, width: int, thresholds: QCThresholds, still: bool = False
) -> tuple[str, ...]:
    """Failures decidable from the header alone, in order of how cheap they are to act on.

    fps in frames/s, duration = n_frames / fps; height/width in source pixels. A still image
    (`still`) has no time axis: only its size is checked.
    """
    reasons: list[str] = []
    if not still:
        if n_frames < thresholds.min_frames:
            reasons.append("too_few_frames")
        fps_ok = np.isfinite(fps) and thresholds.min_fps <= fps <= thresholds.max_fps
        if not fps_ok:
            reasons.append("fps_out_of_range")
        elif n_frames * 1000.0 / fps < thresholds.min_duration_ms:
            reasons.append("too_short")
    if height < thresholds.min_height or width < thresholds.min_width:
        reasons.append("too_small")
    return tuple(reasons)


def measure_pixels(frames: np.ndarray, mask: np.ndarray) -> PixelMetrics:
    """QC measures of uint8 frames `[T, H, W, C]` inside a bool sector mask `[H, W]`.

    Measured on a regular pixel grid of at most `MEASURE_MAX_SIDE` pixels per side: these are
    averages over hundreds of thousands of pixels, and a 1024 x 768 cine measured at full
    resolution costs more than decoding it. Colour clips are measured on their per-pixel channel
    maximum, so a saturated colour-flow jet counts and a dim grey clip is not rescued by one
    bright channel. `sector_area_fraction` uses the full-resolution mask.
    """
    area = float(mask.mean()) if mask.size else 0.0
    step = max(1, -(-max(frames.shape[1], frames.shape[2]) // MEASURE_MAX_SIDE))
    grid = frames[:, ::step, ::step]
    luma = grid.max(axis=3) if grid.shape[3] > 1 else grid[..., 0]
    inside_mask = mask[::step, ::step]
    inside = luma[:, inside_mask] if inside_mask.any() else luma.reshape(luma.shape[0], -1)
    if inside.size == 0:
        return PixelMetrics(0.0, 0.0, 0.0, 0.0, area)
    values = inside.astype(np.float32)
    mean = float(values.mean())
    # Spatial spread per frame, averaged: a uniform grey field has ~0 even if it flickers.
    std = float(values.std(axis=1).mean())
    motion = float(np.abs(np.diff(values, axis=0)).mean()) if values.shape[0] > 1 else 0.0
    saturated = float((inside >= SATURATION_LEVEL).mean())
    return PixelMetrics(mean, std, motion, saturated, area)


def pixel_qc(
    frames: np.ndarray, mask: np.ndarray, mask_method: str, thresholds: QCThresholds, *, still: bool = False
) -> QCResult:
    """Pixel checks on decoded frames `[T, H, W, C]` uint8 and the sector mask `[H, W]` bool.

    mask_method "none" means no sector was found (`no_sector` when the run requires one); the
    metrics are then taken over the whole frame. A still image is not `frozen`: it has no motion
    by nature.
    """
    metrics = measure_pixels(frames, mask if mask_method != "none" else np.ones(mask.shape, bool))
    reasons: list[str] = []
    # Blank and frozen come first: a pixel-based sector search fails on such clips too, and the
    # cause is what a user acts on.
    if metrics.mean_intensity <= thresholds.blank_max_mean or metrics.std_intensity <= thresholds.blank_max_std:
        reasons.append("blank")
    elif metrics.motion_energy <= thresholds.frozen_max_motion and not still:
        reasons.append("frozen")
    if mask_method == "none" or not mask.any():
        if thresholds.require_sector:
            reasons.append("no_sector")
    elif not thresholds.min_sector_area <= metrics.sector_area_fraction <= thresholds.max_sector_area:
        reasons.append("sector_area_implausible")
    if metrics.saturated_fraction > thresholds.max_saturated_fraction:
        reasons.append("saturated")
    return QCResult(tuple(reasons), metrics)


def pixel_sha256(frames: np.ndarray) -> str:
    """Exact content hash of decoded pixels `[T, H, W, C]` (shape included), for duplicates that
    differ in container or header but not in image content."""
    digest = hashlib.sha256(repr(frames.shape).encode())
    digest.update(np.ascontiguousarray(frames).data)
    return digest.hexdigest()


def run_qc(
    frames: np.ndarray,
    *,
    fps: float,
    n_frames_source: int,
    mask: np.ndarray,
    mask_method: str,
    thresholds: QCThresholds,
) -> QCResult:
    """Header and pixel checks of one decoded clip together (frames uint8 `[T, H, W, C]`, the
    decoded subset; `n_frames_source` and `fps` of the source file; mask bool `[H, W]`)."""
    early = header_qc(
        n_frames=n_frames_source, fps=fps, height=frames.shape[1], width=frames.shape[2], thresholds=thresholds
    )
    pixels = pixel_qc(frames, mask, mask_method, thresholds)
    return QCResult(early + pixels.reasons, pixels.metrics)
