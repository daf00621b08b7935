"""Per-clip QC: every check fails on the clip made to fail it and passes on a healthy clip."""

from __future__ import annotations

import numpy as np
import pytest

from echofm.ingest.config import QCThresholds
from echofm.ingest.qc import header_qc, measure_pixels, pixel_qc, pixel_sha256, run_qc

QC = QCThresholds()
H, W = 60, 80


def _fan_mask() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy > 5) & (np.abs(xx - W / 2) < (yy - 5) * 0.7)


def _healthy(t: int = 12, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Speckle that changes each frame, inside the fan; zero outside."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(20, 200, (t, H, W, channels), dtype=np.uint8)
    return frames * _fan_mask()[None, :, :, None]


def test_healthy_clip_passes_with_metrics() -> None:
    result = pixel_qc(_healthy(), _fan_mask(), "image", QC)
    assert result.passed and result.reason is None
    assert result.metrics is not None
    assert result.metrics.motion_energy > 10
    assert 0.2 < result.metrics.sector_area_fraction < 0.7
    columns = result.metric_columns()
    assert set(columns) == {
        "qc_mean_intensity",
        "qc_std_intensity",
        "qc_motion_energy",
        "qc_saturated_fraction",
        "qc_sector_area_fraction",
    }


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"n_frames": 1, "fps": 30.0, "height": 480, "width": 640}, "too_few_frames"),
        ({"n_frames": 10, "fps": 30.0, "height": 480, "width": 640}, "too_few_frames"),
        ({"n_frames": 20, "fps": 60.0, "height": 480, "width": 640}, "too_short"),
        ({"n_frames": 60, "fps": 2.0, "height": 480, "width": 640}, "fps_out_of_range"),
        ({"n_frames": 60, "fps": float("nan"), "height": 480, "width": 640}, "fps_out_of_range"),
        ({"n_frames": 60, "fps": 30.0, "height": 64, "width": 640}, "too_small"),
    ],
)
def test_header_checks(kwargs: dict, reason: str) -> None:
    reasons = header_qc(thresholds=QC, **kwargs)
    assert reasons[0] == reason
    assert header_qc(n_frames=60, fps=30.0, height=480, width=640, thresholds=QC) == ()


def test_blank_clip() -> None:
    frames = np.zeros((12, H, W, 1), np.uint8)
    assert pixel_qc(frames, _fan_mask(), "regions", QC).reason == "blank"
    grey = np.full((12, H, W, 1), 128, np.uint8)
    assert pixel_qc(grey, _fan_mask(), "regions", QC).reason == "blank"


def test_frozen_clip() -> None:
    still = np.repeat(_healthy(1), 12, axis=0)
    result = pixel_qc(still, _fan_mask(), "regions", QC)
    assert result.reasons == ("frozen",)
    assert result.metrics is not None and result.metrics.motion_energy == 0.0


def test_sector_checks() -> None:
    frames = _healthy()
    none = pixel_qc(frames, np.zeros((H, W), bool), "none", QC)
    assert none.reasons == ("no_sector",)
    tiny = np.zeros((H, W), bool)
    tiny[40:43, 38:41] = True  # inside the fan, but 0.2 % of the image
    assert pixel_qc(frames, tiny, "image", QC).reason == "sector_area_implausible"
    lenient = QCThresholds(require_sector=False)
    assert pixel_qc(frames, np.zeros((H, W), bool), "none", lenient).passed


def test_saturated_clip() -> None:
    frames = _healthy()
    frames[:, 40:] = np.where(_fan_mask()[None, 40:, :, None], 255, 0)
    result = pixel_qc(frames, _fan_mask(), "image", QC)
    assert "saturated" in result.reasons
    assert result.metrics is not None and result.metrics.saturated_fraction > QC.max_saturated_fraction


def test_colour_clip_measured_on_channel_maximum() -> None:
    frames = _healthy(channels=3)
    metrics = measure_pixels(frames, _fan_mask())
    assert metrics.mean_intensity >= measure_pixels(frames[..., :1], _fan_mask()).mean_intensity


def test_run_qc_combines_header_and_pixels() -> None:
    frames = np.zeros((12, H, W, 1), np.uint8)
    result = run_qc(frames, fps=30.0, n_frames_source=4, mask=_fan_mask(), mask_method="image", thresholds=QC)
    assert result.reasons == ("too_few_frames", "too_short", "too_small", "blank")


def test_content_hash_is_exact() -> None:
    frames = _healthy()
    copy = frames.copy()
    assert pixel_sha256(frames) == pixel_sha256(copy)
    copy[0, 30, 40, 0] ^= 1
    assert pixel_sha256(frames) != pixel_sha256(copy)
    assert pixel_sha256(frames.reshape(12, W, H, 1)) != pixel_sha256(frames)


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError):
        QCThresholds(min_fps=50.0, max_fps=10.0)
    with pytest.raises(ValueError):
        QCThresholds(min_sector_area=0.9, max_sector_area=0.5)
