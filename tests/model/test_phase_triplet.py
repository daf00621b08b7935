"""The phase triplet: prior from pixels, hard positives within a clip, hard negatives across clips."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from echofm.model import MaskedAutoencoderViT, ModelConfig
from echofm.model.phase_triplet import phase_positives, phase_triplet_loss, pixel_phase_prior
from echofm.model.config import TRIPLET_MODES
from echofm.model.triplet import temporal_triplet_loss
from echofm.pretrain.config import TripletMode

from tests.factories.model import make_video, seeded


def _alternating_video(batch: int = 2, t: int = 4, t_patch: int = 2) -> torch.Tensor:
    """Slices alternate between two frames (diastole, systole): slices 0, 2 alike, 1, 3 alike."""
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(batch, 2, 8, 8, generator=g)
    pattern = torch.arange(t).remainder(2).repeat_interleave(t_patch)
    return frames[:, pattern].unsqueeze(1).expand(-1, 3, -1, -1, -1)  # [B, 3, t * t_patch, 8, 8]


def _reference_loss(summaries, valid, prior, margin) -> float:
    """The definition, one anchor at a time."""
    z = F.normalize(summaries, dim=-1)
    total, scored = 0.0, 0
    batch, t, _ = z.shape
    for b in range(batch):
        for a in range(t):
            others = [j for j in range(t) if j != a and valid[b, j]]
            if not valid[b, a] or not others:
                continue
            mean = sum(float(prior[b, a, j]) for j in others) / len(others)
            positives = [j for j in others if float(prior[b, a, j]) - mean > 1e-6]
            negatives = [(c, j) for c in range(batch) if c != b for j in range(t) if valid[c, j]]
            if not positives or not negatives:
                continue
            hard_p = min(float(z[b, a] @ z[b, j]) for j in positives)
            hard_n = max(float(z[b, a] @ z[c, j]) for c, j in negatives)
            total += max(0.0, margin - hard_p + hard_n)
            scored += 1
    return total / max(scored, 1)


def test_prior_finds_the_slices_of_the_same_phase():
    prior = pixel_phase_prior(_alternating_video(), t_patch_size=2)
    assert prior.shape == (2, 4, 4)
    torch.testing.assert_close(prior[:, 0], torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 2))
    positives = phase_positives(prior, torch.ones(2, 4, dtype=torch.bool))
    assert positives[0].nonzero().tolist() == [[0, 2], [1, 3], [2, 0], [3, 1]]


def test_loss_matches_the_definition_with_invalid_slices():
    g = torch.Generator().manual_seed(1)
    summaries = torch.randn(3, 4, 5, generator=g)
    valid = torch.tensor([[True, True, True, True], [True, False, True, True], [False, True, True, True]])
    prior = pixel_phase_prior(_alternating_video(batch=3), t_patch_size=2)
    loss = phase_triplet_loss(summaries, valid, prior, margin=0.5)
    assert loss.item() == pytest.approx(_reference_loss(summaries, valid, prior, 0.5), abs=1e-6)


def test_collapse_pays_the_whole_margin_where_the_seed_design_pays_nothing():
    # Every clip and slice maps to the same summary: the seed's self-split finds no positive and
    # costs nothing; the phase triplet's other-clip negative is as close as its positive.
    collapsed = torch.ones(2, 4, 8)
    valid = torch.ones(2, 4, dtype=torch.bool)
    prior = pixel_phase_prior(_alternating_video(), t_patch_size=2)
    assert phase_triplet_loss(collapsed, valid, prior, margin=0.2).item() == pytest.approx(0.2)
    assert temporal_triplet_loss(collapsed, valid, margin=0.2).item() == 0.0
    # Clips apart and same-phase slices together: nothing left to learn.
    apart = torch.zeros(2, 4, 8)
    apart[0, :, 0], apart[1, :, 1] = 1.0, 1.0
    assert phase_triplet_loss(apart, valid, prior, margin=0.2).item() == 0.0


def test_nothing_to_score_gives_an_exact_zero_on_the_graph():
    prior = pixel_phase_prior(_alternating_video(batch=1), t_patch_size=2)
    summaries = torch.randn(1, 4, 8, requires_grad=True)
    alone = phase_triplet_loss(summaries, torch.ones(1, 4, dtype=torch.bool), prior, 0.2)
    assert alone.item() == 0.0  # one clip: no other clip to take negatives from
    alone.backward()
    still = torch.zeros(2, 4, 4)  # a still clip: every slice alike, the prior has no positive
    assert phase_triplet_loss(torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool), still, 0.2).item() == 0.0


def test_the_model_trains_its_encoder_through_the_phase_triplet(micro_config: ModelConfig):
    model = MaskedAutoencoderViT(replace(micro_config, triplet_mode="phase"))
    video = make_video(micro_config, batch=3)
    latent = model.encode(video, generator=seeded(0))
    loss = model.triplet_loss(latent, video)
    assert loss.item() > 0
    loss.backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.slice_projector.cls_token.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs the video"):
        model.triplet_loss(latent)


def test_the_pretraining_options_offer_every_triplet_mode():
    # PretrainConfig spells the modes out to stay torch-free; they must not drift apart.
    assert TripletMode.__args__ == TRIPLET_MODES
