from __future__ import annotations

import numpy as np
import pytest

from echofm.preprocess.resample import (
    DEFAULT_WINDOW_MS,
    ResampleInputError,
    plan_windows,
    resize_pad,
    union_indices,
    window_duration_ms,
    window_span_ms,
)


def test_windows_follow_timestamps_not_frame_order():
    # 90 fps, 2 s window: 32 instants 62.5 ms apart are 5.625 source frames apart.
    (window,) = plan_windows(300, 90.0, window_ms=2000.0)
    assert window.dtype == np.int64 and window.shape == (32,)
    assert window[0] == 0
    steps = np.diff(window)
    assert set(steps.tolist()) <= {5, 6}
    assert abs(steps.mean() - 5.625) < 0.1
    # The same window of a 30 fps recording covers the same time: every ~1.9th frame.
    (slow,) = plan_windows(100, 30.0, window_ms=2000.0)
    instants = np.arange(32) * 62.5
    np.testing.assert_allclose(window * (1000 / 90), instants, atol=1000 / 90 / 2 + 1e-6)
    np.testing.assert_allclose(slow * (1000 / 30), instants, atol=1000 / 30 / 2 + 1e-6)


def test_heart_rate_gives_one_cardiac_cycle():
    # 75 bpm -> 800 ms; at 50 fps that is 40 frames, sampled at 25 ms = 1.25 frames apart.
    (window,) = plan_windows(200, 50.0, heart_rate_bpm=75.0)
    start, end = window_span_ms(window, 50.0)
    assert start == 0.0
    assert 780.0 <= end <= 820.0
    # An explicit window wins over the heart rate; implausible heart rates are ignored.
    assert window_duration_ms(window_ms=500.0, heart_rate_bpm=75.0) == 500.0
    assert window_duration_ms(heart_rate_bpm=0.0) == DEFAULT_WINDOW_MS
    assert window_duration_ms(heart_rate_bpm=float("nan")) == DEFAULT_WINDOW_MS


def test_long_cine_yields_several_non_overlapping_windows():
    windows = plan_windows(500, 100.0, window_ms=1000.0, max_windows=10)
    assert len(windows) == 5
    for earlier, later in zip(windows, windows[1:]):
        assert earlier.max() < later.min()
    assert windows[-1].max() <= 499
    # max_windows caps the count; a trailing part shorter than a window is left out.
    assert len(plan_windows(500, 100.0, window_ms=1000.0, max_windows=3)) == 3
    assert len(plan_windows(450, 100.0, window_ms=1000.0, max_windows=10)) == 4


def test_short_cine_is_used_whole_with_repeats_and_rejected_below_min_coverage():
    # 20 frames at 25 fps = 800 ms, shorter than a 1000 ms window: spread over the whole cine.
    (window,) = plan_windows(20, 25.0, window_ms=1000.0)
    assert window.shape == (32,)
    assert window[0] == 0 and window[-1] == 19
    assert len(np.unique(window)) == 20  # every source frame used, some repeated
    assert np.all(np.diff(window) >= 0)
    # 5 frames at 25 fps = 200 ms covers 20% of the window: below min_coverage, no clip.
    assert plan_windows(5, 25.0, window_ms=1000.0, min_coverage=0.25) == []
    assert len(plan_windows(5, 25.0, window_ms=1000.0, min_coverage=0.2)) == 1


def test_union_indices_lists_each_needed_frame_once():
    windows = plan_windows(300, 30.0, window_ms=1000.0, max_windows=3, num_frames=32)
    union = union_indices(windows)
    assert union.dtype == np.int64
    assert np.all(np.diff(union) > 0)
    assert set(union.tolist()) == set(np.concatenate(windows).tolist())
    # searchsorted maps a window onto rows of the decoded subset.
    rows = np.searchsorted(union, windows[1])
    np.testing.assert_array_equal(union[rows], windows[1])
    assert union_indices([]).shape == (0,)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_frames_source=0, fps=30.0), dict(n_frames_source=10, fps=0.0), dict(n_frames_source=10, fps=30.0, max_windows=0)],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ResampleInputError):
        plan_windows(**kwargs)


def test_resize_pad_keeps_aspect_and_centres_padding():
    frames = np.full((3, 600, 800, 1), 200, dtype=np.uint8)
    out = resize_pad(frames, size=224)
    assert out.shape == (3, 224, 224, 1) and out.dtype == np.uint8
    # 800 -> 224 so 600 -> 168: 28 rows of zeros above and below.
    rows = np.where(out[0, :, :, 0].max(axis=1) > 0)[0]
    assert rows.min() == 28 and rows.max() == 28 + 168 - 1
    assert np.all(out[:, 28:196] == 200)
    assert np.all(out[:, :28] == 0) and np.all(out[:, 196:] == 0)


def test_resize_pad_colour_portrait_and_upscale():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(2, 100, 50, 3), dtype=np.uint8)
    out = resize_pad(frames, size=224)
    assert out.shape == (2, 224, 224, 3)
    cols = np.where(out[0].max(axis=(0, 2)) > 0)[0]
    assert cols.min() == 56 and cols.max() == 56 + 112 - 1  # 50 -> 112 wide, centred
    # Channels are not mixed: a pure red frame stays pure red.
    red = np.zeros((1, 40, 40, 3), dtype=np.uint8)
    red[..., 0] = 255
    out_red = resize_pad(red, size=64)
    assert np.all(out_red[..., 0] == 255) and np.all(out_red[..., 1:] == 0)


def test_resize_pad_rejects_wrong_layout():
    with pytest.raises(ResampleInputError):
        resize_pad(np.zeros((2, 10, 10), dtype=np.uint8))
    with pytest.raises(ResampleInputError):
        resize_pad(np.zeros((2, 10, 10, 1), dtype=np.float32))


def test_output_masks_exclude_the_exterior_or_include_every_touched_pixel() -> None:
    from echofm.preprocess.resample import mask_at_size

    mask = np.zeros((300, 400), bool)
    mask[50:250, 100:300] = True
    inside = mask_at_size(mask, 224, whole=True)
    # A bright exterior next to a dark sector: after resize and masking nothing bright survives.
    frames = np.where(mask, 10, 255).astype(np.uint8)[None, :, :, None]
    stored = resize_pad(frames, 224) * inside[None, :, :, None]
    assert stored.max() == 10
    assert 0.9 * (mask.mean() * (224 * 168) / 224**2) < inside.mean() <= mask.mean() * 168 / 224
    # One overlay pixel marks every output pixel whose footprint it falls in, and no other.
    dot = np.zeros((300, 400), bool)
    dot[120, 201] = True
    touched = mask_at_size(dot, 224, whole=False)
    assert 1 <= touched.sum() <= 4
    assert (resize_pad(np.where(dot, 255, 0).astype(np.uint8)[None, :, :, None], 224)[0, :, :, 0] > 0).sum() == touched.sum()


@pytest.mark.parametrize("n_frames", [1, 6, 9])
def test_grey_frames_resized_as_stacked_channels_equal_one_resize_per_frame(n_frames: int) -> None:
    import cv2

    rng = np.random.default_rng(n_frames)
    frames = rng.integers(0, 256, (n_frames, 150, 203, 1), dtype=np.uint8)
    frames[:, :40] = frames[:, :40] // 64 * 64  # flat patches: area sums that end exactly in .5
    out = resize_pad(frames, size=56)
    new_h = round(150 * 56 / 203)
    top = (56 - new_h) // 2
    for k in range(n_frames):
        expected = cv2.resize(frames[k, :, :, 0], (56, new_h), interpolation=cv2.INTER_AREA)
        assert np.array_equal(out[k, top : top + new_h, :, 0], expected)
    assert not out[:, :top].any() and not out[:, top + new_h :].any()
