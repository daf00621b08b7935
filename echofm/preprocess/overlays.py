"""Static overlays inside the sector: measurement labels, calipers, markers burned into the fan.

Scanners draw annotations onto the image plane: a measurement ("LVIDd 4.8cm") over the
ventricle, caliper crosses joined by a dotted line, a label across the fan's edge. They do not
change from frame to frame while the tissue under them does, and that is the evidence used here
(per pixel, over up to `max_frames` frames sampled evenly from the clip, on the per-pixel
maximum over the colour channels, so yellow or green graphics count like white ones):

1. Bit-exact: a pixel whose value is identical in every sampled frame (and not black) is an
   overlay. Tissue never is: speckle, motion and noise change every pixel of a live image.
   This holds for every losslessly stored cine (native, RLE, JPEG-LS, lossless JPEG 2000).
   Groups of steady pixels that change by a few levels at most (`near_exact_spread`) anchor
   too: the full-weight pixels of an anti-aliased glyph keep a trace of the tissue under them.
2. Lossy sources (JPEG baseline, MP4/AVI, or a header saying the pixels were once lossy
   compressed) add codec noise to static pixels, so a pixel is also an overlay when it is
   brighter than the tissue around it (mean over time minus the local mean of non-overlay
   pixels, `local_window` square) and far steadier than that contrast or than the tissue around
   it: mean absolute frame-to-frame change below `steady_per_contrast` x contrast (high
   contrast) or below `steady_per_activity` x the local change (overlays over moving tissue).
   Lossy candidates need `min_lossy_pixels` connected pixels or a neighbour within
   `support_px` (a decimal point beside its digits).

What is found is then grown by `grow_px` pixels into neighbours whose temporal minimum is raised
by at least `fringe_contrast` over the local tissue minimum, then by `halo_px` 8-connected rings
into pixels raised by `halo_contrast` that move with at most `halo_damping` of the local tissue's
change: the blended edge of anti-aliased glyphs. In lossless sources a group of found pixels that
is at least `bitmap_exact_share` bit-exact is a bitmap glyph (no blended edge) and is not grown:
what borders it is tissue. Everything found is removed by `remove_overlays` (inpainted from the surrounding tissue)
before a clip is stored; ingestion also zeroes everything outside the sector.

Known limits (measured in docs/deid.md): the faintest edge pixels of anti-aliased glyphs (a
tenth or so of the glyph's level over the tissue) are neither steady nor raised beyond what static
speckle shows, and a plain ring around every glyph would take more than 1% of the tissue;
black overlays (value 0) cannot be told from black tissue; an overlay present in only some
frames (a label that appears mid-clip) is not static.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, kw_only=True)
class OverlayConfig:
    """Parameters of the static-overlay search (pixels at source resolution, grey levels 0-255)."""

    max_frames: int = 16  # frames sampled evenly for the temporal statistics
    local_window: int = 15  # pixels: side of the square the local tissue statistics come from
    min_contrast: float = 15.0  # grey levels an overlay is brighter than the tissue around it
    high_contrast: float = 40.0
    steady_per_contrast: float = 0.2  # at high contrast: change below this share of the contrast
    steady_per_activity: float = 0.15  # over moving tissue: change below this share of the local change
    steady_floor: float = 0.5  # grey levels of change always counted as steady
    min_lossy_pixels: int = 2
    support_px: int = 6
    anchor_px: int = 10  # lossless sources: steady pixels this close to bit-exact ones count
    grow_px: int = 1
    fringe_contrast: float = 8.0
    fringe_window: int = 7
    halo_px: int = 1  # a second, 8-connected ring into strongly raised, damped pixels
    halo_contrast: float = 50.0
    halo_damping: float = 0.6  # change at most this share of the local tissue's
    near_exact_spread: int = 4  # lossless anchors: steady groups changing at most this much ...
    near_exact_pixels: int = 4  # ... of at least this many pixels ...
    near_exact_high: int = 250  # ... below this level (see _near_exact_groups)
    bitmap_exact_share: float = 0.9  # lossless groups at least this exact are bitmap glyphs: not grown

    def __post_init__(self) -> None:
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2, got {self.max_frames}")
        for name in ("local_window", "fringe_window"):
            if getattr(self, name) < 3 or getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be an odd number >= 3")
        if min(self.grow_px, self.halo_px, self.support_px, self.anchor_px) < 0 or self.min_lossy_pixels < 1:
            raise ValueError("grow_px, halo_px, support_px and anchor_px must be >= 0, min_lossy_pixels >= 1")
        if not 0.0 < self.bitmap_exact_share <= 1.0 or self.halo_damping < 0:
            raise ValueError("bitmap_exact_share must be in (0, 1], halo_damping >= 0")


def _luminance_max(frames: np.ndarray) -> np.ndarray:
    """uint8 `[n, h, w]`: the largest channel of each pixel (coloured graphics stay bright)."""
    if frames.shape[-1] == 1:
        return np.ascontiguousarray(frames[..., 0])
    return np.maximum(np.maximum(frames[..., 0], frames[..., 1]), frames[..., 2])


def _local_count(weight: np.ndarray, window: int) -> np.ndarray:
    """The share of `weight` pixels (0 or 1) in each `window` square, at least 1e-3."""
    return np.maximum(cv2.blur(weight, (window, window), borderType=cv2.BORDER_CONSTANT), 1e-3)


def _local_mean(values: np.ndarray, weight: np.ndarray, window: int, count: np.ndarray | None = None) -> np.ndarray:
    """Mean of `values` over a `window` square counting only pixels where `weight` is 1; `count`
    is `_local_count(weight, window)` when the caller already has it (one weight, several values)."""
    num = cv2.blur(values * weight, (window, window), borderType=cv2.BORDER_CONSTANT)
    return num / (_local_count(weight, window) if count is None else count)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


@dataclass(frozen=True)
class _TemporalStats:
    activity: np.ndarray  # float32 [h, w]: mean |frame-to-frame change|
    mean: np.ndarray  # float32 [h, w]
    low: np.ndarray  # float32 [h, w]: temporal minimum
    exact: np.ndarray  # bool [h, w]: identical in every sampled frame, not black
    spread: np.ndarray  # uint8 [h, w]: temporal maximum minus minimum
    high: np.ndarray  # uint8 [h, w]: temporal maximum


def _temporal_stats(frames: np.ndarray, config: OverlayConfig) -> _TemporalStats:
    t = frames.shape[0]
    picks = np.unique(np.linspace(0, t - 1, num=min(t, config.max_frames)).round().astype(np.int64))
    if frames.shape[-1] == 1:
        lum = [frames[index, :, :, 0] for index in picks]  # views: OpenCV reads strided rows
    else:
        lum = list(_luminance_max(frames[picks]))
    change = np.zeros(lum[0].shape, np.float32)
    total = np.zeros(lum[0].shape, np.float32)
    low, high = lum[0].copy(), lum[0].copy()
    for index in range(len(lum)):
        cv2.accumulate(lum[index], total)
        if index:
            cv2.accumulate(cv2.absdiff(lum[index - 1], lum[index]), change)
            cv2.min(low, lum[index], dst=low)
            cv2.max(high, lum[index], dst=high)
    return _TemporalStats(
        activity=change / max(1, len(lum) - 1),
        mean=total / len(lum),
        low=low.astype(np.float32),
        exact=(low == high) & (low > 0),
        spread=high - low,
        high=high,
    )


def _steady_bright(stats: _TemporalStats, inside: np.ndarray, config: OverlayConfig) -> np.ndarray:
    """Pixels much steadier than the contrast they stand out with, or than the tissue around."""
    tissue = (inside & ~stats.exact).astype(np.float32)
    found = stats.exact.copy()
    for _ in range(2):  # the second pass measures the surroundings without the first pass's finds
        count = _local_count(tissue, config.local_window)
        local_change = _local_mean(stats.activity, tissue, config.local_window, count)
        contrast = stats.mean - _local_mean(stats.mean, tissue, config.local_window, count)
        steady_high = (contrast >= config.high_contrast) & (stats.activity <= config.steady_per_contrast * contrast)
        steady_over_motion = (contrast >= config.min_contrast) & (
            stats.activity <= np.maximum(config.steady_floor, config.steady_per_activity * local_change)
        )
        found = inside & (steady_high | steady_over_motion)
        surroundings = (inside & ~_dilate(found | stats.exact, 2)).astype(np.float32)
        if np.array_equal(surroundings, tissue):
            break  # nothing found changes the surroundings: another pass would find the same
        tissue = surroundings
    if not found.any():
        return found
    count, labels, table, _ = cv2.connectedComponentsWithStats(found.astype(np.uint8), connectivity=8)
    big = table[:, cv2.CC_STAT_AREA] >= config.min_lossy_pixels
    big[0] = False
    anchored = big[labels]
    # A lone pixel beside a confirmed group (the decimal point of "4.8") belongs to it.
    return anchored | (found & _dilate(anchored, config.support_px))


def _near_exact_groups(steady: np.ndarray, stats: _TemporalStats, config: OverlayConfig) -> np.ndarray:
    """Lossless anchors besides the bit-exact pixels: groups of at least `near_exact_pixels`
    steady pixels that change by at most `near_exact_spread` grey levels and stay below
    `near_exact_high`. The full-weight pixels of an anti-aliased glyph carry a trace of the tissue
    under them, so a whole letter can lack a bit-exact pixel; tissue that steady is clipped
    bright (near 255), hence the ceiling."""
    near = steady & (stats.spread <= config.near_exact_spread) & (stats.high <= config.near_exact_high)
    count, labels, table, _ = cv2.connectedComponentsWithStats(near.astype(np.uint8), connectivity=8)
    big = table[:, cv2.CC_STAT_AREA] >= config.near_exact_pixels
    big[0] = False
    return big[labels]


def _blended_components(core: np.ndarray, exact: np.ndarray, config: OverlayConfig) -> np.ndarray:
    """The pixels of `core`'s connected components that are less than `bitmap_exact_share`
    bit-exact: glyphs with a blended edge. A glyph drawn without anti-aliasing is exact to its
    last pixel, and what borders it is tissue, which growing it would only take."""
    count, labels = cv2.connectedComponents(core.astype(np.uint8), connectivity=8)
    size = np.bincount(labels.ravel(), minlength=count)
    exact_count = np.bincount(labels.ravel(), weights=(exact & core).ravel(), minlength=count)
    blended = exact_count < config.bitmap_exact_share * np.maximum(size, 1)
    blended[0] = False
    return blended[labels]


def _grow_fringe(
    core: np.ndarray, stats: _TemporalStats, inside: np.ndarray, lossy: bool, config: OverlayConfig
) -> np.ndarray:
    """`core` grown into the blended edge of anti-aliased glyphs (bool `[h, w]`, in the box).

    A pixel of the edge shows the glyph at weight w over the tissue: w x (glyph - tissue) raises
    its temporal minimum above the tissue around, and it moves with only (1 - w) of the
    tissue's change. Ring 1 (`grow_px`, 4-connected) takes neighbours raised by
    `fringe_contrast`; the `halo_px` rings after it (8-connected: strokes run diagonally too)
    take pixels raised by `halo_contrast` whose change is at most `halo_damping` x the local
    tissue's. Only blended groups grow (lossless: see `_blended_components`); after a lossy
    codec no group is exact and all grow.
    """
    tissue = (inside & ~_dilate(core, 2)).astype(np.float32)
    raise_low = stats.low - _local_mean(stats.low, tissue, config.fringe_window)
    raised = inside & (raise_low >= config.fringe_contrast)
    seeds = core.copy() if lossy else _blended_components(core, stats.exact, config)
    grown = core.copy()
    for _ in range(config.grow_px):
        ring = _dilate(seeds, 1) & raised & ~grown
        grown |= ring
        seeds |= ring
    if config.halo_px:
        local_change = _local_mean(stats.activity, tissue, config.fringe_window)
        halo = inside & (raise_low >= config.halo_contrast) & (stats.activity <= config.halo_damping * local_change)
        square = np.ones((3, 3), np.uint8)
        for _ in range(config.halo_px):
            ring = cv2.dilate(seeds.astype(np.uint8), square).astype(bool) & halo & ~grown
            grown |= ring
            seeds |= ring
    return grown


def find_static_overlays(
    frames: np.ndarray, sector: np.ndarray, *, lossy: bool, config: OverlayConfig | None = None
) -> np.ndarray:
    """Static overlay pixels inside the sector of a clip: bool `[H, W]` (False outside `sector`).

    frames: uint8 `[T, H, W, C]` at source resolution, T >= 2 (a single frame has no temporal
    evidence: nothing is found); sector: bool `[H, W]`. lossy: the pixels went through a lossy
    codec (see the module docstring: only then are steady-but-not-identical pixels counted).
    """
    config = config or OverlayConfig()
    found = np.zeros(sector.shape, bool)
    if frames.shape[0] < 2 or not sector.any():
        return found
    # Only the sector's bounding box is searched: outside it everything is zeroed anyway.
    # (OpenCV's box of the non-zero pixels: ~10x faster than numpy's nonzero on a 600 x 800 mask.)
    x0, y0, box_w, box_h = cv2.boundingRect(np.ascontiguousarray(sector).view(np.uint8))
    y1, x1 = y0 + box_h, x0 + box_w
    inside = sector[y0:y1, x0:x1]
    stats = _temporal_stats(frames[:, y0:y1, x0:x1], config)
    core = inside & stats.exact
    steady = _steady_bright(stats, inside, config)
    # Lossless: steady pixels count only near bit-exact or near-exact ones (the blended pixels of
    # anti-aliased glyphs around their full-weight ones), so steady tissue elsewhere is kept.
    if not lossy:
        core |= _near_exact_groups(steady, stats, config)
    core |= steady if lossy else steady & _dilate(core, config.anchor_px)
    if (config.grow_px or config.halo_px) and core.any():
        core = _grow_fringe(core, stats, inside, lossy, config)
    found[y0:y1, x0:x1] = core
    return found


def remove_overlays(frames: np.ndarray, overlay: np.ndarray, *, radius: int = 3) -> np.ndarray:
    """Replace the `overlay` pixels of every frame by values inpainted from the surrounding
    tissue (OpenCV's Telea method, `radius` pixels), in place; returns `frames`.

    frames: uint8 `[T, H, W, C]`, C = 1 or 3; overlay: bool `[H, W]`. Inpainting rather than
    zeroing: a zeroed glyph is a black glyph, as legible as the white one it replaced.
    """
    if not overlay.any():
        return frames
    mask = overlay.astype(np.uint8)
    for index in range(frames.shape[0]):
        frame = frames[index]
        filled = cv2.inpaint(frame if frame.shape[-1] == 3 else frame[..., 0], mask, radius, cv2.INPAINT_TELEA)
        frames[index] = filled if filled.ndim == 3 else filled[..., None]
    return frames
