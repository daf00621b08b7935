"""Clinician tracings as masks: EchoNet's chord tracings and plain polygons, rasterised per frame.

EchoNet-Dynamic's `VolumeTracings.csv` holds, per traced frame, rows of line segments
`(X1, Y1) - (X2, Y2)`: the first row is the LV long axis, the following rows the chords across
the cavity (method of disks). The cavity outline is the X1/Y1 end of every chord followed by the
X2/Y2 ends in reverse order, the first row excluded. EchoNet-Pediatric lists the outline points
directly (`X, Y` per row). Both are filled with OpenCV (pixel centres on integer coordinates,
rounded as the dataset's own code rounds them; boundary pixels count as inside).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def chord_polygon(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """The cavity outline `[P, 2]` (x, y) of one traced frame's rows, in file order."""
    xs = np.concatenate([x1[1:], x2[1:][::-1]])
    ys = np.concatenate([y1[1:], y2[1:][::-1]])
    return np.stack([xs, ys], axis=1)


def fill_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[H, W]` mask, 1 inside the polygon `[P, 2]` (x, y in pixels)."""
    import cv2

    mask = np.zeros((height, width), dtype=np.uint8)
    if len(points) >= 3:
        cv2.fillPoly(mask, [np.rint(points).astype(np.int32)], 1)
    return mask


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area (pixels^2) of a polygon `[P, 2]`."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def masks_from_polygons(polygons: Iterable[tuple[int, np.ndarray]], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`(masks uint8 [K, H, W], frame_indices int64 [K])` from `(frame, polygon)` pairs, by frame."""
    ordered = sorted(polygons, key=lambda item: item[0])
    masks = np.stack([fill_polygon(points, height, width) for _, points in ordered]) if ordered else np.zeros((0, height, width), np.uint8)
    return masks, np.array([frame for frame, _ in ordered], dtype=np.int64)
