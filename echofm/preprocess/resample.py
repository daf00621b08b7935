"""Cut clips in time by timestamps and bring frames to a square size without distorting them.

Time: a clip is `num_frames` instants spread evenly over a window of fixed duration, each taken
from the source frame nearest to it. A 30 fps and a 90 fps recording of the same heart therefore
give clips with the same temporal scale (the same milliseconds per output frame), which taking
"the first 32 frames" does not: that would be 1.07 s of one and 0.36 s of the other.

The window is, in order of precedence:

1. `window_ms` when the caller gives one (a run-level choice);
2. one cardiac cycle, `60000 / heart_rate_bpm` ms, when the heart rate is known and plausible
   (`HEART_RATE_RANGE_BPM`; header junk such as 0 or 999 is ignored, not trusted);
3. `DEFAULT_WINDOW_MS` = 1280 ms. That is the span EchoNet-Dynamic's 32-frame clips cover (every
   2nd frame of ~50 fps video): about one cardiac cycle at resting rates (a full cycle for heart
   rates >= 47 bpm, so end-diastole and end-systole both fall inside), sampled every 40 ms
   (25 Hz), close to the frame rate of most clinical cines, so few source frames are dropped or
   repeated. A 2 s window would halve the temporal resolution (62.5 ms spacing, too coarse for
   valve motion) and reject or distort the many cines recorded as a single beat.

Space: `resize_pad` scales the longer side to `size` and pads the shorter one with zeros,
centred, so the sector keeps its geometry and the padding is indistinguishable from the zeroed
exterior of the sector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from echofm.errors import PreprocessError
from echofm.preprocess.area import area_plan, area_shrink

DEFAULT_NUM_FRAMES = 32
DEFAULT_WINDOW_MS = 1280.0
DEFAULT_MIN_COVERAGE = 0.25
DEFAULT_SIZE = 224
HEART_RATE_RANGE_BPM = (20.0, 300.0)


class ResampleInputError(PreprocessError, ValueError):
    """Arguments or frames outside the documented ranges (a caller bug, not bad data)."""


def window_duration_ms(*, window_ms: float | None = None, heart_rate_bpm: float | None = None) -> float:
    """Duration in ms of one clip window (see the module docstring for the precedence)."""
    if window_ms is not None:
        if not (math.isfinite(window_ms) and window_ms > 0):
            raise ResampleInputError(f"window_ms must be a positive number of ms, got {window_ms}")
        return float(window_ms)
    if heart_rate_bpm is not None and math.isfinite(heart_rate_bpm):
        low, high = HEART_RATE_RANGE_BPM
        if low <= heart_rate_bpm <= high:
            return 60000.0 / float(heart_rate_bpm)
    return DEFAULT_WINDOW_MS


def plan_windows(
    n_frames_source: int,
    fps: float,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    window_ms: float | None = None,
    heart_rate_bpm: float | None = None,
    max_windows: int = 1,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
) -> list[np.ndarray]:
    """Source frame indices of each clip cut from a cine, chosen by timestamps.

    Source frame `i` is shown at `i * 1000 / fps` ms and the cine lasts `n_frames_source * 1000 /
    fps` ms. A window of `W` ms starting at `s` samples the instants `s + k * W / num_frames`,
    k = 0..num_frames-1, and takes the nearest source frame of each.

    Long cines yield `floor(duration / W)` back-to-back, non-overlapping windows from the start,
    at most `max_windows`; a trailing part shorter than a window is left out.

    A cine shorter than one window is used whole: the instants are spread over its full duration,
    so the clip plays faster than real time by `W / duration` and, when the cine has fewer than
    `num_frames` frames, source frames repeat. That distortion is why the ingestion QC should
    reject cines much shorter than the window (`too_short`: below about half of it keeps the
    speed-up under 2x). As a last guard, a cine covering less than `min_coverage` of the window
    yields no window at all (an empty list), which the caller must record as rejected.

    Returns: a list of int64 arrays `[num_frames]`, non-decreasing, each within
    `[0, n_frames_source)`; empty only below `min_coverage`.
    Raises: `ResampleInputError` for a non-positive frame count, fps, num_frames or max_windows,
    or `min_coverage` outside (0, 1].
    """
    if n_frames_source < 1:
        raise ResampleInputError(f"n_frames_source must be >= 1, got {n_frames_source}")
    if not (math.isfinite(fps) and fps > 0):
        raise ResampleInputError(f"fps must be a positive number, got {fps}")
    if num_frames < 1 or max_windows < 1:
        raise ResampleInputError("num_frames and max_windows must be >= 1")
    if not 0.0 < min_coverage <= 1.0:
        raise ResampleInputError(f"min_coverage must lie in (0, 1], got {min_coverage}")

    window = window_duration_ms(window_ms=window_ms, heart_rate_bpm=heart_rate_bpm)
    frame_ms = 1000.0 / fps
    duration = n_frames_source * frame_ms
    # A small tolerance so that a cine of exactly N windows (up to float error) yields N windows.
    eps = 1e-9 * max(duration, window)

    if duration + eps < window:
        if duration + eps < min_coverage * window:
            return []
        return [_sample_window(0.0, duration, num_frames, frame_ms, n_frames_source)]

    n_windows = min(max_windows, int((duration + eps) // window))
    return [
        _sample_window(w * window, window, num_frames, frame_ms, n_frames_source) for w in range(n_windows)
    ]


def _sample_window(start_ms: float, span_ms: float, num_frames: int, frame_ms: float, n_source: int) -> np.ndarray:
    instants = start_ms + np.arange(num_frames, dtype=np.float64) * (span_ms / num_frames)
    # floor(x + 0.5) rounds halves up consistently (np.rint would round them to even).
    indices = np.floor(instants / frame_ms + 0.5).astype(np.int64)
    return np.clip(indices, 0, n_source - 1)


def window_span_ms(indices: np.ndarray, fps: float) -> tuple[float, float]:
    """Start and end in ms of the source time a window covers: from its first frame's timestamp
    to the end of its last frame's display interval (`(last + 1) * 1000 / fps`)."""
    if len(indices) == 0:
        raise ResampleInputError("a window has at least one frame")
    frame_ms = 1000.0 / fps
    return float(indices[0]) * frame_ms, float(indices[-1] + 1) * frame_ms


def union_indices(windows: Sequence[np.ndarray]) -> np.ndarray:
    """Sorted unique source frame indices used by any window: int64 `[K]`.

    Decode only these; `np.searchsorted(union, window)` maps a window to rows of the decoded stack.
    """
    if not windows:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([np.asarray(w, dtype=np.int64) for w in windows]))


def resize_pad(frames: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Fit frames into `size` x `size` pixels keeping the aspect ratio, zero padding centred.

    frames: uint8 `[T, H, W, C]`, C = 1 or 3. Returns uint8 `[T, size, size, C]` (C preserved).
    Shrinking uses area interpolation (no aliasing of speckle; OpenCV's `INTER_AREA` values, at
    sizes such as 800 x 600 computed exactly by `echofm.preprocess.area`);
    enlarging uses bilinear.
    Raises `ResampleInputError` for another dtype or shape.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ResampleInputError(f"frames must be uint8 [T, H, W, C] with C in (1, 3), got {frames.dtype} {frames.shape}")
    if size < 1:
        raise ResampleInputError(f"size must be >= 1, got {size}")
    t, h, w, c = frames.shape
    if h < 1 or w < 1:
        raise ResampleInputError(f"frames have an empty image: {frames.shape}")
    scale = size / max(h, w)
    new_h = min(size, max(1, round(h * scale)))
    new_w = min(size, max(1, round(w * scale)))
    out = np.zeros((t, size, size, c), dtype=np.uint8)
    top = (size - new_h) // 2
    left = (size - new_w) // 2
    if (new_h, new_w) == (h, w):
        out[:, top : top + h, left : left + w] = frames
        return out
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    plan = area_plan((h, w), (new_h, new_w)) if interpolation == cv2.INTER_AREA else None
    if plan is not None:
        # Each channel on its own: the exact sums are OpenCV's value channel by channel.
        for channel in range(c):
            area_shrink(frames[..., channel], out[:, top : top + new_h, left : left + new_w, channel], plan)
        return out
    if c == 1 and interpolation == cv2.INTER_AREA:
        _area_resize_grey(frames, out[:, top : top + new_h, left : left + new_w, 0])
        return out
    for i in range(t):
        resized = cv2.resize(frames[i], (new_w, new_h), interpolation=interpolation)
        # cv2 drops a single channel axis; reshape restores it for C = 1 and is a no-op for C = 3.
        out[i, top : top + new_h, left : left + new_w] = resized.reshape(new_h, new_w, c)
    return out


# Grey frames are area-resized four at a time as the channels of one image: OpenCV's area
# resampler computes every channel with the same weights in the same order, so each channel is
# exactly the single-frame result, and its per-pixel table walk is shared by four frames (about a
# quarter less CPU than one call per frame, merge included; docs/benchmarks.md, ingestion).
_STACKED_FRAMES = 4


def _area_resize_grey(frames: np.ndarray, out: np.ndarray) -> None:
    """Area-resize uint8 `[T, H, W, 1]` into the uint8 view `out` `[T, h, w]`."""
    size = (out.shape[2], out.shape[1])
    for start in range(0, len(frames), _STACKED_FRAMES):
        group = frames[start : start + _STACKED_FRAMES, :, :, 0]
        if len(group) == 1:
            out[start] = cv2.resize(group[0], size, interpolation=cv2.INTER_AREA)
            continue
        resized = cv2.resize(cv2.merge(list(group)), size, interpolation=cv2.INTER_AREA)
        out[start : start + len(group)] = np.moveaxis(resized, -1, 0)


def mask_at_size(mask: np.ndarray, size: int, *, whole: bool) -> np.ndarray:
    """A bool mask `[H, W]` mapped to the output size `[size, size]` as `resize_pad` maps frames.

    whole=True: an output pixel is True only when its whole footprint lies inside `mask` (a sector
    mask: no output pixel mixes in what lies outside the sector). whole=False: True when any part
    of its footprint does (an overlay mask: no output pixel mixes in any overlay pixel).
    """
    # 0/255 straight from the bool's bytes (no intermediate 0/1 copy): identical values.
    levels = np.ascontiguousarray(mask, dtype=bool).view(np.uint8) * np.uint8(255)
    coverage = resize_pad(levels[None, :, :, None], size=size)[0, :, :, 0]
    return coverage == 255 if whole else coverage > 0
