"""The MAE: shapes, masking correctness, decoder placement, gradients, determinism, bf16."""

from __future__ import annotations

import pytest
import torch

from echofm.model import (
    EncoderOutput,
    MaskedAutoencoderViT,
    ModelConfig,
    VideoShapeError,
    build_model,
    num_visible,
)
from echofm.model.masking import gather_tokens
from echofm.model.pos_embed import separable_pos_embed

from tests.factories.model import make_video, seeded


def _restored_patch_tokens(latent: EncoderOutput) -> torch.Tensor:
    """Encoder patch tokens put back in slot order (valid when nothing is masked)."""
    return gather_tokens(latent.tokens[:, 1:], latent.ids_restore)


def _encode_pos_after_gather(
    model: MaskedAutoencoderViT, video: torch.Tensor, generator: torch.Generator
) -> EncoderOutput:
    """A deliberately wrong encoder (the published bug): position embeddings are added to the
    *shuffled* sequence, so a token gets the embedding of its rank, not of its location."""
    x = model.patch_embed(video)
    latent = model.encode(video, 0.0, generator=generator)
    x = gather_tokens(x, latent.ids_keep)
    x = x + separable_pos_embed(model.pos_embed_spatial, model.pos_embed_temporal)
    return EncoderOutput(tokens=model._encode_tokens(x), mask=latent.mask,
                         ids_restore=latent.ids_restore, ids_keep=latent.ids_keep)


def _shuffle_invariance_error(encode, model, video) -> float:
    a = encode(model, video, seeded(1))
    b = encode(model, video, seeded(2))
    assert not torch.equal(a.ids_keep, b.ids_keep)  # the two shuffles really differ
    return (_restored_patch_tokens(a) - _restored_patch_tokens(b)).abs().max().item()


def test_mask_ratio_zero_is_invariant_to_the_shuffle(micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(micro_config).eval()
    video = make_video(micro_config)

    def correct(m, v, g):
        return m.encode(v, 0.0, generator=g)

    with torch.no_grad():
        assert _shuffle_invariance_error(correct, model, video) < 1e-5
        # The check catches mis-assigned position embeddings.
        assert _shuffle_invariance_error(_encode_pos_after_gather, model, video) > 1e-2
        # And the restored tokens equal the unmasked, unshuffled encoder pass.
        restored = _restored_patch_tokens(correct(model, video, seeded(3)))
        torch.testing.assert_close(restored, model.forward_tokens(video)[:, 1:],
                                   atol=1e-5, rtol=1e-5)


def test_decoder_places_each_latent_in_its_own_slot(micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(micro_config).eval()
    video = make_video(micro_config, batch=3)
    captured: list[torch.Tensor] = []
    handle = model.decoder_blocks[0].register_forward_pre_hook(
        lambda _module, args: captured.append(args[0].detach().clone())
    )
    with torch.no_grad():
        latent = model.encode(video, 0.75, generator=seeded(4))
        # Latents with known values: visible token i of clip b carries value (b, slot).
        b, n_vis, dim = latent.tokens.shape
        known = torch.randn(b, n_vis, dim, generator=seeded(5))
        latent = EncoderOutput(tokens=known, mask=latent.mask, ids_restore=latent.ids_restore,
                               ids_keep=latent.ids_keep)
        model.decode(latent)
        handle.remove()
        x = captured[0][:, 1:]  # decoder input per slot, CLS dropped
        pos = separable_pos_embed(model.decoder_pos_embed_spatial,
                                  model.decoder_pos_embed_temporal)[0]
        embedded = model.decoder_embed(known[:, 1:])
    for clip in range(b):
        for i, slot in enumerate(latent.ids_keep[clip].tolist()):
            torch.testing.assert_close(x[clip, slot], embedded[clip, i] + pos[slot])
        for slot in torch.nonzero(latent.mask[clip]).squeeze(1).tolist():
            torch.testing.assert_close(x[clip, slot], model.mask_token[0, 0] + pos[slot])


def test_patchify_matches_tubelet_order_and_round_trips(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    t, h, w = model.grid
    pt, p = micro_config.t_patch_size, micro_config.patch_size
    # A signal in exactly one tubelet (ti, hi, wi) lands in slot ti*h*w + hi*w + wi in both the
    # token sequence and the patchified target, so predictions and targets line up.
    ti, hi, wi = 2, 1, 3
    video = torch.zeros(1, 3, t * pt, h * p, w * p)
    video[:, :, ti * pt:(ti + 1) * pt, hi * p:(hi + 1) * p, wi * p:(wi + 1) * p] = 1.0
    slot = ti * h * w + hi * w + wi
    patches = model.patchify(video)
    assert patches.shape == (1, t * h * w, micro_config.patch_dim)
    assert torch.nonzero(patches.abs().sum(-1))[:, 1].tolist() == [slot]
    with torch.no_grad():
        tokens = model.patch_embed(video) - model.patch_embed.proj.bias
    assert torch.nonzero(tokens.abs().sum(-1) > 1e-6)[:, 1].tolist() == [slot]
    other = make_video(micro_config)
    assert torch.equal(model.unpatchify(model.patchify(other)), other)


def test_forward_shapes_and_mask_counts(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    video = make_video(micro_config, batch=3)
    out = model(video, 0.75, generator=seeded(0))
    length = model.num_patches
    assert model.grid == (4, 4, 4) and length == 64
    assert out.pred.shape == (3, length, micro_config.patch_dim)
    assert out.mask.shape == (3, length) and out.ids_restore.shape == (3, length)
    assert torch.all(out.mask.sum(1) == length - num_visible(length, 0.75))
    for value in (out.loss, out.recon_loss, out.triplet_loss):
        assert value.shape == () and torch.isfinite(value)
    expected = out.recon_loss + micro_config.triplet_weight * out.triplet_loss
    torch.testing.assert_close(out.loss, expected)
    latent = model.encode(video)  # default ratio from the config
    assert latent.tokens.shape == (3, 1 + num_visible(length, 0.75), micro_config.embed_dim)
    assert model.decode(latent).shape == out.pred.shape
    assert model.forward_tokens(video).shape == (3, 1 + length, micro_config.embed_dim)
    assert model.forward_features(video).shape == (3, micro_config.embed_dim)


def test_mask_ratio_zero_runs_and_gives_zero_reconstruction_loss(micro_config) -> None:
    model = MaskedAutoencoderViT(micro_config)
    out = model(make_video(micro_config), 0.0)
    assert out.mask.sum() == 0
    assert out.recon_loss.item() == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()


def test_reconstruction_loss_counts_masked_patches_only(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    video = make_video(micro_config)
    target = model.patchify(video)
    mask = torch.zeros(2, model.num_patches)
    mask[:, :5] = 1.0
    pred = target.clone()
    pred[:, 5:] += 10.0  # errors on visible patches must not count
    assert model.reconstruction_loss(video, pred, mask).item() == 0.0
    pred[:, :5] += 2.0
    assert model.reconstruction_loss(video, pred, mask).item() == pytest.approx(4.0)


def test_norm_pix_loss_normalises_each_target_patch(micro_config: ModelConfig) -> None:
    model = build_model(micro_config, norm_pix_loss=True)
    video = make_video(micro_config) * 5.0 + 3.0
    target = model.patchify(video)
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    mask = torch.ones(2, model.num_patches)
    assert model.reconstruction_loss(video, normed, mask).item() < 1e-8
    assert model.reconstruction_loss(video, target, mask).item() > 1.0


@pytest.mark.parametrize("mode", ["random", "tube"])
def test_gradients_reach_every_trainable_parameter(micro_config: ModelConfig, mode: str) -> None:
    torch.manual_seed(0)
    model = build_model(micro_config, mask_mode=mode, triplet_margin=1.0)
    out = model(make_video(micro_config, batch=4), generator=seeded(0))
    assert out.triplet_loss.item() > 0  # the triplet term is live, not just the reconstruction
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_deterministic_under_a_seed(micro_config: ModelConfig) -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(123)
        model = build_model(micro_config, drop_path_rate=0.1)
        out = model(make_video(micro_config))
        out.loss.backward()
        return out.pred.detach(), model.patch_embed.proj.weight.grad

    pred_a, grad_a = run()
    pred_b, grad_b = run()
    assert torch.equal(pred_a, pred_b) and torch.equal(grad_a, grad_b)


def test_wrong_video_shape_is_rejected(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    with pytest.raises(VideoShapeError, match="expected video"):
        model(torch.zeros(1, 3, 8, 32, 32))


def test_bf16_autocast_on_cpu(micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(micro_config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(make_video(micro_config), generator=seeded(0))
        features = model.forward_features(make_video(micro_config))
    assert out.pred.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert torch.isfinite(features).all()
    out.loss.backward()
    assert torch.isfinite(model.blocks[0].attn.qkv.weight.grad).all()


def test_tiny_preset_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_model("tiny")
    config = model.config
    assert model.grid == (8, 7, 7)
    out = model(make_video(config, batch=2))
    assert out.pred.shape == (2, 392, config.patch_dim)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0


def test_base_preset_forward_backward() -> None:
    # Full-size base (1568 tokens) costs several seconds per step on 2 CPU cores; the widths and
    # depths are the preset's, only the input is reduced (8 frames of 64 x 64: 32 tokens).
    torch.manual_seed(0)
    model = build_model("base", img_size=64, num_frames=8)
    assert (model.config.embed_dim, model.config.depth) == (768, 12)
    out = model(make_video(model.config, batch=2))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.decoder_pred.weight.grad.abs().sum() > 0
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_helpers_for_optimisers(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)
    assert {"pos_embed_spatial", "cls_token", "mask_token"} <= model.no_weight_decay()
    assert sum(1 for _ in model.encoder_parameters()) < len(names)



def test_activation_checkpointing_changes_memory_not_numbers(micro_config: ModelConfig) -> None:
    video = make_video(micro_config, batch=2)
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = MaskedAutoencoderViT(micro_config)
        model.activation_checkpointing = checkpointed
        out = model(video, generator=seeded(3))
        out.loss.backward()
        grads.append((out.loss.detach(), model.blocks[0].attn.qkv.weight.grad, model.decoder_blocks[0].mlp.fc1.weight.grad))
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, checkpointed)
