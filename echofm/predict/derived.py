"""Measurements derived from predicted LV masks: not model outputs, computed from them.

Per clip, from masks `[T, H, W]` over the frames a segmentation model saw:

- the LV area curve (pixels per frame) and the long axis of each mask (the mask's extent along
  its principal axis, pixels);
- ED and ES: the frames of largest and smallest area;
- EF by the single-plane area-length method: V = 8 A^2 / (3 pi L) at ED and ES,
  EF = 100 (V_ED - V_ES) / V_ED.

Per study (`biplane_ef`), when an A4C and an A2C clip are both there: the biplane area-length
volume V = 8 A_4C A_2C / (3 pi L), L the shorter of the two long axes, at ED and ES. EF is a
ratio of volumes made from the same clips, so the pixel size cancels (exactly so when the shorter
axis comes from the same view at ED and ES); volumes and lengths stay in pixels, no physical
pixel size is assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AREA_LENGTH_FACTOR = 8.0 / (3.0 * math.pi)


def long_axis_px(mask: np.ndarray) -> float:
    """Extent of a binary mask `[H, W]` along its principal axis, pixels (0 for an empty mask).

    The axis is the first principal component of the mask's pixel coordinates; the extent is
    the spread of their projections plus one pixel (pixels have a width)."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return 0.0
    points = np.stack([rows, cols], axis=1).astype(np.float64)
    points -= points.mean(axis=0)
    if len(points) == 1:
        return 1.0
    _, vectors = np.linalg.eigh(points.T @ points)
    projection = points @ vectors[:, -1]
    return float(projection.max() - projection.min() + 1.0)


def area_length_volume(area_px: float, length_px: float) -> float:
    """Single-plane area-length volume `8 A^2 / (3 pi L)` (pixel^3); NaN without a length."""
    return AREA_LENGTH_FACTOR * area_px**2 / length_px if length_px > 0 else math.nan


def biplane_volume(area_a: float, area_b: float, length_px: float) -> float:
    """Biplane area-length volume `8 A_a A_b / (3 pi L)` (pixel^3); NaN without a length."""
    return AREA_LENGTH_FACTOR * area_a * area_b / length_px if length_px > 0 else math.nan


def ejection_fraction(v_ed: float, v_es: float) -> float:
    """`100 (V_ED - V_ES) / V_ED` in percent; NaN when V_ED is not positive."""
    return 100.0 * (v_ed - v_es) / v_ed if v_ed > 0 else math.nan


@dataclass(frozen=True)
class CycleMeasurements:
    """One clip's LV over the frames a model saw. area_px int64 `[T]`, length_px float64 `[T]`;
    ed/es: positions in those frames (largest / smallest area)."""

    area_px: np.ndarray
    length_px: np.ndarray
    ed: int
    es: int

    @property
    def ed_area_px(self) -> float:
        return float(self.area_px[self.ed])

    @property
    def es_area_px(self) -> float:
        return float(self.area_px[self.es])

    @property
    def ed_length_px(self) -> float:
        return float(self.length_px[self.ed])

    @property
    def es_length_px(self) -> float:
        return float(self.length_px[self.es])

    @property
    def ef_area_length(self) -> float:
        """Single-plane area-length EF (%)."""
        return ejection_fraction(area_length_volume(self.ed_area_px, self.ed_length_px),
                                 area_length_volume(self.es_area_px, self.es_length_px))


def measure_cycle(masks: np.ndarray) -> CycleMeasurements:
    """Area curve, long axes and ED/ES of binary masks `[T, H, W]` (first frame on ties)."""
    binary = np.asarray(masks) != 0
    area = binary.reshape(len(binary), -1).sum(axis=1).astype(np.int64)
    length = np.array([long_axis_px(frame) for frame in binary], dtype=np.float64)
    return CycleMeasurements(area_px=area, length_px=length, ed=int(np.argmax(area)), es=int(np.argmin(area)))


def biplane_ef(a4c: tuple[float, float, float, float], a2c: tuple[float, float, float, float]) -> float:
    """Biplane area-length EF (%) from each plane's (ED area, ES area, ED length, ES length)."""
    (a4_ed, a4_es, l4_ed, l4_es), (a2_ed, a2_es, l2_ed, l2_es) = a4c, a2c
    return ejection_fraction(biplane_volume(a4_ed, a2_ed, min(l4_ed, l2_ed)),
                             biplane_volume(a4_es, a2_es, min(l4_es, l2_es)))
