"""MP4/AVI through OpenCV: RGB order, grey detection, container fps, frame subsets, corrupt files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from echofm.io import TooFewFrames, UnreadableVideo, probe_video, read_video

N_FRAMES, H, W, FPS = 12, 48, 64, 24.0
# (fourcc, suffix): the encoders opencv-python-headless ships (no H.264 encoder in the wheel).
CONTAINERS = [("mp4v", "mp4"), ("MJPG", "avi")]


def _write(path: Path, fourcc: str, *, colour: bool) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H), True)
    assert writer.isOpened()
    for t in range(N_FRAMES):
        frame = np.full((H, W, 3), 90, np.uint8)
        frame[:16] = 20 * t  # frame-index band
        if colour:
            frame[24:, :32] = (40, 40, 200)  # BGR: a red block in RGB
        writer.write(frame)
    writer.release()
    return path


def _band(frames: np.ndarray) -> list[int]:
    return [int(v) for v in frames[:, 4:12, 24:40, 0].mean(axis=(1, 2)).round()]


@pytest.mark.parametrize(("fourcc", "suffix"), CONTAINERS)
def test_colour_video_reads_as_rgb(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = _write(tmp_path / f"colour.{suffix}", fourcc, colour=True)
    header = probe_video(path)
    assert (header.n_frames, header.height, header.width) == (N_FRAMES, H, W)
    assert header.fps == pytest.approx(FPS) and header.fps_source == "container"
    clip = read_video(path)
    assert clip.frames.shape == (N_FRAMES, H, W, 3)
    red = clip.frames[:, 36, 10].astype(int)
    assert (red[:, 0] > 170).all() and (red[:, 1:] < 70).all(), red[0]
    assert clip.fps == pytest.approx(FPS) and clip.fps_source == "container"
    assert clip.meta["container"] == suffix


@pytest.mark.parametrize(("fourcc", "suffix"), CONTAINERS)
def test_grey_video_reads_as_one_channel(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = _write(tmp_path / f"grey.{suffix}", fourcc, colour=False)
    clip = read_video(path)
    assert clip.frames.shape == (N_FRAMES, H, W, 1)
    assert abs(int(clip.frames[0, 36, 10, 0]) - 90) <= 4


@pytest.mark.parametrize(("fourcc", "suffix"), CONTAINERS)
def test_frame_subset(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = _write(tmp_path / f"sub.{suffix}", fourcc, colour=True)
    full = read_video(path)
    clip = read_video(path, frames=[0, 5, 9])
    assert clip.frame_indices.tolist() == [0, 5, 9]
    assert clip.n_frames_source == N_FRAMES
    assert all(abs(got - want) <= 4 for got, want in zip(_band(clip.frames), [0, 100, 180], strict=True))
    assert np.array_equal(clip.frames, full.frames[[0, 5, 9]])
    reordered = read_video(path, frames=[9, 0])
    assert np.array_equal(reordered.frames, full.frames[[9, 0]])
    with pytest.raises(ValueError, match="outside"):
        read_video(path, frames=[N_FRAMES])


def test_too_few_frames(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.avi", "MJPG", colour=False)
    with pytest.raises(TooFewFrames) as info:
        read_video(path, min_frames=N_FRAMES + 1)
    assert info.value.path == path


def test_corrupt_and_empty_videos(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.mp4", "mp4v", colour=True).read_bytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good[:40] + bytes(range(256)) * 8)
    empty = tmp_path / "empty.avi"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    for path in (corrupt, empty, text):
        for call in (probe_video, read_video):
            with pytest.raises(UnreadableVideo) as info:
                call(path)
            assert info.value.path == path and info.value.reason == "unreadable_video"


@pytest.mark.parametrize(("fourcc", "suffix"), CONTAINERS)
def test_a_later_window_is_reached_by_seeking_and_equals_sequential_decoding(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = tmp_path / f"long.{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H), True)
    rng = np.random.default_rng(0)
    for t in range(60):
        frame = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)  # texture: P-frames carry real residuals
        frame[:16] = 4 * t
        writer.write(frame)
    writer.release()
    full = read_video(path)
    window = list(range(37, 53, 2))
    clip = read_video(path, frames=window)
    assert np.array_equal(clip.frames, full.frames[window])


def test_grey_video_is_the_integer_mean_of_the_decoded_channels(tmp_path: Path) -> None:
    path = _write(tmp_path / "grey.mp4", "mp4v", colour=False)
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    expected = np.round(np.stack(decoded).astype(np.float64).mean(axis=-1, keepdims=True)).astype(np.uint8)
    assert np.array_equal(read_video(path).frames, expected)
