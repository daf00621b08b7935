"""Presets and config validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from echofm.model import (
    PRESETS,
    MaskedAutoencoderViT,
    ModelConfig,
    ModelConfigError,
    UnknownPreset,
    build_model,
    preset_config,
    preset_names,
)


def _count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds(name: str) -> None:
    # Built on the meta device: shapes and parameter counts without allocating the weights.
    with torch.device("meta"):
        model = build_model(name)
    assert isinstance(model, MaskedAutoencoderViT)
    assert model.config == PRESETS[name]
    t, h, w = model.grid
    assert model.pos_embed_spatial.shape == (1, h * w, model.config.embed_dim)
    assert model.pos_embed_temporal.shape == (1, t, model.config.embed_dim)
    assert model.decoder_pred.out_features == model.config.patch_dim
    assert 0 < _count(model.encoder_parameters()) < _count(model.parameters())


def test_registered_presets() -> None:
    assert {"tiny", "base", "large"} <= set(preset_names())
    base, large = PRESETS["base"], PRESETS["large"]
    assert (base.embed_dim, base.depth, base.num_heads) == (768, 12, 12)
    assert (base.decoder_embed_dim, base.decoder_depth, base.decoder_num_heads) == (384, 8, 12)
    assert (large.embed_dim, large.depth, large.num_heads) == (1024, 24, 16)
    assert (large.decoder_embed_dim, large.decoder_depth, large.decoder_num_heads) == (512, 8, 16)
    assert large.grid == (8, 14, 14) and large.num_patches == 1568
    assert large.patch_dim == 4 * 16 * 16 * 3


def test_large_encoder_matches_reference_parameter_count() -> None:
    with torch.device("meta"):
        model = build_model("large")
    encoder = _count(model.encoder_parameters())
    assert abs(encoder - 305.7e6) <= 0.01 * 305.7e6, encoder
    # Everything the encoder uses is counted: encoding touches no parameter outside this set.
    names = {name for name, _ in model.encoder_named_parameters()}
    assert "pos_embed_spatial" in names and "cls_token" in names and "norm.weight" in names
    assert not any(n.startswith(("decoder", "mask_token")) for n in names)


def test_encode_uses_only_encoder_parameters(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    video = torch.randn(1, 3, 16, 32, 32)
    model.encode(video).tokens.sum().backward()
    touched = {n for n, p in model.named_parameters() if p.grad is not None}
    assert touched == {n for n, _ in model.encoder_named_parameters()}


def test_overrides_apply_and_are_validated() -> None:
    config = preset_config("tiny", img_size=64, num_frames=16)
    assert (config.img_size, config.num_frames, config.embed_dim) == (64, 16, 192)
    with pytest.raises(ModelConfigError, match="unknown model config field"):
        preset_config("tiny", imgsize=64)
    with pytest.raises(UnknownPreset):
        build_model("huge")


@pytest.mark.parametrize(
    "bad",
    [
        {"img_size": 100},  # not divisible by 16
        {"num_frames": 30},  # not divisible by 4
        {"embed_dim": 100, "num_heads": 3},
        {"decoder_embed_dim": 130},
        {"mask_ratio": 1.0},
        {"mask_ratio": -0.1},
        {"mask_mode": "block"},
        {"depth": 0},
        {"triplet_margin": -1.0},
        {"drop_path_rate": 1.0},
    ],
)
def test_invalid_config_rejected(bad: dict) -> None:
    with pytest.raises(ModelConfigError):
        preset_config("tiny", **bad)


def test_config_is_frozen_and_keyword_only() -> None:
    config = PRESETS["tiny"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.img_size = 64  # type: ignore[misc]
    with pytest.raises(TypeError):
        ModelConfig(224)  # type: ignore[misc]
