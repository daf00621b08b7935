"""Frame rate: first plausible source wins, absurd values fall through, the fallback is flagged."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from echofm.io.fps import DEFAULT_FPS, frame_rate


def _ds(**attrs: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("attrs", "fps", "source"),
    [
        ({"FrameTime": 33.333, "CineRate": 50, "RecommendedDisplayFrameRate": 60}, 1000 / 33.333, "FrameTime"),
        ({"FrameTimeVector": [0, 20, 20, 20], "CineRate": 30}, 50.0, "FrameTimeVector"),
        ({"CineRate": 48, "RecommendedDisplayFrameRate": 60}, 48.0, "CineRate"),
        ({"RecommendedDisplayFrameRate": 60}, 60.0, "RecommendedDisplayFrameRate"),
        # Absurd values fall through to the next source.
        ({"FrameTime": 0, "CineRate": 40}, 40.0, "CineRate"),
        ({"FrameTime": -10, "FrameTimeVector": [0, 25, 25]}, 40.0, "FrameTimeVector"),
        ({"FrameTime": 0.5, "CineRate": 2000, "RecommendedDisplayFrameRate": 24}, 24.0, "RecommendedDisplayFrameRate"),
        ({"FrameTimeVector": [0, 0, 0], "CineRate": 0}, DEFAULT_FPS, "default"),
        ({}, DEFAULT_FPS, "default"),
    ],
)
def test_frame_rate_sources_in_order(attrs: dict[str, object], fps: float, source: str) -> None:
    got_fps, got_source = frame_rate(_ds(**attrs))
    assert got_source == source
    assert got_fps == pytest.approx(fps)
