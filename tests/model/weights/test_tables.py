"""Position-table and kernel conversions: the rules the load report promises."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from echofm.model.weights.tables import (
    additive_fit,
    fit_prediction_frames,
    fit_tubelet,
    resample_spatial,
    resample_temporal,
    sincos_1d_table,
)
from tests.factories.weights import additive_joint_table


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_additive_fit_recovers_an_additive_table_exactly() -> None:
    spatial, temporal = torch.randn(1, 9, 5, generator=_g()), torch.randn(1, 4, 5, generator=_g(1))
    joint = additive_joint_table(spatial, temporal)
    fitted_s, fitted_t = additive_fit(joint, (4, 3, 3))
    assert torch.allclose(additive_joint_table(fitted_s, fitted_t), joint, atol=1e-6)
    # Only the sum is determined; the constant goes to the spatial table.
    assert torch.allclose(fitted_t.mean(dim=1), torch.zeros(1, 5), atol=1e-6)


def test_additive_fit_is_the_least_squares_optimum() -> None:
    joint = torch.randn(1, 4 * 6, 3, generator=_g(2), dtype=torch.float64)
    spatial, temporal = additive_fit(joint, (4, 2, 3))
    residual = (joint - additive_joint_table(spatial, temporal)).reshape(4, 6, 3)
    # Normal equations: the residual has zero mean along time and along space.
    assert torch.allclose(residual.mean(dim=0), torch.zeros(6, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(residual.mean(dim=1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-12)
    # Any other additive pair fits worse.
    worse = additive_joint_table(spatial + 0.01, temporal - 0.02)
    assert ((joint - worse) ** 2).sum() > (residual ** 2).sum()
    with pytest.raises(ValueError, match="grid"):
        additive_fit(joint, (3, 2, 3))


def test_sincos_table_values() -> None:
    table = sincos_1d_table(10, 6)[0]
    assert torch.equal(table[0, 0::2], torch.zeros(3)) and torch.equal(table[0, 1::2], torch.ones(3))
    assert torch.allclose(table[:, 0], torch.sin(torch.arange(10.0)))
    assert torch.allclose(table[7, 3], torch.cos(torch.tensor(7.0 / 10000 ** (2 / 6))))


def test_average_inflation_makes_each_token_the_mean_of_its_sub_tubelet_tokens() -> None:
    kernel = torch.randn(5, 3, 2, 4, 4, generator=_g(3))
    inflated, how = fit_tubelet(kernel, 6, "average")
    assert inflated.shape == (5, 3, 6, 4, 4) and "average" in how
    assert torch.allclose(inflated.sum(dim=2), kernel.sum(dim=2), atol=1e-6)
    video = torch.randn(1, 3, 6, 8, 8, generator=_g(4))
    ours = F.conv3d(video, inflated, stride=(6, 4, 4))
    source = F.conv3d(video, kernel, stride=(2, 4, 4))  # 3 sub-tubelets in time
    assert torch.allclose(ours[:, :, 0], source.mean(dim=2), atol=1e-5)


def test_inflating_a_2d_kernel_keeps_its_sum_over_time() -> None:
    kernel = torch.randn(5, 3, 1, 4, 4, generator=_g(5))
    for inflation in ("average", "centre"):
        inflated, _ = fit_tubelet(kernel, 4, inflation)
        assert torch.allclose(inflated.sum(dim=2), kernel[:, :, 0], atol=1e-6), inflation
    centre, how = fit_tubelet(kernel, 4, "centre")
    assert torch.equal(centre[:, :, 2], kernel[:, :, 0]) and "frames 2-2" in how
    assert torch.count_nonzero(centre[:, :, [0, 1, 3]]) == 0


def test_merging_a_longer_kernel_embeds_a_clip_constant_over_source_tubelets_alike() -> None:
    kernel = torch.randn(5, 3, 4, 4, 4, generator=_g(6))
    merged, how = fit_tubelet(kernel, 2)
    assert "merged" in how and torch.allclose(merged.sum(dim=2), kernel.sum(dim=2), atol=1e-6)
    frame_pair = torch.randn(1, 3, 2, 8, 8, generator=_g(7))
    repeated = frame_pair.repeat(1, 1, 2, 1, 1)  # the source tubelet sees the pair twice
    assert torch.allclose(F.conv3d(frame_pair, merged, stride=(2, 4, 4)),
                          F.conv3d(repeated, kernel, stride=(4, 4, 4)), atol=1e-5)


def test_tubelets_that_are_no_multiples_are_refused() -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        fit_tubelet(torch.zeros(2, 3, 2, 4, 4), 3)
    with pytest.raises(ValueError, match="inflation"):
        fit_tubelet(torch.zeros(2, 3, 1, 4, 4), 2, "nearest")


def test_resampling_keeps_constant_tables_and_changes_the_grid() -> None:
    constant = torch.full((1, 16, 3), 0.5)
    assert torch.allclose(resample_spatial(constant, 7), torch.full((1, 49, 3), 0.5), atol=1e-6)
    ramp = torch.linspace(0, 1, 8).view(1, 8, 1).repeat(1, 1, 2)
    halved = resample_temporal(ramp, 4)
    # Linear over the span: each new slice is the mean of the two it covers.
    assert torch.allclose(halved[0, :, 0], ramp[0, :, 0].view(4, 2).mean(dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        resample_spatial(torch.zeros(1, 10, 2), 3)


def test_prediction_head_takes_the_nearest_frame() -> None:
    head = torch.arange(2 * 3 * 4.0).view(2 * 3, 4)  # 2 frames of 3 pixel values
    four = fit_prediction_frames(head, 2, 4)
    assert torch.equal(four.view(4, 3, 4)[[0, 1]], head.view(2, 3, 4)[[0, 0]])
    assert torch.equal(four.view(4, 3, 4)[3], head.view(2, 3, 4)[1])
