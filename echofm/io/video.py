"""MP4 / AVI echo clips through PyAV (FFmpeg), returned as the same `Clip` as DICOM.

Frames are decoded only up to the last frame wanted. A window that starts later in the file is
reached by seeking to the keyframe before it and decoding forward; the frame index is checked
against the timestamps, and the file is decoded from the start when they disagree.

Grey echo exported to video is stored as YUV with neutral chroma, and such clips are returned
with C = 1: the decoded Y (luma) plane itself, mapped from studio range (16-235) to full range
(0-255) when the stream is studio range (one saturating multiply-add per pixel, exactly the
mapping FFmpeg's own grey conversion applies). No colour conversion happens for them, and no
float array is made. Grey is decided on the chroma of `_GREY_SAMPLE_FRAMES` frames spread over
the kept ones: the largest |R - G| or |G - B| the BT.601 conversion would give, against the same
tolerance as every other reader (`echofm.io.grey`). Colour clips, and pixel formats other than
8-bit planar YUV, are converted to RGB by FFmpeg.

Reader choice, by measurement (docs/benchmarks.md, ingestion): OpenCV's decode costs the same,
but it hands out only BGR (its raw-plane mode cannot be switched within a stream, so the chroma
that decides grey is lost), and the BGR conversion plus the channel mean cost more than the
decoding: reading the Y plane instead took the reader to 0.58x the CPU per grey MP4 clip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from echofm.io.clip import Clip
from echofm.io.errors import FrameOutOfRange, TooFewFrames, UnreadableVideo
from echofm.io.fps import DEFAULT_FPS
from echofm.io.grey import GREY_TOLERANCE, channel_mean, is_grey
from echofm.io.quiet import silence_readers

_GREY_SAMPLE_FRAMES = 4
_MAX_FPS = 1000.0
# FFmpeg decodes on one thread: ingestion runs one worker per core, and FFmpeg's frame threads
# cost 15-30% more CPU per frame than one thread does (docs/benchmarks.md, ingestion).
DECODE_THREADS = 1
# 8-bit planar YUV: plane 0 is Y, planes 1 and 2 are U and V at any subsampling.
_PLANAR_YUV8 = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p", "yuv411p", "yuv410p"}
)
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
# Studio-range luma (16-235) to full range, round((y - 16) * 255 / 219) clipped to 0-255: FFmpeg's
# own grey conversion. One float32 multiply-add per pixel (`cv2.addWeighted`, saturating) gives
# exactly these levels for every input: the exact value never comes within 1/438 of a rounding
# tie, far beyond float32's error, so FMA or not, any SIMD width, the result is the same; ~3x
# faster than a table lookup (docs/benchmarks.md, ingestion, r9).
_STUDIO_SCALE = 255.0 / 219.0
_STUDIO_OFFSET = -16.0 * 255.0 / 219.0  # grey levels
# |R - G| and |G - B| per unit of (U - 128, V - 128), BT.601, for full-range and studio-range YUV.
_SPREAD_FULL = np.array([[0.344136, 2.116136], [2.116136, 0.714136]], np.float32)
_SPREAD_STUDIO = _SPREAD_FULL * np.float32(255.0 / 224.0)


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
def _open(path: Path) -> Iterator[tuple[Any, Any]]:
    """The container and its first video stream, set to decode on `DECODE_THREADS` threads."""
    silence_readers()
    if not path.is_file() or path.stat().st_size == 0:
        raise UnreadableVideo(path, "missing or empty file")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError):
        raise UnreadableVideo(path, "FFmpeg cannot open the container") from None
    try:
        if not container.streams.video:
            raise UnreadableVideo(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = DECODE_THREADS
        yield container, stream
    finally:
        container.close()


def _stream_fps(stream: Any) -> tuple[float, str]:
    rate = stream.guessed_rate or stream.average_rate
    fps = float(rate) if rate else 0.0
    if np.isfinite(fps) and 0.0 < fps <= _MAX_FPS:
        return fps, "container"
    return DEFAULT_FPS, "default"


def _header(container: Any, stream: Any, path: Path) -> VideoHeader:
    fps, fps_source = _stream_fps(stream)
    n_frames = int(stream.frames or 0)
    if n_frames <= 0 and fps_source == "container":
        # No frame count in the container: estimate it from the duration, as OpenCV did (the
        # container's duration first, then the stream's).
        if container.duration:
            n_frames = round(container.duration / av.time_base * fps)
        elif stream.duration and stream.time_base:
            n_frames = round(float(stream.duration * stream.time_base) * fps)
    height, width = int(stream.codec_context.height or 0), int(stream.codec_context.width or 0)
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


def _decoded(container: Any, stream: Any) -> Iterator[Any]:
    """The stream's frames in presentation order; a decoding error ends the stream."""
    try:
        yield from container.decode(stream)
    except (av.FFmpegError, ValueError):
        return


def probe_video(path: str | Path) -> VideoHeader:
    """Container metadata, after checking that the first frame decodes (a corrupt file often
    opens but yields nothing). Raises UnreadableVideo."""
    path = Path(path)
    with _open(path) as (container, stream):
        header = _header(container, stream, path)
        frames = _decoded(container, stream)
        if next(frames, None) is None:
            raise UnreadableVideo(path, "no decodable frame")
        if header.n_frames <= 0:
            # Some containers (streamed AVI) carry no frame count: count by decoding.
            header = replace(header, n_frames=1 + sum(1 for _ in frames))
    return header


def _plane(frame: Any, index: int) -> np.ndarray:
    """Plane `index` of a decoded frame as a uint8 `[h, w]` view (rows padded to line_size)."""
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def _full_range(frame: Any) -> bool:
    return frame.format.name.startswith("yuvj") or frame.color_range == _FULL_RANGE


def chroma_spread(frame: Any) -> int:
    """The largest |R - G| or |G - B| (grey levels) the BT.601 conversion of an 8-bit planar
    YUV frame gives, computed on its chroma samples (upsampling only averages them)."""
    u = cv2.subtract(_plane(frame, 1), 128, dtype=cv2.CV_16S).astype(np.float32)
    v = cv2.subtract(_plane(frame, 2), 128, dtype=cv2.CV_16S).astype(np.float32)
    (a, b), (c, d) = _SPREAD_FULL if _full_range(frame) else _SPREAD_STUDIO
    return round(max(float(np.abs(a * u + b * v).max()), float(np.abs(c * u + d * v).max())))


def _frame_is_grey(frame: Any) -> bool | None:
    """Grey by chroma for 8-bit planar YUV; None for other pixel formats (decided on RGB)."""
    if frame.format.name not in _PLANAR_YUV8:
        return None
    # The largest |U - 128| and |V - 128| bound the spread; for grey echo (chroma within a level
    # or two of neutral) the bound decides, without the per-sample arithmetic.
    (a, b), (c, d) = _SPREAD_FULL if _full_range(frame) else _SPREAD_STUDIO
    du, dv = (cv2.minMaxLoc(cv2.absdiff(_plane(frame, k), 128))[1] for k in (1, 2))
    if round(max(a * du + b * dv, c * du + d * dv)) <= GREY_TOLERANCE:
        return True
    return chroma_spread(frame) <= GREY_TOLERANCE


def _grey_into(frame: Any, target: np.ndarray) -> None:
    """The full-range luma of an 8-bit planar YUV frame into uint8 `target` `[H, W]`."""
    luma = _plane(frame, 0)
    if _full_range(frame):
        np.copyto(target, luma)
    else:
        studio_to_full(luma, target)


def studio_to_full(luma: np.ndarray, target: np.ndarray) -> None:
    """Studio-range luma levels (uint8 `[H, W]`, rows may be strided) as full-range grey into
    uint8 `target` `[H, W]`: round((y - 16) * 255 / 219), clipped to 0-255."""
    # OpenCV writes straight into a target with contiguous rows (what the reader passes); it
    # refuses other strides, which get a copy.
    dst = target if target.strides[-1] == 1 else None
    mapped = cv2.addWeighted(luma, _STUDIO_SCALE, luma, 0.0, _STUDIO_OFFSET, dst=dst)
    if mapped is not target:
        np.copyto(target, mapped)


class _Retry(Exception):
    """Decode the file again, differently."""


class _SeekMiss(_Retry):
    """A seek landed where timestamps and frame count disagree: decode from the start."""


class _ColourLater(_Retry):
    """A sampled frame after the first is colour: decode to RGB."""


def _numbered(container: Any, stream: Any, path: Path, start: int, fps: float, seek: bool) -> Iterator[tuple[int, Any]]:
    """(frame index, frame) in presentation order, from frame `start` or earlier. With `seek`,
    from the keyframe before `start`, numbered by timestamp, and every later frame's timestamp
    checked against its count (raises `_SeekMiss` when they disagree)."""
    frames = _decoded(container, stream)
    if not seek or start <= 0:
        yield from enumerate(frames)
        return
    base, offset = stream.time_base, stream.start_time or 0
    rate = Fraction(fps).limit_denominator(1001000)
    if not base:
        raise _SeekMiss

    def number(frame: Any) -> int | None:
        return None if frame.pts is None else round((frame.pts - offset) * base * rate)

    try:
        container.seek(offset + int(Fraction(start) / rate / base), stream=stream, backward=True)
    except (av.FFmpegError, ValueError):
        raise _SeekMiss from None
    index = None
    for frame in frames:
        if index is None:
            index = number(frame)
            if index is None or not 0 <= index <= start:
                raise _SeekMiss
        else:
            index += 1
            if number(frame) != index:
                raise _SeekMiss  # a gap or uneven timestamps: frames are counted from the start instead
        yield index, frame


def _decode(path: Path, indices: list[int] | None, *, grey_mode: bool, seek: bool) -> tuple[np.ndarray, bool | None, VideoHeader]:
    """Decode sorted unique `indices` (None = every frame) to uint8 `[K, H, W, C]`; returns them,
    whether they are grey (True: C = 1, luma; False: C = 3, RGB; None: RGB of a pixel format
    without chroma planes, not decided here), and the header.

    grey_mode=True takes luma while every sampled frame is grey, RGB when the first is colour,
    and raises `_ColourLater` when a later one is; False converts everything to RGB.
    """
    with _open(path) as (container, stream):
        header = _header(container, stream, path)
        if indices is not None and indices and (indices[0] < 0 or (header.n_frames > 0 and indices[-1] >= header.n_frames)):
            bad = [i for i in indices if i < 0 or i >= header.n_frames]
            raise FrameOutOfRange(path, f"frame indices {bad[:5]} outside the {header.n_frames} frames of the video")
        undecided = False
        n_kept = len(indices) if indices is not None else header.n_frames
        samples = _sample_positions(n_kept)
        grey: bool | None = None if grey_mode else False
        out = None
        k = 0
        start = indices[0] if indices else 0
        for index, frame in _numbered(container, stream, path, start, header.fps, seek):
            if indices is not None:
                if k == len(indices):
                    break
                if index != indices[k]:
                    continue
            if frame.height != header.height or frame.width != header.width:
                raise UnreadableVideo(path, f"frame {index} changes the frame size")
            if grey is not False and (grey is None or k in samples):
                verdict = _frame_is_grey(frame)
                if grey and not verdict:
                    raise _ColourLater
                grey, undecided = bool(verdict), verdict is None
            if out is None:
                out = np.empty((max(n_kept, 1), header.height, header.width, 1 if grey else 3), np.uint8)
            elif k == len(out):
                # The container's frame count was low: grow as decoding goes.
                out = np.concatenate([out, np.empty_like(out)])
            if grey:
                _grey_into(frame, out[k, :, :, 0])
            else:
                out[k] = frame.to_ndarray(format="rgb24")
            k += 1
        if indices is not None and k < len(indices):
            raise UnreadableVideo(path, f"decoding stopped before frame {indices[k]}, frame {indices[-1]} wanted")
    if out is None:
        out = np.empty((0, header.height, header.width, 1), np.uint8)
    return out[:k], None if undecided else bool(grey), header


def _sample_positions(count: int) -> set[int]:
    """Positions among `count` kept frames whose chroma decides grey (the first always)."""
    if count <= 0:
        return {0}
    return set(np.linspace(0, count - 1, min(count, _GREY_SAMPLE_FRAMES)).astype(int).tolist())


def read_video(path: str | Path, frames: Iterable[int] | None = None, *, min_frames: int = 1) -> Clip:
    """Decode an MP4/AVI clip to a `Clip` (uint8 `[T, H, W, C]`, RGB, C = 1 for grey video).

    frames: source frame indices to return, in the order wanted (None = all). Decoding stops after
    the last wanted frame. Raises UnreadableVideo (cannot open, or decoding stops before a wanted
    frame the container promised), TooFewFrames (fewer than `min_frames`), ValueError for indices
    beyond the container's frame count.
    """
    path = Path(path)
    wanted = None if frames is None else [int(i) for i in frames]
    unique = None if wanted is None else sorted(set(wanted))
    grey_mode, seek = True, True
    while True:
        try:
            decoded, grey, header = _decode(path, unique, grey_mode=grey_mode, seek=seek)
            break
        except _SeekMiss:
            seek = False  # each at most once: decoding again without seeking, or to RGB
        except _ColourLater:
            grey_mode = False
    if wanted is None:
        if not len(decoded):
            raise UnreadableVideo(path, "no decodable frame")
        n_source = len(decoded)
        wanted = list(range(n_source))
    else:
        n_source = header.n_frames
        if wanted != unique:
            position = {index: k for k, index in enumerate(unique)}
            decoded = decoded[[position[i] for i in wanted]]
    if n_source < min_frames:
        raise TooFewFrames(path, f"{n_source} frame(s), at least {min_frames} needed")
    if grey is None and len(decoded):
        # Pixel formats other than planar YUV come out as RGB and are decided on it.
        picks = sorted(_sample_positions(len(decoded)))
        if is_grey(decoded[picks]):
            decoded = channel_mean(decoded)
    return Clip(
        frames=decoded,
        fps=header.fps,
        fps_source=header.fps_source,
        frame_indices=np.asarray(wanted, dtype=np.int64),
        n_frames_source=n_source,
        meta={"container": header.container, "rows": header.height, "columns": header.width},
        source=path,
    )
