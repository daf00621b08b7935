"""MP4 / AVI echo clips through OpenCV, returned as the same `Clip` as DICOM.

Frames are decoded sequentially (seeking in compressed video is unreliable), but only up to the
last frame wanted, and frames in between are skipped with `grab()` (demux + decode, no colour
conversion or copy). Grey echo exported to video is normally stored as three equal channels
(yuv420p with neutral chroma); such clips are returned with C = 1 (see `_is_grey`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from echofm.io.clip import Clip
from echofm.io.errors import TooFewFrames, UnreadableVideo
from echofm.io.fps import DEFAULT_FPS

# A grey clip encoded with chroma subsampling decodes with channel differences of a few levels
# at most; colour Doppler or coloured annotations differ by tens.
GREY_TOLERANCE = 6
_GREY_SAMPLE_FRAMES = 4
_MAX_FPS = 1000.0


@dataclass(frozen=True)
class VideoHeader:
    """Container properties: fps in frames/s (`fps_source` "container" or "default" when the
    container's value is missing or absurd), n_frames as reported by the container, pixels."""

    path: Path
    fps: float
    fps_source: str
    n_frames: int
    height: int
    width: int
    container: str


@contextmanager
def _capture(path: Path) -> Iterator[cv2.VideoCapture]:
    if not path.is_file() or path.stat().st_size == 0:
        raise UnreadableVideo(path, "missing or empty file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UnreadableVideo(path, "OpenCV cannot open the container")
        yield cap
    finally:
        cap.release()


def _container_fps(cap: cv2.VideoCapture) -> tuple[float, str]:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if np.isfinite(fps) and 0.0 < fps <= _MAX_FPS:
        return fps, "container"
    return DEFAULT_FPS, "default"


def _header(cap: cv2.VideoCapture, path: Path) -> VideoHeader:
    fps, fps_source = _container_fps(cap)
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    if height <= 0 or width <= 0:
        raise UnreadableVideo(path, "container reports no frame size")
    return VideoHeader(
        path=path,
        fps=fps,
        fps_source=fps_source,
        n_frames=max(n_frames, 0),
        height=height,
        width=width,
        container=path.suffix.lower().lstrip(".") or "video",
    )


def probe_video(path: str | Path) -> VideoHeader:
    """Container metadata, after checking that the first frame decodes (a corrupt file often
    opens but yields nothing). Raises UnreadableVideo."""
    path = Path(path)
    with _capture(path) as cap:
        header = _header(cap, path)
        ok, frame = cap.read()
        if not ok or frame is None:
            raise UnreadableVideo(path, "no decodable frame")
        if header.n_frames <= 0:
            # Some containers (streamed AVI) carry no frame count: count by demuxing.
            count = 1
            while cap.grab():
                count += 1
            header = replace(header, n_frames=count)
    return header


def _is_grey(frames: np.ndarray) -> bool:
    """True when sampled frames of RGB `[T, H, W, 3]` have all channels within GREY_TOLERANCE."""
    sample = frames[np.linspace(0, len(frames) - 1, min(len(frames), _GREY_SAMPLE_FRAMES)).astype(int)]
    wide = sample.astype(np.int16)
    return bool(
        np.abs(wide[..., 0] - wide[..., 1]).max() <= GREY_TOLERANCE
        and np.abs(wide[..., 1] - wide[..., 2]).max() <= GREY_TOLERANCE
    )


def read_video(path: str | Path, frames: Iterable[int] | None = None, *, min_frames: int = 1) -> Clip:
    """Decode an MP4/AVI clip to a `Clip` (uint8 `[T, H, W, C]`, RGB, C = 1 for grey video).

    frames: source frame indices to return, in the order wanted (None = all). Decoding stops after
    the last wanted frame. Raises UnreadableVideo (cannot open, or decoding stops before a wanted
    frame the container promised), TooFewFrames (fewer than `min_frames`), ValueError for indices
    beyond the container's frame count.
    """
    path = Path(path)
    with _capture(path) as cap:
        header = _header(cap, path)
        if frames is None:
            decoded = _read_all(cap)
            wanted = list(range(len(decoded)))
            if not decoded:
                raise UnreadableVideo(path, "no decodable frame")
            n_source = len(decoded)
        else:
            wanted = [int(i) for i in frames]
            n_source = header.n_frames
            bad = [i for i in wanted if i < 0 or (n_source > 0 and i >= n_source)]
            if bad:
                raise ValueError(f"{path}: frame indices {bad[:5]} outside the {n_source} frames of the video")
            decoded = _read_indices(cap, path, sorted(set(wanted)))
        if n_source < min_frames:
            raise TooFewFrames(path, f"{n_source} frame(s), at least {min_frames} needed")
    unique = sorted(set(wanted))
    position = {index: k for k, index in enumerate(unique)}
    if wanted:
        rgb = np.stack([decoded[position[i]] for i in wanted])
    else:
        rgb = np.empty((0, header.height, header.width, 3), np.uint8)
    if len(rgb) and _is_grey(rgb):
        rgb = rgb.mean(axis=-1, keepdims=True).round().astype(np.uint8)
    return Clip(
        frames=np.ascontiguousarray(rgb),
        fps=header.fps,
        fps_source=header.fps_source,
        frame_indices=np.asarray(wanted, dtype=np.int64),
        n_frames_source=n_source,
        meta={"container": header.container, "rows": header.height, "columns": header.width},
        source=path,
    )


def _read_all(cap: cv2.VideoCapture) -> list[np.ndarray]:
    out = []
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return out
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def _read_indices(cap: cv2.VideoCapture, path: Path, indices: list[int]) -> list[np.ndarray]:
    """Decode sorted unique `indices`, grabbing (not retrieving) the frames in between."""
    out: list[np.ndarray] = []
    wanted = set(indices)
    last = indices[-1] if indices else -1
    for index in range(last + 1):
        if not cap.grab():
            raise UnreadableVideo(path, f"decoding stopped at frame {index}, frame {last} wanted")
        if index in wanted:
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                raise UnreadableVideo(path, f"frame {index} does not decode")
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return out
