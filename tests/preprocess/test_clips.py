"""Shard clips to encoder input: an archive mixes grey and colour clips, and a batch must not care."""

from __future__ import annotations

import numpy as np

from echofm.preprocess.clips import InputSpec, fit_clip, to_model_input


def test_grey_and_colour_clips_fit_to_the_encoder_channels_and_stack() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(32, 224, 224, 1), dtype=np.uint8)
    colour = rng.integers(0, 256, size=(32, 224, 224, 3), dtype=np.uint8)
    spec = InputSpec(num_frames=16, img_size=64)

    fitted_grey, fitted_colour = fit_clip(grey, spec), fit_clip(colour, spec)
    batch = np.stack([fitted_grey, fitted_colour])

    assert batch.shape == (2, 16, 64, 64, 3)
    # Grey is repeated over the channels, colour keeps its channels.
    assert np.array_equal(fitted_grey[..., 0], fitted_grey[..., 2])
    assert not np.array_equal(fitted_colour[..., 0], fitted_colour[..., 2])
    assert to_model_input(batch, spec).shape == (2, 3, 16, 64, 64)


def test_colour_is_averaged_for_a_one_channel_encoder() -> None:
    colour = np.zeros((32, 224, 224, 3), dtype=np.uint8)
    colour[..., 0] = 90
    colour[..., 1] = 30
    fitted = fit_clip(colour, InputSpec(num_frames=8, img_size=32, in_chans=1))
    assert fitted.shape == (8, 32, 32, 1)
    assert np.all(fitted == 40)
