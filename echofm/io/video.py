"""MP4 / AVI echo clips through OpenCV, returned as the same `Clip` as DICOM.

Frames are decoded only up to the last frame wanted. A window that starts later in the file is
reached by seeking (OpenCV seeks to the keyframe before it and decodes forward to the frame,
which it checks); frames in between are skipped with `grab()` (demux + decode, no colour
conversion or copy). Only wanted frames are converted, straight into one uint8 array: grey
echo exported to video is normally stored as three equal channels (yuv420p with neutral chroma),
and such clips are returned with C = 1, the integer mean of the channels (`echofm.io.grey`),
never through float arrays.

Reader choice: OpenCV, measured against PyAV (docs/benchmarks.md, ingestion): PyAV's Y plane
saves about 0.5 ms per kept 800 x 600 frame, not enough to add a second FFmpeg build (~100 MB,
with GPL codec libraries) next to OpenCV's.
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
from echofm.io.quiet import silence_readers
from echofm.io.fps import DEFAULT_FPS
from echofm.io.grey import channel_mean, is_grey

_GREY_SAMPLE_FRAMES = 4
_MAX_FPS = 1000.0
# FFmpeg decodes on one thread: ingestion runs one worker per core, and FFmpeg's frame threads
# cost 15-30% more CPU per frame than one thread does (docs/benchmarks.md, ingestion).
DECODE_THREADS = 1


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
    silence_readers()
    if not path.is_file() or path.stat().st_size == 0:
        raise UnreadableVideo(path, "missing or empty file")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS])
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


def _sampled_frames_grey(frames: np.ndarray) -> bool:
    """True when sampled frames of `[T, H, W, 3]` have all channels within the grey tolerance."""
    return is_grey(frames[np.linspace(0, len(frames) - 1, min(len(frames), _GREY_SAMPLE_FRAMES)).astype(int)])


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
            decoded = _read_all(cap, header)
            wanted = list(range(len(decoded)))
            if not len(decoded):
                raise UnreadableVideo(path, "no decodable frame")
            n_source = len(decoded)
        else:
            wanted = [int(i) for i in frames]
            n_source = header.n_frames
            bad = [i for i in wanted if i < 0 or (n_source > 0 and i >= n_source)]
            if bad:
                raise ValueError(f"{path}: frame indices {bad[:5]} outside the {n_source} frames of the video")
            decoded = _read_indices(cap, path, header, sorted(set(wanted)))
        if n_source < min_frames:
            raise TooFewFrames(path, f"{n_source} frame(s), at least {min_frames} needed")
    unique = sorted(set(wanted))
    if wanted != unique:
        position = {index: k for k, index in enumerate(unique)}
        decoded = decoded[[position[i] for i in wanted]]
    if len(decoded) and _sampled_frames_grey(decoded):
        frames_out = channel_mean(decoded)
    else:
        for frame in decoded:
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=frame)
        frames_out = decoded
    return Clip(
        frames=frames_out,
        fps=header.fps,
        fps_source=header.fps_source,
        frame_indices=np.asarray(wanted, dtype=np.int64),
        n_frames_source=n_source,
        meta={"container": header.container, "rows": header.height, "columns": header.width},
        source=path,
    )


def _read_all(cap: cv2.VideoCapture, header: VideoHeader) -> np.ndarray:
    """Every frame, BGR `[T, H, W, 3]` (grown as decoding goes: the container's count may lie)."""
    out = np.empty((max(header.n_frames, 1), header.height, header.width, 3), np.uint8)
    count = 0
    while cap.grab():
        if count == len(out):
            out = np.concatenate([out, np.empty_like(out)])
        if not _retrieve_into(cap, out[count]):
            break
        count += 1
    return out[:count]


def _retrieve_into(cap: cv2.VideoCapture, target: np.ndarray) -> bool:
    """Convert the grabbed frame to BGR into `target` (`[H, W, 3]`); False when it does not."""
    ok, frame = cap.retrieve(target)
    if not ok or frame is None or frame.shape != target.shape:
        return False
    if not np.shares_memory(frame, target):
        target[...] = frame
    return True


def _seek(cap: cv2.VideoCapture, index: int) -> bool:
    """Position `cap` so that the next `grab()` returns frame `index`: OpenCV seeks to the
    keyframe before it and decodes forward. False (position unknown) when it cannot."""
    return bool(cap.set(cv2.CAP_PROP_POS_FRAMES, index)) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == index


def _read_indices(cap: cv2.VideoCapture, path: Path, header: VideoHeader, indices: list[int]) -> np.ndarray:
    """Decode sorted unique `indices` to BGR `[K, H, W, 3]`, grabbing (not converting) the
    frames in between and seeking past the frames before the first one."""
    out = np.empty((len(indices), header.height, header.width, 3), np.uint8)
    if not indices:
        return out
    start = 0
    if indices[0] > 0:
        if _seek(cap, indices[0]):
            start = indices[0]
        else:
            # The container refused an exact seek: decode from the start instead.
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    last = indices[-1]
    k = 0
    for index in range(start, last + 1):
        if not cap.grab():
            raise UnreadableVideo(path, f"decoding stopped at frame {index}, frame {last} wanted")
        if index == indices[k]:
            if not _retrieve_into(cap, out[k]):
                raise UnreadableVideo(path, f"frame {index} does not decode")
            k += 1
    return out
