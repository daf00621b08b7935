"""The floor of `echofm bench ingest`: the best external decoders doing only the unavoidable work.

For each file, the frames the pipeline keeps are decoded, and nothing else is done:

- JPEG DICOM: the kept frames' JPEG bytes (taken from the encapsulated pixel data beforehand,
  not timed) decoded by libjpeg-turbo straight to the output colour model (grey for grey
  content, RGB otherwise), through every front end installed: OpenCV `imdecode`, Pillow
  (`draft`), simplejpeg. The fastest one is the floor.
- MP4/AVI: the container opened, demuxed and decoded up to the last kept frame, the kept
  frames taken out, by every reader installed: OpenCV (one FFmpeg thread; the kept frames
  converted to BGR, its only output), PyAV (one thread; the Y plane of grey video mapped to
  full range, as the pipeline's frames are, RGB otherwise). The fastest one is the floor.
- anything else: the project's own reader (no external decoder is faster at its own format).

Times are CPU seconds of this process; each front end decodes every file once per pass.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np


# Channel spread below which a frame is grey (the project's tolerance, restated so that this file
# also measures older versions of the project).
_GREY_SPREAD = 6
# Grey video frames are full-range luma: studio-range levels 16-235 stretched to 0-255 (BT.601),
# round((y - 16) * 255 / 219), as the project's reader gives them (restated for the same reason).
_STUDIO_SCALE = 255.0 / 219.0
_STUDIO_OFFSET = -16.0 * 255.0 / 219.0


def _full_range_luma(frame: Any, luma: np.ndarray) -> np.ndarray:
    """A decoded frame's Y plane `luma` as full-range grey, the fastest way measured (one float32
    multiply-add per pixel; a table lookup gives the same levels ~3x slower, FFmpeg's swscale
    `gray` output ~15x slower)."""
    if frame.format.name.startswith("yuvj") or frame.color_range == 2:  # AVCOL_RANGE_JPEG
        return luma.copy()
    return cv2.addWeighted(luma, _STUDIO_SCALE, luma, 0.0, _STUDIO_OFFSET)


@dataclass
class FloorTimes:
    """CPU seconds of one pass per front end, split by kind of file."""

    jpeg: dict[str, float] = field(default_factory=dict)
    video: dict[str, float] = field(default_factory=dict)
    other: float = 0.0

    def best(self) -> float:
        """The floor: the fastest front end for each kind, summed."""
        return min(self.jpeg.values(), default=0.0) + min(self.video.values(), default=0.0) + self.other


@dataclass(frozen=True)
class _JpegJob:
    frames: list[bytes]
    grey: bool


def _jpeg_job(path: Path, indices: np.ndarray) -> _JpegJob | None:
    """The kept frames' JPEG bytes of a JPEG Baseline / 8-bit Extended DICOM, None otherwise."""
    import pydicom
    from pydicom import uid
    from pydicom.encaps import get_frame

    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID not in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit) or int(ds.BitsStored) != 8:
        return None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = [get_frame(ds.PixelData, int(i), number_of_frames=n_frames) for i in indices]
    sample = cv2.imdecode(np.frombuffer(frames[len(frames) // 2], np.uint8), cv2.IMREAD_COLOR_RGB)
    grey = int(ds.SamplesPerPixel) == 1 or int((sample.max(axis=-1) - sample.min(axis=-1)).max()) <= _GREY_SPREAD
    return _JpegJob(frames=frames, grey=grey)


def _opencv_jpeg(job: _JpegJob) -> None:
    flags = (cv2.IMREAD_GRAYSCALE if job.grey else cv2.IMREAD_COLOR_RGB) | cv2.IMREAD_IGNORE_ORIENTATION
    for data in job.frames:
        cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def _pillow_jpeg(job: _JpegJob) -> None:
    from PIL import Image

    for data in job.frames:
        image = Image.open(io.BytesIO(data))
        image.draft("L" if job.grey else "RGB", image.size)
        np.asarray(image)


def _simplejpeg_jpeg(job: _JpegJob) -> None:
    import simplejpeg  # type: ignore[import-not-found]

    for data in job.frames:
        simplejpeg.decode_jpeg(data, colorspace="GRAY" if job.grey else "RGB")


def _opencv_video(path: Path, indices: np.ndarray) -> None:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    wanted = set(indices.tolist())
    for index in range(int(indices[-1]) + 1):
        cap.grab()
        if index in wanted:
            cap.retrieve()
    cap.release()


def _pyav_video(path: Path, indices: np.ndarray, grey: bool) -> None:
    import av  # type: ignore[import-not-found]

    wanted = set(indices.tolist())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                if grey:
                    # The same frames as ingestion's: full-range luma.
                    plane = frame.planes[0]
                    luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
                    _full_range_luma(frame, luma)
                else:
                    frame.to_ndarray(format="rgb24")
            if index >= indices[-1]:
                break


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


class DecodeFloor:
    """Prepared once per archive (JPEG bytes extracted, grey decided), timed per pass."""

    def __init__(self, files: list[Any], kept: dict[str, np.ndarray], project_decode: Callable[[Any, np.ndarray], Any]) -> None:
        self._jpeg: list[_JpegJob] = []
        self._video: list[tuple[Path, np.ndarray, bool]] = []
        self._other: list[tuple[Any, np.ndarray]] = []
        self._project_decode = project_decode
        for item in files:
            indices = kept.get(item.rel_path)
            if indices is None:
                continue
            if item.source_format == "dicom":
                job = _jpeg_job(item.path, indices)
                if job is not None:
                    self._jpeg.append(job)
                else:
                    self._other.append((item, indices))
            else:
                clip = project_decode(item, indices[:1])
                self._video.append((item.path, indices, clip.frames.shape[-1] == 1))
        self.jpeg_front_ends: dict[str, Callable[[_JpegJob], None]] = {"opencv": _opencv_jpeg, "pillow": _pillow_jpeg}
        if _installed("simplejpeg"):
            self.jpeg_front_ends["simplejpeg"] = _simplejpeg_jpeg
        self.video_readers: dict[str, Callable[[Path, np.ndarray, bool], None]] = {
            "opencv": lambda path, indices, _grey: _opencv_video(path, indices)
        }
        if _installed("av"):
            self.video_readers["pyav"] = _pyav_video

    @property
    def n_jpeg_frames(self) -> int:
        return sum(len(job.frames) for job in self._jpeg)

    @property
    def n_video_files(self) -> int:
        return len(self._video)

    def measure(self) -> FloorTimes:
        """One pass of every front end over the archive."""
        times = FloorTimes()
        for name, decode in self.jpeg_front_ends.items():
            started = time.process_time()
            for job in self._jpeg:
                decode(job)
            times.jpeg[name] = time.process_time() - started
        for name, read in self.video_readers.items():
            started = time.process_time()
            for path, indices, grey in self._video:
                read(path, indices, grey)
            times.video[name] = time.process_time() - started
        started = time.process_time()
        for item, indices in self._other:
            self._project_decode(item, indices)
        times.other = time.process_time() - started
        return times
