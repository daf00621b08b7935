"""The clip object every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class UltrasoundRegion:
    """One entry of SequenceOfUltrasoundRegions, in pixel coordinates (inclusive bounds)."""

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int  # 1 = 2D (tissue), 2 = M-mode, 3 = spectral, 4 = wave form...
    data_type: int  # 1 = tissue, 2 = colour flow, 3 = PW spectral, ...
    physical_delta_x: float | None = None  # physical units per pixel (cm when units == 3)
    physical_delta_y: float | None = None
    physical_units_x: int | None = None
    physical_units_y: int | None = None


@dataclass
class Clip:
    """A decoded echo clip.

    frames: uint8 `[T, H, W, C]`, RGB order, C = 1 (grey) or 3 (colour).
    fps: frames per second of the source; `fps_source` names where it came from
    ("FrameTime" | "FrameTimeVector" | "CineRate" | "RecommendedDisplayFrameRate" | "container" |
    "default").
    frame_indices: int64 `[T]`, the index in the source of each returned frame.
    meta: technical, allow-listed metadata only; never a patient-identifying value.
    pseudonyms: keyed pseudonyms (`patient_id`, `study_id`, `series_id`) when a pseudonymizer
    was given to the reader.
    """

    frames: np.ndarray
    fps: float
    fps_source: str
    frame_indices: np.ndarray
    n_frames_source: int
    meta: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    regions: list[UltrasoundRegion] = field(default_factory=list)
    pseudonyms: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] not in (1, 3):
            raise ValueError(
                f"Clip.frames must be uint8 [T, H, W, C] with C in (1, 3), got {self.frames.dtype} {self.frames.shape}"
            )
        if len(self.frame_indices) != self.frames.shape[0]:
            raise ValueError("Clip.frame_indices must have one entry per frame")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def channels(self) -> int:
        return int(self.frames.shape[3])

    @property
    def timestamps_ms(self) -> np.ndarray:
        """float64 `[T]`: time of each returned frame from the start of the source, in ms."""
        return self.frame_indices.astype(np.float64) * (1000.0 / self.fps)
