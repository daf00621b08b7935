"""Pixels of a synthetic echo cine: fan sector, speckle, attenuation, gain, burned-in text, ECG.

The image is built the way a scanner displays it, in the log (dB) domain: chamber levels from
`synthetic_heart`, plus Rayleigh speckle in dB, plus depth attenuation that the time-gain
compensation only partly corrects, plus an overall gain; a 50 dB display range maps to 0..255.
The sector is rendered on a grid of at most half the native resolution (speckle is several pixels wide anyway) and
resized to the native size, which keeps 100 clips well under a minute on two cores. Everything
outside the fan is exactly zero except the burned-in overlays (header text, side annotations,
ECG trace with a moving cursor), which lie outside the fan's bounding box by construction.
Inside the fan, scanners burn in measurements too: `Overlay.annotations` are text labels inside
the fan, `edge_label` straddles its right edge and `calipers` draws two caliper pairs ('+' marks
joined by a dotted line), all static while the tissue under them changes; `draw_text=False`
renders the text-free twin of a clip (identical except for the text and calipers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from echofm.synth.heart import HeartParams, cycle_phase, lv_volume, view_shapes
from echofm.errors import SynthError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive

DISPLAY_RANGE_DB = 50.0
WORK_HEIGHT = 320  # the sector is rendered on a grid at most this high (and at most half the native size)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Colours of the overlays in colour files (RGB): a green ECG and a yellow cursor, as most vendors draw.
ECG_RGB = (40, 220, 60)
CURSOR_RGB = (250, 220, 40)


class LayoutError(SynthError, ValueError):
    """The requested image is too small to hold the fan, the text bands and the ECG."""


@dataclass(frozen=True, kw_only=True)
class FanGeometry:
    """An annular sector with its apex (the transducer) at (apex_x, apex_y), pointing down.

    r0, r1: inner and outer radius (pixels); half_angle_rad: half the opening angle;
    depth_cm: the physical depth that r1 shows.
    """

    apex_x: float
    apex_y: float
    r0: float
    r1: float
    half_angle_rad: float
    depth_cm: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.r0 < self.r1:
            raise ValueError(f"need 0 <= r0 < r1, got {self.r0}, {self.r1}")
        if not 0.0 < self.half_angle_rad < math.pi / 2.0:
            raise ValueError(f"half_angle_rad must be in (0, pi/2), got {self.half_angle_rad}")
        if self.depth_cm <= 0.0:
            raise ValueError(f"depth_cm must be positive, got {self.depth_cm}")

    @property
    def px_per_cm(self) -> float:
        return self.r1 / self.depth_cm

    def box(self) -> Box:
        """Bounding box of the fan (pixels, inclusive)."""
        s, c = math.sin(self.half_angle_rad), math.cos(self.half_angle_rad)
        return (
            int(math.floor(self.apex_x - self.r1 * s)),
            int(math.floor(self.apex_y + self.r0 * c)),
            int(math.ceil(self.apex_x + self.r1 * s)),
            int(math.ceil(self.apex_y + self.r1)),
        )

    def mask(self, height: int, width: int, scale: float = 1.0) -> np.ndarray:
        """uint8 `[H, W]`: 1 inside the fan, 0 outside, on a grid `scale` times the native one."""
        out = np.zeros((height, width), dtype=np.uint8)
        shift = 4  # sub-pixel centre and radii for cv2's drawing
        one = 1 << shift
        centre = (int(round(self.apex_x * scale * one)), int(round(self.apex_y * scale * one)))
        r1 = int(round(self.r1 * scale * one))
        half = math.degrees(self.half_angle_rad)
        cv2.ellipse(out, centre, (r1, r1), 0.0, 90.0 - half, 90.0 + half, 1, -1, cv2.LINE_8, shift)
        if self.r0 > 0:
            r0 = int(round(self.r0 * scale * one))
            cv2.circle(out, centre, r0, 0, -1, cv2.LINE_8, shift)
        return out

    def to_pixels(self, points_cm: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """float64 `[N, 2]` (x, y) pixels on a `scale` grid from (u, d) cm."""
        return (points_cm * self.px_per_cm + (self.apex_x, self.apex_y)) * scale


@dataclass(frozen=True, kw_only=True)
class Overlay:
    """Burned-in annotations: header lines (PHI), side annotations, the ECG band."""

    header_left: tuple[str, ...]
    header_right: tuple[str, ...]
    side_left: tuple[str, ...]
    side_right: tuple[str, ...]
    annotations: tuple[str, ...] = ()  # measurement labels inside the fan
    edge_label: str | None = None  # a label across the fan's right edge
    calipers: bool = False
    antialias: bool = False  # blend the edges of the labels inside the fan


@dataclass
class RenderedClip:
    """A rendered cine and its ground truth.

    frames: uint8 `[T, H, W]` (grey) or `[T, H, W, 3]` (RGB, grey image with coloured overlays).
    lv_masks: uint8 `[K, H, W]`, 1 inside the LV cavity (clipped to the fan), for the source frames
    `mask_frames` (int64 `[K]`). lv_area_px: float64 `[T]`, the cavity's area in every frame.
    lv_volume_ml: float64 `[T]`. sector: uint8 `[H, W]` fan mask; sector_box: its bounding box.
    text_boxes: boxes of every burned-in text item outside the fan; fan_text_boxes: boxes of the
    annotations, edge label and calipers drawn inside the fan; ecg_box: the ECG band; burned_in:
    the strings drawn.
    """

    frames: np.ndarray
    lv_masks: np.ndarray
    mask_frames: np.ndarray
    lv_area_px: np.ndarray
    lv_volume_ml: np.ndarray
    sector: np.ndarray
    fan: FanGeometry
    sector_box: Box
    text_boxes: list[Box] = field(default_factory=list)
    fan_text_boxes: list[Box] = field(default_factory=list)
    ecg_box: Box | None = None
    colour_box: Box | None = None
    burned_in: list[str] = field(default_factory=list)


def plan_fan(height: int, width: int, rng: np.random.Generator, depth_cm: float) -> tuple[FanGeometry, int, int]:
    """Place the fan between a header band (text) and an ECG band.

    Returns (fan, header band height, ECG band top y). Raises LayoutError for images under 240x320.
    """
    if height < 240 or width < 320:
        raise LayoutError(f"image {height}x{width} is too small for a synthetic echo (min 240x320)")
    header = int(round(0.09 * height))
    ecg_h = int(round(0.11 * height))
    margin = max(4, height // 80)
    half = math.radians(float(rng.uniform(34.0, 45.0)))
    k = float(rng.uniform(0.02, 0.05))  # r0 / r1: the small arc at the transducer
    r1_h = (height - header - ecg_h - 2 * margin) / (1.0 - k * math.cos(half))
    r1_w = (width * (1.0 - 2 * 0.09)) / (2.0 * math.sin(half))
    r1 = min(r1_h, r1_w) * float(rng.uniform(0.92, 1.0))
    r0 = k * r1
    apex_y = header + margin - r0 * math.cos(half) + 1.0
    apex_x = width / 2.0 + float(rng.uniform(-0.015, 0.015)) * width
    fan = FanGeometry(apex_x=apex_x, apex_y=apex_y, r0=r0, r1=r1, half_angle_rad=half, depth_cm=depth_cm)
    ecg_top = fan.box()[3] + margin
    return fan, header, ecg_top


_SPECKLE_CACHE: dict[tuple[int, int, int], np.ndarray] = {}
SPECKLE_POOL = 10


def speckle_pool(shape: tuple[int, int], seed: int) -> np.ndarray:
    """float32 `[SPECKLE_POOL, h, w]`: fully developed speckle in dB, shared by the clips of one archive.

    20 log10 of a smoothed Rayleigh field with mean amplitude 1. The complex field is blurred more
    laterally than axially: speckle cells are elongated across the beam, as on a phased array.
    Generating speckle is the costliest part of a frame, so an archive draws one pool per image
    size (from its seed, so it stays deterministic) and each clip takes rolled copies of it.
    """
    key = (shape[0], shape[1], seed)
    if key not in _SPECKLE_CACHE:
        rng = np.random.default_rng([seed, shape[0], shape[1]])
        out = np.empty((SPECKLE_POOL, *shape), dtype=np.float32)
        for i in range(SPECKLE_POOL):
            re = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), sigmaX=1.3, sigmaY=0.7)
            im = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), sigmaX=1.3, sigmaY=0.7)
            amp = cv2.magnitude(re, im)
            amp /= float(amp.mean())
            out[i] = 20.0 * np.log10(np.maximum(amp, 1e-3))
        if len(_SPECKLE_CACHE) > 8:
            _SPECKLE_CACHE.clear()
        _SPECKLE_CACHE[key] = out
    return _SPECKLE_CACHE[key]


def _clip_speckle(shape: tuple[int, int], seed: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 `[n, h, w]`: n pool fields, each circularly shifted by a clip-specific offset."""
    pool = speckle_pool(shape, seed)
    picks = rng.choice(SPECKLE_POOL, size=n, replace=False)
    shifts = rng.integers(0, [shape[0], shape[1]], size=(n, 2))
    return np.stack([np.roll(pool[k], (int(dy), int(dx)), axis=(0, 1)) for k, (dy, dx) in zip(picks, shifts)])


def _static_db(fan: FanGeometry, shape: tuple[int, int], scale: float, rng: np.random.Generator, gain_db: float) -> np.ndarray:
    """float32 `[h, w]` on the work grid: gain minus the attenuation the TGC leaves, plus lateral fall-off.

    Attenuation of 0.5 dB/cm/MHz at 2.5 MHz, two-way, is corrected by a TGC that misses by up to
    30 %, so deep tissue ends up darker or brighter than shallow tissue from clip to clip.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx = (xx + 0.5) / scale - fan.apex_x
    dy = (yy + 0.5) / scale - fan.apex_y
    depth_cm = np.sqrt(dx * dx + dy * dy) / fan.px_per_cm
    ang = np.abs(np.arctan2(dx, dy)) / fan.half_angle_rad
    tgc_miss = float(rng.uniform(-0.3, 0.3))
    attenuation = -2.0 * 0.5 * 2.5 * depth_cm * tgc_miss
    lateral = -6.0 * np.clip((ang - 0.75) / 0.25, 0.0, 1.0) ** 2
    return (gain_db + attenuation + lateral).astype(np.float32)


def _background_db(fan: FanGeometry, shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """float32 `[h, w]`: tissue around the heart (lung/liver-like, about -20 dB) with a bright chest wall."""
    h, w = shape
    coarse = rng.standard_normal((max(2, h // 24), max(2, w // 24))).astype(np.float32)
    texture = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx = (xx + 0.5) / scale - fan.apex_x
    dy = (yy + 0.5) / scale - fan.apex_y
    depth_cm = np.sqrt(dx * dx + dy * dy) / fan.px_per_cm
    chest_wall = 14.0 * np.exp(-(((depth_cm - 1.0) / 0.7) ** 2))
    return (-30.0 + 4.0 * texture + chest_wall).astype(np.float32)


def _ecg_waveform(phase: np.ndarray) -> np.ndarray:
    """float64 `[N]`: a PQRST complex in mV-like units with the R peak at phase 0 (end-diastole)."""
    p = np.mod(phase + 0.5, 1.0) - 0.5  # centred on the R peak
    waves = ((-0.16, 0.025, 0.15), (-0.025, 0.008, -0.12), (0.0, 0.01, 1.0), (0.025, 0.009, -0.25), (0.3, 0.05, 0.3))
    out = np.zeros_like(p)
    for centre, width, amp in waves:
        out += amp * np.exp(-(((p - centre) / width) ** 2))
    return out


def _put_lines(
    canvas: np.ndarray, lines: tuple[str, ...], x: int, y0: int, scale: float, align_right: bool, limit: Box
) -> tuple[list[Box], list[str]]:
    """Draw text lines from (x, y0) downwards; skip a line that would leave `limit`. Returns boxes and strings drawn."""
    boxes: list[Box] = []
    drawn: list[str] = []
    y = y0
    for text in lines:
        (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
        x0 = x - tw if align_right else x
        box = (x0 - 1, y - 1, x0 + tw + 1, y + th + base + 1)
        y += th + base + max(3, th // 2)
        if box[0] < limit[0] or box[2] > limit[2] or box[1] < limit[1] or box[3] > limit[3]:
            continue
        cv2.putText(canvas, text, (x0, box[3] - base - 1), FONT, scale, 230, 1, cv2.LINE_AA)
        boxes.append(box)
        drawn.append(text)
    return boxes, drawn


def _overlay_layer(
    height: int, width: int, fan_box: Box, header: int, overlay: Overlay
) -> tuple[np.ndarray, list[Box], list[str]]:
    """uint8 `[H, W]` static text layer, the text boxes, and the strings drawn."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    scale = max(0.35, height / 1150.0)
    fx0, fy0, fx1, fy1 = fan_box
    pad = max(3, width // 160)
    boxes: list[Box] = []
    drawn: list[str] = []
    header_box = (0, 0, width - 1, header - 1)
    for lines, x, right in ((overlay.header_left, pad, False), (overlay.header_right, width - 1 - pad, True)):
        b, d = _put_lines(canvas, lines, x, 2, scale, right, header_box)
        boxes += b
        drawn += d
    y_side = fy0 + int(0.1 * (fy1 - fy0))
    left_box = (0, header, fx0 - 2, fy1)
    right_box = (fx1 + 2, header, width - 1, fy1)
    b, d = _put_lines(canvas, overlay.side_left, pad, y_side, scale * 0.9, False, left_box)
    boxes += b
    drawn += d
    b, d = _put_lines(canvas, overlay.side_right, width - 1 - pad, y_side, scale * 0.9, True, right_box)
    boxes += b
    drawn += d
    return canvas, boxes, drawn


def _polar(fan: FanGeometry, depth: float, angle: float) -> tuple[int, int]:
    """Pixel (x, y) at `depth` (fraction of r1) and `angle` (fraction of the half angle, + right)."""
    theta = angle * fan.half_angle_rad
    return (int(round(fan.apex_x + depth * fan.r1 * math.sin(theta))), int(round(fan.apex_y + depth * fan.r1 * math.cos(theta))))


def _inside(sector: np.ndarray, box: Box) -> bool:
    x0, y0, x1, y1 = box
    h, w = sector.shape
    return 0 <= x0 and 0 <= y0 and x1 < w and y1 < h and bool(sector[y0 : y1 + 1, x0 : x1 + 1].all())


def _fan_text_layer(sector: np.ndarray, fan: FanGeometry, overlay: Overlay, scale: float) -> tuple[np.ndarray, list[Box], list[str]]:
    """uint8 `[H, W]` static layer of what is drawn inside the fan: measurement labels stacked in
    its upper left (each fully inside the fan), a label centred on its right edge, calipers.
    Positions follow from the fan geometry alone, so a clip and its text-free twin draw the same
    random numbers."""
    canvas = np.zeros(sector.shape, np.uint8)
    boxes: list[Box] = []
    drawn: list[str] = []
    x, y = _polar(fan, 0.22, -0.35)
    for text in overlay.annotations:
        (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
        box = (x - 1, y - 1, x + tw + 1, y + th + base + 1)
        y += th + base + max(3, th // 2)
        if _inside(sector, box):
            cv2.putText(canvas, text, (x, box[3] - base - 1), FONT, scale, 230, 1, cv2.LINE_AA)
            boxes.append(box)
            drawn.append(text)
    if overlay.edge_label:
        (tw, th), base = cv2.getTextSize(overlay.edge_label, FONT, scale, 1)
        _, ey = _polar(fan, 0.55, 1.0)
        x0 = int(np.flatnonzero(sector[ey + th // 2])[-1]) - tw // 2  # centred on the fan's edge
        cv2.putText(canvas, overlay.edge_label, (x0, ey + th), FONT, scale, 230, 1, cv2.LINE_AA)
        boxes.append((x0 - 1, ey - 1, x0 + tw + 1, ey + th + base + 1))
        drawn.append(overlay.edge_label)
    if overlay.calipers:
        arm = max(3, sector.shape[1] // 110)
        for a, b in (((0.45, -0.3), (0.45, 0.3)), ((0.35, 0.05), (0.75, 0.05))):
            p, q = _polar(fan, *a), _polar(fan, *b)
            for cx, cy in (p, q):
                cv2.line(canvas, (cx - arm, cy), (cx + arm, cy), 230, 1)
                cv2.line(canvas, (cx, cy - arm), (cx, cy + arm), 230, 1)
                boxes.append((cx - arm, cy - arm, cx + arm, cy + arm))
            n_dots = max(2, int(math.hypot(q[0] - p[0], q[1] - p[1]) // 6))
            for k in range(1, n_dots):
                dx, dy = p[0] + (q[0] - p[0]) * k / n_dots, p[1] + (q[1] - p[1]) * k / n_dots
                cv2.circle(canvas, (int(round(dx)), int(round(dy))), 1, 230, -1)
            boxes.append((min(p[0], q[0]) - 1, min(p[1], q[1]) - 1, max(p[0], q[0]) + 1, max(p[1], q[1]) + 1))
    if not overlay.antialias:
        # Scanners draw measurements with bitmap fonts: every pixel of a glyph at full level
        # (OpenCV's Hershey glyphs come out blended at any line type, hence the threshold).
        canvas = np.where(canvas >= 115, np.uint8(230), np.uint8(0))
    return canvas, boxes, drawn


@dataclass(frozen=True)
class _SectorTexture:
    """What stays fixed over a clip on the work grid: background tissue, gain/attenuation, speckle.

    Speckle has a static part (tissue keeps its texture) plus a part that changes every frame
    (blood and decorrelation), so the sector moves over time while text and ECG stay still.
    """

    scale: float
    background: np.ndarray  # float32 [h, w] dB
    offset_db: np.ndarray  # float32 [h, w] dB: gain, attenuation, static speckle, display offset
    dynamic: np.ndarray  # float32 [n, h, w] dB speckle fields
    order: np.ndarray  # int [T]: dynamic field of each frame
    soft_fan: np.ndarray  # float32 [h, w], the fan with a soft edge

    def to_grey(self, work_db: np.ndarray, frame: int) -> np.ndarray:
        """uint8 `[h, w]` display values from the chamber map (dB) of one frame."""
        db = cv2.GaussianBlur(work_db, (5, 5), 1.0)
        db += self.offset_db
        cv2.scaleAdd(self.dynamic[self.order[frame]], 0.5, db, dst=db)
        cv2.multiply(db, self.soft_fan, dst=db, scale=255.0 / DISPLAY_RANGE_DB)
        cv2.max(db, 0.0, dst=db)
        return cv2.convertScaleAbs(db)


def _sector_texture(
    fan: FanGeometry, height: int, width: int, n_frames: int, gain_db: float, rng: np.random.Generator, speckle_seed: int
) -> _SectorTexture:
    scale = min(0.5, WORK_HEIGHT / height)
    shape = (int(round(height * scale)), int(round(width * scale)))
    soft_fan = cv2.GaussianBlur(fan.mask(shape[0], shape[1], scale).astype(np.float32), (0, 0), 0.8)
    static = _static_db(fan, shape, scale, rng, gain_db)
    background = _background_db(fan, shape, scale, rng)
    n_dynamic = 5
    speckle = _clip_speckle(shape, speckle_seed, rng, n_dynamic + 1)
    order = rng.integers(0, n_dynamic, size=n_frames) + 1
    return _SectorTexture(
        scale=scale, background=background, offset_db=static + 0.7 * speckle[0] + DISPLAY_RANGE_DB,
        dynamic=speckle, order=order, soft_fan=soft_fan,
    )


def _ecg_trace(ecg_box: Box, heart: HeartParams, n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The ECG polyline (int32 `[N, 2]`) sweeping the whole clip across the band, and the cursor x of each frame."""
    n_pts = max(2, ecg_box[2] - ecg_box[0])
    ecg = _ecg_waveform(cycle_phase(np.linspace(0.0, n_frames / fps, n_pts), heart))
    mid = (ecg_box[1] + ecg_box[3]) / 2.0 + 0.2 * (ecg_box[3] - ecg_box[1])
    amp = 0.55 * (ecg_box[3] - ecg_box[1])
    pts = np.stack([ecg_box[0] + np.arange(n_pts), mid - amp * ecg], axis=1).round().astype(np.int32)
    cursor_x = (ecg_box[0] + np.arange(n_frames) / max(n_frames, 1) * (n_pts - 1)).round().astype(int)
    return pts, cursor_x


def _colour_layer(
    text_layer: np.ndarray, ecg_pts: np.ndarray, fan_box: Box, text_boxes: list[Box], header: int
) -> tuple[np.ndarray, Box | None]:
    """uint8 `[H, W, 3]` static overlays of a colour file: text, a green ECG, a red-blue scale bar right of the fan."""
    height, width = text_layer.shape
    layer = cv2.cvtColor(text_layer, cv2.COLOR_GRAY2RGB)
    cv2.polylines(layer, [ecg_pts], False, ECG_RGB, 1, cv2.LINE_AA)
    bw = max(6, width // 90)
    bx0 = min(width - bw - 3, fan_box[2] + max(6, width // 60))
    # Below the side annotations right of the fan, so it never covers text.
    by0 = max((b[3] for b in text_boxes if b[0] > fan_box[2]), default=header) + 8
    by1 = by0 + max(40, height // 6)
    if bx0 <= fan_box[2] + 1 or by1 >= fan_box[3]:
        return layer, None
    ramp = np.linspace(0.0, 1.0, by1 - by0)[:, None]
    bar = np.concatenate([255 * (1 - ramp), 40 * np.ones_like(ramp), 255 * ramp], axis=1)
    layer[by0:by1, bx0 : bx0 + bw] = bar[:, None, :].astype(np.uint8)
    return layer, (bx0, by0, bx0 + bw - 1, by1 - 1)


def _draw_lv(target: np.ndarray, pts: np.ndarray, shift: int, sector: np.ndarray) -> int:
    """Fill the LV polygon (fixed-point `pts`) into `target`, clipped to the fan; returns its area in pixels."""
    x, y, w, h = cv2.boundingRect(pts >> shift)
    roi = (slice(max(0, y - 1), y + h + 2), slice(max(0, x - 1), x + w + 2))
    target[roi] = 0
    cv2.fillPoly(target, [pts], 1, cv2.LINE_8, shift)
    target[roi] &= sector[roi]  # the mask is what the fan shows
    return int(np.count_nonzero(target[roi]))


def render_clip(
    *,
    view: str,
    heart: HeartParams,
    height: int,
    width: int,
    n_frames: int,
    fps: float,
    depth_cm: float,
    gain_db: float,
    overlay: Overlay,
    colour: bool,
    rng: np.random.Generator,
    speckle_seed: int = 0,
    mask_frames: Sequence[int] | None = None,
    draw_text: bool = True,
    ecg_gap: int | None = None,
) -> RenderedClip:
    """Render one cine at its native size.

    Returns frames uint8 `[T, H, W]` (or `[T, H, W, 3]` RGB when `colour`), LV masks `[K, H, W]` of
    the frames in `mask_frames` (all frames when None), the LV area (pixels) and volume (ml) of
    every frame, and the fan and overlay geometry. `speckle_seed` picks the archive's speckle pool
    (see `speckle_pool`); everything else comes from `rng`. `draw_text=False` leaves out every
    text item and the calipers (the text-free twin: same pixels elsewhere, same boxes reported). `ecg_gap`
    puts the ECG band that many pixels below the fan (default: the layout's margin).
    """
    fan, header, ecg_top = plan_fan(height, width, rng, depth_cm)
    sector = fan.mask(height, width)
    # The box of the drawn mask, which cv2's polygonal arcs make a pixel or two wider than the ideal fan.
    ys, xs = np.nonzero(sector)
    fan_box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    texture = _sector_texture(fan, height, width, n_frames, gain_db, rng, speckle_seed)
    times = np.arange(n_frames) / fps
    volumes, phases = lv_volume(times, heart), cycle_phase(times, heart)

    text_layer, text_boxes, burned_in = _overlay_layer(height, width, fan_box, header, overlay)
    fan_layer, fan_text_boxes, fan_text = _fan_text_layer(sector, fan, overlay, max(0.35, height / 1150.0))
    burned_in += fan_text
    # Graphics planes draw opaquely over the image: the drawn level replaces the tissue, blended
    # with it only on the anti-aliased edges (weight = layer / 230).
    fan_pixels = np.nonzero(fan_layer) if draw_text else (np.array([], np.int64), np.array([], np.int64))
    fan_weight = fan_layer[fan_pixels].astype(np.float32) / 230.0
    fan_level = fan_layer[fan_pixels].astype(np.float32)
    if not draw_text:
        text_layer[...] = 0
    ecg_y0 = fan_box[3] + ecg_gap if ecg_gap is not None else max(ecg_top, fan_box[3] + 3)
    ecg_box = (fan_box[0], ecg_y0, fan_box[2], height - 1 - max(2, height // 120))
    if ecg_box[3] - ecg_box[1] < 12:
        raise LayoutError(f"no room for the ECG band in a {height}x{width} image")
    ecg_pts, cursor_x = _ecg_trace(ecg_box, heart, n_frames, fps)
    colour_box: Box | None = None
    if colour:
        static, colour_box = _colour_layer(text_layer, ecg_pts, fan_box, text_boxes, header)
        frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
        cursor: int | tuple[int, int, int] = CURSOR_RGB
    else:
        static = text_layer.copy()
        cv2.polylines(static, [ecg_pts], False, 200, 1, cv2.LINE_AA)
        frames = np.empty((n_frames, height, width), dtype=np.uint8)
        cursor = 255

    keep = np.arange(n_frames, dtype=np.int64) if mask_frames is None else np.asarray(sorted(set(mask_frames)), dtype=np.int64)
    slot_of = {int(f): k for k, f in enumerate(keep)}
    lv_masks = np.zeros((len(keep), height, width), dtype=np.uint8)
    lv_area = np.zeros(n_frames, dtype=np.float64)
    scratch = np.zeros((height, width), dtype=np.uint8)
    work = np.empty(texture.background.shape, dtype=np.float32)
    grey = np.empty((height, width), dtype=np.uint8)
    sector255 = sector * np.uint8(255)
    shift = 4  # sub-pixel vertices for cv2.fillPoly
    for i in range(n_frames):
        work[...] = texture.background
        for shape in view_shapes(view, float(volumes[i]), heart.edv_ml, float(phases[i]), heart.systole_fraction):
            pts = np.round(fan.to_pixels(shape.points, texture.scale) * (1 << shift)).astype(np.int32)
            cv2.fillPoly(work, [pts], shape.level_db, cv2.LINE_8, shift)
            if shape.is_lv:
                full = np.round(fan.to_pixels(shape.points) * (1 << shift)).astype(np.int32)
                lv_area[i] = _draw_lv(lv_masks[slot_of[i]] if i in slot_of else scratch, full, shift, sector)
        cv2.resize(texture.to_grey(work, i), (width, height), dst=grey, interpolation=cv2.INTER_LINEAR)
        cv2.bitwise_and(grey, sector255, dst=grey)
        grey[fan_pixels] = np.round(grey[fan_pixels] * (1.0 - fan_weight) + fan_level).astype(np.uint8)
        out = frames[i]
        if colour:
            cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB, dst=out)
            cv2.max(out, static, dst=out)
        else:
            cv2.max(grey, static, dst=out)
        cv2.line(out, (int(cursor_x[i]), ecg_box[1]), (int(cursor_x[i]), ecg_box[3]), cursor, 1)
    return RenderedClip(
        frames=frames,
        lv_masks=lv_masks,
        mask_frames=keep,
        lv_area_px=lv_area,
        lv_volume_ml=volumes,
        sector=sector,
        fan=fan,
        sector_box=fan_box,
        text_boxes=text_boxes,
        fan_text_boxes=fan_text_boxes,
        ecg_box=ecg_box,
        colour_box=colour_box,
        burned_in=burned_in,
    )
