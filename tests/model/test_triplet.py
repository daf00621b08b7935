"""Temporal triplet loss: hand-computed value and edge cases."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from echofm.model import EncoderOutput, MaskedAutoencoderViT, ModelConfig, build_model
from echofm.model.config import TRIPLET_MODES
from echofm.model.triplet import (
    anchor_triplet_sets,
    slice_token_counts,
    temporal_self_similarity,
    temporal_triplet_loss,
)

from tests.factories.model import make_video, seeded


def _unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg, dtype=torch.float32).deg2rad()
    return torch.stack([a.cos(), a.sin()], dim=-1)


def test_hand_computed_value() -> None:
    # Slices at 0, 0, 90, 180 degrees: similarities to the anchor 1, 0, -1; row mean 0.
    # Positive: slice 1. Negatives: slice 2 (at the mean) and slice 3.
    # margin 1.5: pairs (1, 2) -> relu(1.5 - 1) = 0.5 and (1, 3) -> relu(1.5 - 2) = 0.
    summaries = _unit(0, 0, 90, 180).unsqueeze(0)
    valid = torch.ones(1, 4, dtype=torch.bool)
    sets = anchor_triplet_sets(temporal_self_similarity(summaries)[:, 0], valid)
    assert sets.positives.tolist() == [[False, True, False, False]]
    assert sets.negatives.tolist() == [[False, False, True, True]]
    loss = temporal_triplet_loss(summaries, valid, margin=1.5)
    assert loss.item() == pytest.approx(0.25)
    # A second clip without a valid triplet contributes 0 to the batch mean.
    batch = torch.cat([summaries, _unit(10, 10, 10, 10).unsqueeze(0)])
    loss = temporal_triplet_loss(batch, torch.ones(2, 4, dtype=torch.bool), margin=1.5)
    assert loss.item() == pytest.approx(0.125)


@pytest.mark.parametrize(
    "summaries",
    [
        _unit(30, 30, 30, 30).unsqueeze(0),  # identical slices: nothing above the mean
        _unit(0, 40).unsqueeze(0),  # one non-anchor slice: no positive and negative both
        torch.zeros(2, 4, 8),  # degenerate all-zero summaries
    ],
)
def test_no_valid_triplet_gives_exactly_zero(summaries: torch.Tensor) -> None:
    summaries = summaries.clone().requires_grad_(True)
    valid = torch.ones(summaries.shape[:2], dtype=torch.bool)
    loss = temporal_triplet_loss(summaries, valid, margin=0.2)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph, and the gradient is finite
    assert torch.isfinite(summaries.grad).all()


def test_invalid_anchor_gives_zero() -> None:
    summaries = _unit(0, 0, 90, 180).unsqueeze(0)
    valid = torch.tensor([[False, True, True, True]])
    assert temporal_triplet_loss(summaries, valid, margin=1.5).item() == 0.0


def test_empty_slices_are_excluded() -> None:
    full = _unit(0, 5, 80, 170, 100).unsqueeze(0)
    valid = torch.tensor([[True, True, True, True, False]])
    garbage = full.clone()
    garbage[0, 4] = torch.tensor([1.0, 0.0])  # would become a positive if it were counted
    reference = temporal_triplet_loss(full[:, :4], torch.ones(1, 4, dtype=torch.bool), 1.5)
    assert temporal_triplet_loss(garbage, valid, 1.5).item() == pytest.approx(reference.item())
    assert reference.item() > 0
    # Counting the empty slice would change the result.
    counted = temporal_triplet_loss(garbage, torch.ones(1, 5, dtype=torch.bool), 1.5)
    assert counted.item() != pytest.approx(reference.item())


def test_gradient_flows_when_a_triplet_is_valid() -> None:
    summaries = torch.randn(3, 8, 16, generator=seeded(0)).requires_grad_(True)
    loss = temporal_triplet_loss(summaries, torch.ones(3, 8, dtype=torch.bool), margin=2.0)
    assert loss.item() > 0
    loss.backward()
    assert summaries.grad.abs().sum() > 0 and torch.isfinite(summaries.grad).all()


def test_batch_of_one() -> None:
    summaries = torch.randn(1, 8, 16, generator=seeded(1))
    loss = temporal_triplet_loss(summaries, torch.ones(1, 8, dtype=torch.bool), margin=0.2)
    assert loss.shape == () and torch.isfinite(loss)


def test_slice_token_counts_count_each_slice() -> None:
    index = torch.tensor([[0, 0, 2], [1, 1, 1]])
    assert slice_token_counts(index, 3).tolist() == [[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]]


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_constant_video_gives_finite_losses(micro_config: ModelConfig, norm_pix_loss: bool) -> None:
    torch.manual_seed(0)
    model = build_model(micro_config, norm_pix_loss=norm_pix_loss)
    out = model(torch.full((2, 3, 16, 32, 32), 0.5), generator=seeded(0))
    assert torch.isfinite(out.loss) and torch.isfinite(out.triplet_loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_model_batch_of_one(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    out = model(make_video(micro_config, batch=1))
    assert torch.isfinite(out.loss) and out.triplet_loss.shape == ()


def test_model_handles_a_clip_whose_anchor_slice_is_fully_masked(micro_config) -> None:
    # The seed's design anchors on slice 0 alone.
    model = MaskedAutoencoderViT(replace(micro_config, triplet_mode="self"))
    latent = model.encode(make_video(micro_config, batch=1), 0.75, generator=seeded(0))
    # Keep only tokens outside time slice 0 (slots 16..63 of a 4 x 4 x 4 grid).
    ids_keep = torch.arange(16, 32).unsqueeze(0)
    tokens = torch.randn(1, 17, micro_config.embed_dim, requires_grad=True)
    forced = EncoderOutput(tokens=tokens, mask=latent.mask, ids_restore=latent.ids_restore,
                           ids_keep=ids_keep)
    loss = model.triplet_loss(forced)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(tokens.grad).all()


@pytest.mark.parametrize("mode", TRIPLET_MODES)
def test_triplet_is_computed_in_float32_under_autocast(micro_config: ModelConfig, mode: str) -> None:
    model = MaskedAutoencoderViT(replace(micro_config, triplet_mode=mode))
    video = make_video(micro_config, batch=3)
    latent = model.encode(video, 0.5, generator=seeded(0))
    tokens = torch.randn(latent.tokens.shape, generator=seeded(1))
    latent = EncoderOutput(tokens=tokens, mask=latent.mask, ids_restore=latent.ids_restore,
                           ids_keep=latent.ids_keep)
    reference = model.triplet_loss(latent, video)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = model.triplet_loss(latent, video)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, reference)
