"""The one grey rule of the readers and the batch: integer channel mean, channel spread."""

from __future__ import annotations

import numpy as np

from echofm.io.grey import GREY_TOLERANCE, channel_mean, channel_spread, is_grey


def test_channel_mean_is_the_rounded_integer_mean_for_every_sum() -> None:
    values = np.arange(256, dtype=np.uint8)
    # Every (R, G) pair with B in {0, 1, 2, 255}: all sums 0..765 and every remainder mod 3.
    r, g, b = np.meshgrid(values, values, np.array([0, 1, 2, 255], np.uint8), indexing="ij")
    frames = np.stack([r, g, b], axis=-1).reshape(4, 256 * 64, 4, 3)
    expected = (frames.astype(np.uint16).sum(axis=-1, keepdims=True) + 1) // 3
    mean = channel_mean(frames)
    assert mean.dtype == np.uint8 and mean.shape == (4, 256 * 64, 4, 1)
    assert np.array_equal(mean, expected)
    assert np.array_equal(mean, np.round(frames.mean(axis=-1, keepdims=True)))


def test_channel_spread_and_grey() -> None:
    frames = np.full((2, 8, 8, 3), 100, np.uint8)
    assert channel_spread(frames) == 0 and is_grey(frames)
    frames[1, 3, 4] = (100, 100 + GREY_TOLERANCE, 100)
    assert channel_spread(frames) == GREY_TOLERANCE and is_grey(frames)
    frames[0, 0, 0] = (100, 90, 130)
    assert channel_spread(frames) == 40 and not is_grey(frames)
    assert is_grey(np.zeros((1, 4, 4, 1), np.uint8))
