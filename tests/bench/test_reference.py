"""The published-step reference the model benchmark times our step against.

It only has to do the published step's work, so these tests check the work, not its loss values:
the same function of attention as timm's, the same encoder size as the model, a projector that
summarises each time slice on its own, every parameter trained, and the published target frames.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import Attention

from echofm.bench.reference import ExplicitAttention, PublishedStepReference
from echofm.model import MaskedAutoencoderViT, ModelConfig, preset_config

from tests.factories.model import make_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count(params) -> int:
    return sum(p.numel() for p in params)


def test_explicit_attention_is_the_function_timm_fuses() -> None:
    torch.manual_seed(0)
    dim, heads = 48, 3
    explicit = ExplicitAttention(dim, heads)
    fused = Attention(dim, heads, qkv_bias=True)
    with torch.no_grad():
        fused.qkv.weight.copy_(torch.cat([explicit.q.weight, explicit.k.weight, explicit.v.weight]))
        fused.qkv.bias.copy_(torch.cat([explicit.q.bias, explicit.k.bias, explicit.v.bias]))
        fused.proj.load_state_dict(explicit.proj.state_dict())
        x = torch.randn(2, 17, dim)
        torch.testing.assert_close(explicit(x), fused(x), atol=1e-5, rtol=1e-4)


def test_large_reference_has_the_model_encoder_plus_one_projector_block() -> None:
    config = preset_config("large")
    with torch.device("meta"):
        reference = PublishedStepReference(config)
        model = MaskedAutoencoderViT(config)
    assert _count(reference.encoder_parameters()) == _count(model.encoder_parameters())
    assert _count(reference.encoder_parameters()) == 305_669_120
    assert _count(reference.projector.parameters()) == _count(model.blocks[0].parameters())
    # The published decoder predicts one frame per tubelet: 8 of 32 frames.
    assert reference.pred_t == 1
    assert reference.decoder_pred.out_features == 16 * 16 * 3


def test_every_parameter_trains_and_the_loss_is_finite(micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    reference = PublishedStepReference(micro_config)
    out = reference(make_video(micro_config))
    assert torch.isfinite(out.loss) and out.recon_loss > 0
    out.loss.backward()
    untrained = [n for n, p in reference.named_parameters() if p.grad is None]
    assert not untrained, untrained  # the encoder included: no frozen-encoder shortcut


def test_projector_summarises_each_time_slice_from_its_own_tokens(
    micro_config: ModelConfig,
) -> None:
    torch.manual_seed(0)
    reference = PublishedStepReference(micro_config).eval()
    t = micro_config.grid[0]
    visible = torch.randn(2, t * 5, micro_config.embed_dim)
    changed = visible.clone()
    changed[:, 5:10] += torch.randn(2, 5, micro_config.embed_dim)  # slice 1 only
    with torch.no_grad():
        before, after = reference._slice_summaries(visible), reference._slice_summaries(changed)
    moved = (before - after).abs().amax(dim=(0, 2))
    assert moved[1] > 1e-3
    assert torch.all(moved[torch.arange(t) != 1] == 0)


def test_target_is_the_evenly_spaced_frames_in_patch_layout(micro_config: ModelConfig) -> None:
    reference = PublishedStepReference(micro_config, pred_frames=micro_config.grid[0])
    assert reference.pred_t == 1
    video = make_video(micro_config, batch=1)
    target = reference._target(video)
    p = micro_config.patch_size
    # Slot 0 is the top-left patch of the first selected frame (frame 0), pixels (py, px, c).
    expected = video[0, :, 0, :p, :p].permute(1, 2, 0).reshape(-1)
    torch.testing.assert_close(target[0, 0], expected)
    last = micro_config.num_frames - 1  # linspace ends on the last frame
    h = micro_config.img_size // p
    slot = (micro_config.grid[0] - 1) * h * h
    torch.testing.assert_close(target[0, slot],
                               video[0, :, last, :p, :p].permute(1, 2, 0).reshape(-1))
