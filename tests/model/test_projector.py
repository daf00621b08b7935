"""Per-time-slice CLS summaries: the batched CLS-only block equals a block run on each slice."""

from __future__ import annotations

import pytest
import torch

from echofm.model import MaskedAutoencoderViT, ModelConfig
from echofm.model.projector import SliceProjector

from tests.factories.model import make_video, seeded


def _per_slice_block(projector: SliceProjector, tokens, slice_index, t) -> torch.Tensor:
    """The definition: timm's Block on each `[CLS, tokens of slice i]` on its own, CLS output."""
    rows = []
    for b in range(tokens.shape[0]):
        per_slice = []
        for i in range(t):
            sequence = torch.cat([projector.cls_token[0], tokens[b, slice_index[b] == i]])
            per_slice.append(projector.norm(projector.block(sequence.unsqueeze(0))[0, 0]))
        rows.append(torch.stack(per_slice))
    return torch.stack(rows)


@pytest.mark.parametrize("fused", [True, False])
def test_summaries_equal_a_block_run_on_each_slice(fused: bool) -> None:
    torch.manual_seed(0)
    projector = SliceProjector(dim=24, num_heads=3, mlp_ratio=2.0).eval()
    projector.block.attn.fused_attn = fused  # the definition runs either timm path
    t = 4
    # Uneven slices, as under random masking, and slice 2 with no token at all.
    slice_index = torch.tensor([[0, 3, 1, 0, 3, 3, 1, 0], [1, 1, 0, 3, 0, 0, 0, 1]])
    tokens = torch.randn(2, 8, 24)
    with torch.no_grad():
        got = projector(tokens, slice_index, t)
        expected = _per_slice_block(projector, tokens, slice_index, t)
    assert got.shape == (2, t, 24)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # An empty slice sees only the CLS token: the same summary in both clips.
    torch.testing.assert_close(got[0, 2], got[1, 2])


def test_a_slice_summary_depends_only_on_its_own_tokens() -> None:
    torch.manual_seed(0)
    projector = SliceProjector(dim=24, num_heads=3, mlp_ratio=2.0)
    slice_index = torch.arange(4).repeat_interleave(3).unsqueeze(0)  # 4 slices x 3 tokens
    tokens = torch.randn(1, 12, 24, requires_grad=True)
    # A random readout: a plain sum of a LayerNorm output is constant and has no gradient.
    (projector(tokens, slice_index, 4)[0, 1] * torch.randn(24)).sum().backward()
    touched = tokens.grad.abs().sum(dim=-1)[0] > 0
    assert touched.tolist() == [False] * 3 + [True] * 3 + [False] * 6


def test_model_triplet_uses_the_projector_summaries(micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(micro_config)
    video = make_video(micro_config, batch=2)
    latent = model.encode(video, generator=seeded(0))
    summaries, counts = model.slice_summaries(latent)
    t = micro_config.grid[0]
    assert summaries.shape == (2, t, micro_config.embed_dim) and summaries.dtype == torch.float32
    assert counts.sum(dim=1).tolist() == [latent.ids_keep.shape[1]] * 2
    before = model.triplet_loss(latent, video)
    with torch.no_grad():
        model.slice_projector.cls_token.add_(torch.randn_like(model.slice_projector.cls_token))
    assert not torch.equal(model.triplet_loss(latent, video), before)
    # The projector is pretraining-only: not part of what `encode` uses.
    names = {n for n, _ in model.encoder_named_parameters()}
    assert not any(n.startswith("slice_projector") for n in names)
