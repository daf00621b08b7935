"""Frame rate of a DICOM cine from the first plausible timing attribute."""

from __future__ import annotations

import math
from collections.abc import Callable

from pydicom.dataset import Dataset

DEFAULT_FPS = 30.0
"""Used when no timing attribute is plausible: the most common echo acquisition rate. Clips with
`fps_source == "default"` have unreliable timestamps and ingestion may choose to reject them."""

_MAX_FPS = 1000.0


def _plausible(fps: float) -> bool:
    return math.isfinite(fps) and 0.0 < fps <= _MAX_FPS


def _as_float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _from_frame_time(ds: Dataset) -> float | None:
    ms = _as_float(ds.get("FrameTime"))
    return 1000.0 / ms if ms else None


def _from_frame_time_vector(ds: Dataset) -> float | None:
    vector = ds.get("FrameTimeVector")
    if vector is None:
        return None
    # pydicom gives a MultiValue for several entries and a bare number for one.
    entries = [vector] if isinstance(vector, str | bytes | int | float) else list(vector)
    values = [_as_float(v) for v in entries]
    # PS3.3 C.7.6.5.1.2: the first entry is the time of frame 1 (normally 0), later entries are
    # increments; use the mean increment so one jittered interval does not dominate.
    increments = [v for v in values[1:] if v is not None and v > 0]
    if not increments:
        return None
    return 1000.0 / (sum(increments) / len(increments))


def _from_attribute(keyword: str) -> Callable[[Dataset], float | None]:
    def read(ds: Dataset) -> float | None:
        return _as_float(ds.get(keyword))

    return read


_SOURCES = (
    ("FrameTime", _from_frame_time),
    ("FrameTimeVector", _from_frame_time_vector),
    ("CineRate", _from_attribute("CineRate")),
    ("RecommendedDisplayFrameRate", _from_attribute("RecommendedDisplayFrameRate")),
)


def frame_rate(ds: Dataset) -> tuple[float, str]:
    """Return `(fps, source)`: frames per second and the attribute it came from.

    Sources in order: FrameTime (0018,1063) in ms, FrameTimeVector (0018,1065) in ms, CineRate
    (0018,0040) and RecommendedDisplayFrameRate (0008,2144) in frames/s. A missing, zero, negative
    or absurd (> 1000 fps) value falls through to the next source; if none is usable the result
    is `(DEFAULT_FPS, "default")`.
    """
    for name, read in _SOURCES:
        try:
            fps = read(ds)
        except (TypeError, ValueError, ZeroDivisionError):
            fps = None
        if fps is not None and _plausible(fps):
            return float(fps), name
    return DEFAULT_FPS, "default"
