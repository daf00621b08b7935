"""Measurements derived from LV masks, on synthetic masks whose areas and axes are known.

An ellipse with semi-axes a (long) and b has area pi a b and long axis 2a, so the area-length
volume 8 A^2 / (3 pi L) is the prolate ellipsoid's (4/3) pi a b^2; the biplane volume of two
ellipses sharing the long axis is (4/3) pi a b1 b2. The EF of such masks is known in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from echofm.predict.derived import biplane_ef, long_axis_px, measure_cycle

SIDE = 224


def ellipse(a: float, b: float, angle_deg: float = 0.0) -> np.ndarray:
    """Binary mask `[224, 224]` of an ellipse centred in the frame, long axis a at `angle_deg`."""
    yy, xx = np.mgrid[:SIDE, :SIDE].astype(np.float64) - (SIDE - 1) / 2
    theta = math.radians(angle_deg)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.uint8)


def ellipsoid_ef(a_ed: float, b_ed: float, a_es: float, b_es: float) -> float:
    return 100.0 * (1.0 - (a_es * b_es**2) / (a_ed * b_ed**2))


def test_long_axis_follows_the_mask_at_any_angle() -> None:
    for angle in (0.0, 30.0, 90.0):
        assert long_axis_px(ellipse(60, 25, angle)) == pytest.approx(120, abs=2.0)
    assert long_axis_px(np.zeros((8, 8))) == 0.0


def test_cycle_finds_ed_and_es_and_the_area_length_ef() -> None:
    # One cycle: the LV shrinks from (a, b) = (80, 40) to (70, 28) and fills again; tilted 20 degrees.
    phase = (1 - np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False))) / 2
    axes = [(80 - 10 * p, 40 - 12 * p) for p in phase]
    masks = np.stack([ellipse(a, b, 20.0) for a, b in axes])
    cycle = measure_cycle(masks)

    assert cycle.ed == 0 and cycle.es == 8  # largest area first, smallest at mid-cycle
    assert cycle.area_px.shape == (16,) and np.all(np.diff(cycle.area_px[:9]) <= 0)
    assert cycle.ed_area_px == pytest.approx(math.pi * 80 * 40, rel=0.01)
    assert cycle.es_area_px == pytest.approx(math.pi * 70 * 28, rel=0.01)
    assert cycle.ef_area_length == pytest.approx(ellipsoid_ef(80, 40, 70, 28), abs=1.0)


def test_biplane_ef_of_two_orthogonal_planes() -> None:
    # A4C and A2C share the long axis a; their widths differ (b4, b2).
    planes = {}
    for view, (b_ed, b_es) in {"A4C": (40, 28), "A2C": (34, 25)}.items():
        cycle = measure_cycle(np.stack([ellipse(80, b_ed), ellipse(70, b_es)]))
        planes[view] = (cycle.ed_area_px, cycle.es_area_px, cycle.ed_length_px, cycle.es_length_px)
    expected = 100.0 * (1.0 - (70 * 28 * 25) / (80 * 40 * 34))
    assert biplane_ef(planes["A4C"], planes["A2C"]) == pytest.approx(expected, abs=1.0)


def test_an_empty_mask_gives_no_ef_rather_than_a_number() -> None:
    cycle = measure_cycle(np.zeros((4, 16, 16), dtype=np.uint8))
    assert math.isnan(cycle.ef_area_length)
