"""Still echo images (PNG, as TMED-2 publishes them) read as a `Clip` of one frame.

A still enters the model as a clip of repeated frames: ingestion samples the same frame for
every slot of the clip (see `echofm.ingest.batch`), so the header reports one source frame and
a nominal frame rate (`STILL_FPS`, fps source `"still"`) that only serves the clip's timestamps.
Decoding goes through OpenCV (already the video reader), which reads 8- and 16-bit, grey, grey +
alpha, RGB and RGBA PNGs; 16-bit images are scaled to uint8 and alpha is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echofm.io.clip import Clip
from echofm.io.errors import UnreadableImage

STILL_FORMATS: tuple[str, ...] = ("png",)
STILL_FPS = 25.0  # nominal: a still has no time axis; clip timestamps are spaced as at 25 Hz
STILL_FPS_SOURCE = "still"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 24  # signature (8) + chunk length (4) + "IHDR" (4) + width (4) + height (4)


@dataclass(frozen=True)
class StillHeader:
    """height/width in pixels, from the PNG's IHDR chunk (no pixels decoded)."""

    path: Path
    height: int
    width: int


def sniff_still(head: bytes) -> str | None:
    """"png" when the first bytes are the PNG signature, else None."""
    return "png" if head.startswith(PNG_MAGIC) else None


def probe_still(path: str | Path) -> StillHeader:
    """Size of a PNG from its header; raises `UnreadableImage` for anything else."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(_IHDR_END)
    if len(head) < _IHDR_END or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        raise UnreadableImage(path, "not a PNG with an IHDR header")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if width < 1 or height < 1:
        raise UnreadableImage(path, "PNG header gives an empty image")
    return StillHeader(path=path, height=height, width=width)


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A)/grey image, any depth, as uint8 `[H, W, C]` RGB (C = 1 or 3)."""
    import cv2

    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 2:  # grey + alpha
        return image[:, :, :1]
    rgb = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[:, :, :1]
    return rgb


def read_still(path: str | Path, indices: list[int] | None = None) -> Clip:
    """The image as a one-frame clip `[1, H, W, C]` (indices other than [0] are refused:
    the repetition into a clip is ingestion's, so it is visible in one place)."""
    import cv2

    path = Path(path)
    if indices is not None and list(indices) != [0]:
        raise UnreadableImage(path, "a still has only frame 0")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise UnreadableImage(path, "OpenCV cannot decode the PNG")
    frames = _to_rgb_uint8(image)[None]
    return Clip(
        frames=np.ascontiguousarray(frames),
        fps=STILL_FPS,
        fps_source=STILL_FPS_SOURCE,
        frame_indices=np.zeros(1, dtype=np.int64),
        n_frames_source=1,
        meta={"container": "png", "rows": int(frames.shape[1]), "columns": int(frames.shape[2])},
        source=path,
    )
