"""MP4/AVI through PyAV: RGB order, grey detection, container fps, frame subsets, corrupt files."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from echofm.io import FrameOutOfRange, TooFewFrames, UnreadableVideo, probe_video, read_video

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
    with pytest.raises(FrameOutOfRange, match="outside") as info:
        read_video(path, frames=[N_FRAMES])
    assert info.value.reason == "frame_out_of_range" and str(tmp_path) not in str(info.value)


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


def _opencv_channel_mean(path: Path) -> np.ndarray:
    """The previous reader's grey: OpenCV's BGR frames, channels averaged and rounded."""
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    return np.round(np.stack(decoded).astype(np.float64).mean(axis=-1, keepdims=True)).astype(np.uint8)


def test_studio_range_luma_maps_to_every_full_range_level_exactly() -> None:
    # The float multiply-add must give round((y - 16) * 255 / 219), clipped, for every level, at
    # every row width (SIMD bodies and scalar tails) and on strided rows (PyAV pads its planes).
    from echofm.io.video import studio_to_full

    levels = np.arange(256)
    exact = np.clip(np.round((levels - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(3)
    for width in (*range(1, 70), 255, 256, 800, 1283):
        padded = rng.integers(0, 256, (5, width + 13), dtype=np.uint8)
        padded[0, : min(width, 256)] = levels[: min(width, 256)]
        luma = padded[:, :width]
        target = np.zeros((5, width), np.uint8)
        studio_to_full(luma, target)
        np.testing.assert_array_equal(target, exact[luma])
    # A target OpenCV cannot write into (every other column of a wider array) is still filled.
    luma = rng.integers(0, 256, (4, 300), dtype=np.uint8)
    wide = np.zeros((4, 600), np.uint8)
    studio_to_full(luma, wide[:, ::2])
    np.testing.assert_array_equal(wide[:, ::2], exact[luma])
    assert not wide[:, 1::2].any()
    assert exact[16] == 0 and exact[235] == 255 and exact[0] == 0 and exact[255] == 255


@pytest.mark.parametrize(("fourcc", "suffix"), CONTAINERS)
def test_grey_video_is_the_full_range_luma_close_to_the_old_channel_mean(tmp_path: Path, fourcc: str, suffix: str) -> None:
    # mp4v is studio-range yuv420p (the studio-to-full mapping applies), MJPG full-range yuvj422p (none).
    path = tmp_path / f"grey.{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H), True)
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (N_FRAMES, H, W, 1), dtype=np.uint8)
    source[:, :16] = 20 * np.arange(N_FRAMES)[:, None, None, None]
    for grey in source:
        writer.write(np.repeat(grey, 3, axis=2))
    writer.release()
    frames = read_video(path).frames
    with av.open(str(path)) as container:
        ffmpeg_grey = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])[..., None]
    assert frames.shape == (N_FRAMES, H, W, 1) and np.array_equal(frames, ffmpeg_grey)
    old = _opencv_channel_mean(path).astype(int)
    # No further from the pixels written than the old path, and within 4 levels of it.
    assert np.abs(frames - source.astype(int)).mean() <= np.abs(old - source).mean()
    assert np.abs(frames - old).max() <= 4


def test_colour_in_a_later_sampled_frame_makes_the_clip_colour(tmp_path: Path) -> None:
    path = tmp_path / "late.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H), True)
    for t in range(N_FRAMES):
        frame = np.full((H, W, 3), 90, np.uint8)
        if t >= N_FRAMES // 2:
            frame[24:, :32] = (40, 40, 200)
        writer.write(frame)
    writer.release()
    clip = read_video(path)
    assert clip.frames.shape == (N_FRAMES, H, W, 3)
    assert clip.frames[-1, 36, 10, 0] > 170 and abs(int(clip.frames[0, 36, 10, 0]) - 90) <= 4


def test_a_pixel_format_without_chroma_is_decided_on_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey8.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "gray"
        for t in range(N_FRAMES):
            image = np.full((H, W), 90, np.uint8)
            image[:16] = 20 * t
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = read_video(path, frames=[0, 5, 9])
    assert clip.frames.shape == (3, H, W, 1)
    assert abs(int(clip.frames[0, 36, 10, 0]) - 90) <= 1 and _band(clip.frames) == [0, 100, 180]


def test_h264_with_b_frames_seeks_to_the_same_frames_as_sequential_decoding(tmp_path: Path) -> None:
    # Scanners export H.264: frames reordered (B-frames), keyframes every 10 frames.
    path = tmp_path / "h264.mp4"
    rng = np.random.default_rng(2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"g": "10", "bf": "3", "crf": "20"}
        for t in range(45):
            image = rng.integers(0, 255, (H, W), dtype=np.uint8)
            image[:16] = 4 * t
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    full = read_video(path)
    assert full.frames.shape == (45, H, W, 1)
    for window in ([23, 26, 29], [41, 44], [9, 10, 11]):
        assert np.array_equal(read_video(path, frames=window).frames, full.frames[window]), window
