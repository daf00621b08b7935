"""Cardiac geometry for the synthetic echo archive: LV volume over the cycle and chamber shapes.

The left ventricle is a prolate ellipsoid of long axis L and diameter D (cm), so its volume is
V = pi * L * D^2 / 6 (ml, since 1 cm^3 = 1 ml). A volume curve V(t) with a known end-diastolic
(EDV) and end-systolic (ESV) volume drives everything: L shortens by (V / EDV)^(1/5) (about 17 %
at EF 60 %, which is what long-axis shortening looks like) and D follows from the volume. The
ejection fraction of a clip is therefore exact by construction: EF = (EDV - ESV) / EDV * 100.

Each view cuts this heart differently (long axis in apical and parasternal long-axis views, a
circle in the parasternal short axis) and adds the chambers that view shows. Shapes are returned
in physical coordinates (cm): `u` lateral (positive to the image right), `d` depth from the
transducer; the renderer maps them to pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VIEWS: tuple[str, ...] = ("A4C", "A2C", "A3C", "PLAX", "PSAX")

# Echo amplitudes in dB relative to the brightest reflector (the pericardium), before speckle,
# attenuation and gain. The renderer adds these in the log domain, as a scanner's log compression
# does; a 50 dB display range maps -50 dB to black.
BLOOD = -52.0
MYOCARDIUM = -9.0
VALVE = -3.0
PERICARDIUM = 0.0


@dataclass(frozen=True, kw_only=True)
class HeartParams:
    """One heart's cycle: rate, volumes and timing.

    heart_rate_bpm: beats per minute. edv_ml / esv_ml: LV end-diastolic / end-systolic volume (ml).
    systole_fraction: share of the cycle from ED to ES. phase0: cycle phase at t = 0 (0 = ED).
    """

    heart_rate_bpm: float
    edv_ml: float
    esv_ml: float
    systole_fraction: float = 0.35
    phase0: float = 0.0

    def __post_init__(self) -> None:
        if not 20.0 <= self.heart_rate_bpm <= 250.0:
            raise ValueError(f"heart_rate_bpm out of range: {self.heart_rate_bpm}")
        if not 0.0 < self.esv_ml < self.edv_ml:
            raise ValueError(f"need 0 < esv_ml < edv_ml, got {self.esv_ml}, {self.edv_ml}")
        if not 0.2 <= self.systole_fraction <= 0.6:
            raise ValueError(f"systole_fraction out of range: {self.systole_fraction}")
        if not 0.0 <= self.phase0 < 1.0:
            raise ValueError(f"phase0 must be in [0, 1), got {self.phase0}")

    @property
    def ef(self) -> float:
        """Ejection fraction in percent."""
        return (self.edv_ml - self.esv_ml) / self.edv_ml * 100.0

    @property
    def period_s(self) -> float:
        return 60.0 / self.heart_rate_bpm


def cycle_phase(times_s: np.ndarray, heart: HeartParams) -> np.ndarray:
    """float64 `[T]`: phase in [0, 1) of the cardiac cycle at each time (0 = end-diastole)."""
    return np.mod(heart.phase0 + np.asarray(times_s, dtype=np.float64) / heart.period_s, 1.0)


def filling(phase: np.ndarray, systole_fraction: float) -> np.ndarray:
    """float64 `[T]`: 1 at end-diastole, 0 at end-systole.

    Systole is a half-cosine ejection; diastole is rapid early filling (75 % of the stroke volume
    in the first 40 % of diastole), diastasis, then the atrial kick in the last 20 %.
    """
    phase = np.asarray(phase, dtype=np.float64)
    s = systole_fraction
    out = np.empty_like(phase)
    sys = phase < s
    out[sys] = 0.5 * (1.0 + np.cos(np.pi * phase[sys] / s))
    u = (phase[~sys] - s) / (1.0 - s)
    early = 0.5 * (1.0 - np.cos(np.pi * np.clip(u / 0.4, 0.0, 1.0)))
    atrial = 0.5 * (1.0 - np.cos(np.pi * np.clip((u - 0.8) / 0.2, 0.0, 1.0)))
    out[~sys] = 0.75 * early + 0.25 * atrial
    return out


def lv_volume(times_s: np.ndarray, heart: HeartParams) -> np.ndarray:
    """float64 `[T]`: LV volume (ml) at each time (s)."""
    f = filling(cycle_phase(times_s, heart), heart.systole_fraction)
    return heart.esv_ml + (heart.edv_ml - heart.esv_ml) * f


def ed_es_frames(n_frames: int, fps: float, heart: HeartParams) -> tuple[list[int], list[int]]:
    """Source frame indices nearest each end-diastole and end-systole instant inside the clip.

    An instant counts when it lies within half a frame of the clip (so a beat cut at the edge
    is not labelled with a frame that never saw it).
    """
    duration = n_frames / fps
    half = 0.5 / fps

    def instants(phase_target: float) -> list[int]:
        first = ((phase_target - heart.phase0) % 1.0) * heart.period_s
        frames: list[int] = []
        t = first
        while t <= duration - 1.0 / fps + half:
            idx = int(round(t * fps))
            if 0 <= idx < n_frames and (not frames or frames[-1] != idx):
                frames.append(idx)
            t += heart.period_s
        return frames

    return instants(0.0), instants(heart.systole_fraction)


def lv_axes(volume_ml: float, edv_ml: float, ed_aspect: float = 0.58) -> tuple[float, float]:
    """LV long axis L and diameter D (cm) for a volume, on an ellipsoid with D/L = ed_aspect at ED."""
    l_ed = (6.0 * edv_ml / (math.pi * ed_aspect**2)) ** (1.0 / 3.0)
    length = l_ed * (volume_ml / edv_ml) ** 0.2
    diameter = math.sqrt(6.0 * volume_ml / (math.pi * length))
    return length, diameter


@dataclass(frozen=True)
class Shape:
    """A filled polygon in cm (`points` float64 `[N, 2]` as (u, d)) with its echo level in dB."""

    points: np.ndarray
    level_db: float
    is_lv: bool = False


def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


_CIRCLES = {n: _unit_circle(n) for n in (16, 48, 64)}


def ellipse_points(
    centre: tuple[float, float],
    half_axis: float,
    half_width: float,
    angle_rad: float,
    cut: float | None = None,
    n: int = 48,
) -> np.ndarray:
    """float64 `[n, 2]`: polygon of an ellipse (u, d) in cm.

    `angle_rad` is the direction of the `half_axis` in the (u, d) plane (0 = +u, pi/2 = +d,
    i.e. pointing deeper). `cut` flattens the ellipse at that distance along the axis, which is
    how the LV base (the mitral annulus) is drawn.
    """
    cos_t, sin_t = _CIRCLES[n] if n in _CIRCLES else _unit_circle(n)
    s = half_axis * cos_t
    if cut is not None:
        s = np.minimum(s, cut)
    p = half_width * sin_t
    ca, sa = math.cos(angle_rad), math.sin(angle_rad)
    out = np.empty((n, 2))
    out[:, 0] = centre[0] + s * ca - p * sa
    out[:, 1] = centre[1] + s * sa + p * ca
    return out


def _ventricle(
    apex: tuple[float, float], angle: float, length: float, diameter: float, wall: float
) -> tuple[Shape, Shape, tuple[float, float], tuple[float, float]]:
    """Myocardium and cavity of a ventricle whose apex lies at `apex`, axis towards `angle`.

    Returns (myocardium, cavity, base centre, axis unit vector); the cavity is cut 10 % short of
    the full ellipse, which is the flat mitral/tricuspid plane.
    """
    a, b = length / 2.0, diameter / 2.0
    ax = (math.cos(angle), math.sin(angle))
    centre = (apex[0] + a * ax[0], apex[1] + a * ax[1])
    cut = 0.8 * a
    cavity = ellipse_points(centre, a, b, angle, cut=cut)
    myo = ellipse_points(centre, a + wall, b + wall, angle, cut=cut)
    base = (centre[0] + cut * ax[0], centre[1] + cut * ax[1])
    return Shape(myo, MYOCARDIUM), Shape(cavity, BLOOD), base, ax


def _valve(base: tuple[float, float], axis: tuple[float, float], half_width: float, openness: float) -> list[Shape]:
    """Two leaflets hinged at the annulus: across the base when closed, swung into the ventricle when open."""
    perp = (-axis[1], axis[0])
    shapes = []
    for side in (-1.0, 1.0):
        hinge = (base[0] + side * half_width * perp[0], base[1] + side * half_width * perp[1])
        # Closed: leaflet points to the centre of the annulus; open: it points back along the axis.
        ang = openness * (math.pi / 2.0 - 0.15)
        dir_closed = (-side * perp[0], -side * perp[1])
        dir_open = (-axis[0], -axis[1])
        dx = math.cos(ang) * dir_closed[0] + math.sin(ang) * dir_open[0]
        dy = math.cos(ang) * dir_closed[1] + math.sin(ang) * dir_open[1]
        leaf_len = 0.95 * half_width
        tip = (hinge[0] + leaf_len * dx, hinge[1] + leaf_len * dy)
        thick = 0.07
        pts = np.array(
            [
                (hinge[0] - thick * dy, hinge[1] + thick * dx),
                (tip[0] - thick * dy, tip[1] + thick * dx),
                (tip[0] + thick * dy, tip[1] - thick * dx),
                (hinge[0] + thick * dy, hinge[1] - thick * dx),
            ]
        )
        shapes.append(Shape(pts, VALVE))
    return shapes


@dataclass(frozen=True)
class _Beat:
    """The heart at one instant: LV axes (cm), wall thickness, valve openings, whole-heart sway."""

    length: float
    diameter: float
    rel: float  # V / EDV: 1 at ED, smallest at ES
    wall: float
    atrial_scale: float
    mitral_open: float
    aortic_open: float
    sway_u: float
    sway_d: float

    def at(self, u: float, d: float) -> tuple[float, float]:
        """A point of the heart, moved by the sway."""
        return (u + self.sway_u, d + self.sway_d)


def view_shapes(view: str, volume_ml: float, edv_ml: float, phase: float, systole_fraction: float) -> list[Shape]:
    """Shapes to draw for one frame, in drawing order (later shapes cover earlier ones).

    The LV cavity is the shape with `is_lv=True`; other chambers change in step with the cycle
    (ventricles with the LV, atria in anti-phase) so the whole picture moves.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    length, diameter = lv_axes(volume_ml, edv_ml)
    rel = volume_ml / edv_ml
    in_systole = phase < systole_fraction
    beat = _Beat(
        length=length,
        diameter=diameter,
        rel=rel,
        wall=0.9 + 0.5 * (1.0 - rel),  # the wall thickens as the cavity empties
        atrial_scale=1.0 + 0.18 * (1.0 - rel),
        mitral_open=0.0 if in_systole else float(min(1.0, (phase - systole_fraction) / 0.08)),
        aortic_open=float(math.sin(math.pi * phase / systole_fraction)) if in_systole else 0.0,
        # Whole-heart sway with the beat: the heart moves a few mm, as it does on real cines.
        sway_u=0.25 * math.sin(2.0 * math.pi * phase),
        sway_d=0.2 * math.cos(2.0 * math.pi * phase),
    )
    if view == "PLAX":
        return _plax_shapes(beat)
    if view == "PSAX":
        return _psax_shapes(beat)
    return _apical_shapes(view, beat)


def _apical_shapes(view: str, b: _Beat) -> list[Shape]:
    """Apical views: apex at the top of the fan, A4C with the right heart, A3C with the outflow tract."""
    length, diameter, wall = b.length, b.diameter, b.wall
    at = b.at
    shapes: list[Shape] = []
    # Apex at the top of the fan, long axis pointing down (slightly to the image right).
    angle = math.pi / 2.0 - 0.10
    lv_apex = at(0.6 if view == "A4C" else 0.1, 2.2)
    lv_myo, lv_cav, base, ax = _ventricle(lv_apex, angle, length, diameter, wall)
    la_r = 2.0 * b.atrial_scale
    la_centre = (base[0] + (la_r + 0.3) * ax[0], base[1] + (la_r + 0.3) * ax[1])
    if view == "A4C":
        # Right heart to the image left; the LV myocardium drawn over it forms the septum.
        rv_d = 0.6 * diameter
        rv_myo, rv_cav, rv_base, rv_ax = _ventricle(at(-1.9, 3.9), math.pi / 2.0 + 0.2, 0.8 * length, rv_d, 0.5)
        ra_r = 1.7 * b.atrial_scale
        ra_centre = (rv_base[0] + (ra_r + 0.3) * rv_ax[0], rv_base[1] + (ra_r + 0.3) * rv_ax[1])
        shapes.append(rv_myo)
        shapes.append(Shape(ellipse_points(ra_centre, ra_r + 0.3, ra_r * 0.9 + 0.3, angle), MYOCARDIUM - 3.0))
        shapes.append(rv_cav)
        shapes.append(Shape(ellipse_points(ra_centre, ra_r, ra_r * 0.9, angle), BLOOD))
        shapes += _valve(rv_base, rv_ax, rv_d / 2.0, b.mitral_open)
    shapes.append(lv_myo)
    shapes.append(Shape(ellipse_points(la_centre, la_r + 0.3, la_r * 0.9 + 0.3, angle), MYOCARDIUM - 3.0))
    if view == "A3C":
        # Outflow tract and aortic root leave the base towards the image right.
        ao_dir = -0.35
        ao_start = (base[0] + 0.6, base[1] - 0.3)
        ao_c = (ao_start[0] + 2.2 * math.cos(ao_dir), ao_start[1] + 2.2 * math.sin(ao_dir))
        shapes.append(Shape(ellipse_points(ao_c, 2.6, 1.55, ao_dir), MYOCARDIUM - 1.5))
        shapes.append(Shape(ellipse_points(ao_c, 2.4, 1.2, ao_dir), BLOOD))
        shapes += _valve(ao_start, (math.cos(ao_dir), math.sin(ao_dir)), 1.1, b.aortic_open)
    shapes.append(Shape(ellipse_points(la_centre, la_r, la_r * 0.9, angle), BLOOD))
    shapes.append(Shape(lv_cav.points, BLOOD, is_lv=True))
    shapes += _valve(base, ax, diameter * 0.42, b.mitral_open)
    return shapes


def _plax_shapes(b: _Beat) -> list[Shape]:
    """Parasternal long axis: RV in front, LV across the image, aortic root and LA to the right."""
    length, diameter, rel, wall = b.length, b.diameter, b.rel, b.wall
    at = b.at
    shapes: list[Shape] = []
    # Long axis across the image: apex to the image left and deeper, base and aorta right.
    angle = math.pi - 0.22
    ax = (math.cos(angle), math.sin(angle))
    base_centre = at(2.2, 7.2)
    # The base stays at the annulus and the apex moves: long-axis shortening.
    lv_apex = (base_centre[0] + 0.9 * length * ax[0], base_centre[1] + 0.9 * length * ax[1])
    rv_c = at(-0.6, 2.6)
    rv_half = 1.0 * (0.85 + 0.15 * rel)
    shapes.append(Shape(ellipse_points(rv_c, 4.4, rv_half + 0.5, angle), MYOCARDIUM))
    shapes.append(Shape(ellipse_points(rv_c, 4.2, rv_half, angle), BLOOD))
    lv_myo, lv_cav, base, bax = _ventricle(lv_apex, angle + math.pi, length, diameter, wall)
    shapes.append(lv_myo)
    ao_c = at(4.0, 4.6)
    shapes.append(Shape(ellipse_points(ao_c, 2.6, 1.5, -0.25), MYOCARDIUM - 1.5))
    la_r = 1.8 * b.atrial_scale
    la_c = at(4.4, 8.6)
    shapes.append(Shape(ellipse_points(la_c, la_r + 0.3, la_r * 0.85 + 0.3, 0.0), MYOCARDIUM - 3.0))
    shapes.append(Shape(ellipse_points(ao_c, 2.4, 1.15, -0.25), BLOOD))
    shapes.append(Shape(ellipse_points(la_c, la_r, la_r * 0.85, 0.0), BLOOD))
    shapes.append(Shape(lv_cav.points, BLOOD, is_lv=True))
    shapes += _valve(base, bax, diameter * 0.4, b.mitral_open)
    shapes += _valve((ao_c[0] - 1.9, ao_c[1] + 0.5), (math.cos(-0.25), math.sin(-0.25)), 1.1, b.aortic_open)
    # Posterior pericardium: the brightest line of a PLAX, behind the LV and LA.
    peri_d = 7.2 + diameter / 2.0 + wall + 0.5 + b.sway_d
    shapes.append(Shape(ellipse_points((0.5 + b.sway_u, peri_d), 6.5, 0.22, 0.06), PERICARDIUM))
    return shapes


def _psax_shapes(b: _Beat) -> list[Shape]:
    """Parasternal short axis: the LV a ring of diameter D with papillary muscles, the RV a crescent."""
    diameter, rel, wall = b.diameter, b.rel, b.wall
    at = b.at
    shapes: list[Shape] = []
    centre = at(0.4, 8.0)
    r = diameter / 2.0
    rv_c = (centre[0] - 1.4, centre[1] - r - 0.2)
    shapes.append(Shape(ellipse_points(rv_c, 3.6, 1.9 * (0.85 + 0.15 * rel), -0.35), MYOCARDIUM))
    shapes.append(Shape(ellipse_points(rv_c, 3.3, 1.5 * (0.85 + 0.15 * rel), -0.35), BLOOD))
    shapes.append(Shape(ellipse_points(centre, r + wall, r + wall, 0.0, n=64), MYOCARDIUM))
    shapes.append(Shape(ellipse_points(centre, r, r, 0.0, n=64), BLOOD, is_lv=True))
    # Papillary muscles at about 4 and 8 o'clock, inside the cavity (part of the traced LV).
    for ang in (math.radians(40.0), math.radians(140.0)):
        pc = (centre[0] + 0.6 * r * math.cos(ang), centre[1] + 0.6 * r * math.sin(ang))
        shapes.append(Shape(ellipse_points(pc, 0.28 * r, 0.22 * r, ang, n=16), MYOCARDIUM))
    peri_d = centre[1] + r + wall + 0.35
    shapes.append(Shape(ellipse_points((centre[0], peri_d), 4.5, 0.2, 0.0), PERICARDIUM))
    return shapes
