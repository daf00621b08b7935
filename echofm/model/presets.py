"""Named model sizes, selectable with `build_model(preset, **overrides)`.

- `tiny`: CPU tests and demos. 32 frames keep the data contract's 8 time slices (so the triplet
  loss sees the same temporal structure as the full model); 112 x 112 frames and a 192-wide,
  4-layer encoder keep a CPU training step at batch 4 well under a second.
- `base`: ViT-B encoder (768 / 12 layers / 12 heads), decoder 384 / 8 / 12.
- `large`: ViT-L encoder (1024 / 24 / 16), decoder 512 / 8 / 16, the EchoFM reference size;
  its encoder holds 305.7M parameters.

All presets default to 32 x 224 x 224 input except `tiny`; any field can be overridden.
"""

from __future__ import annotations

import dataclasses

import torch

from echofm.model.config import ModelConfig, ModelConfigError
from echofm.model.mae import MaskedAutoencoderViT
from echofm.errors import ModelError


class UnknownPreset(ModelError, KeyError):
    """No model preset of that name is registered."""


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        img_size=112,
        num_frames=32,
        embed_dim=192,
        depth=4,
        num_heads=3,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
    ),
    "base": ModelConfig(
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=384,
        decoder_depth=8,
        decoder_num_heads=12,
    ),
    "large": ModelConfig(
        embed_dim=1024,
        depth=24,
        num_heads=16,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
    ),
}


def preset_names() -> list[str]:
    """Registered preset names, smallest first."""
    return list(PRESETS)


def preset_config(preset: str | ModelConfig, **overrides: object) -> ModelConfig:
    """The config of `preset` (a name or a config) with `overrides` applied and validated.

    Raises:
        UnknownPreset: `preset` is not a registered name.
        ModelConfigError: an override names no config field, or the result is inconsistent.
    """
    if isinstance(preset, ModelConfig):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise UnknownPreset(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ModelConfigError(f"unknown model config field(s) {unknown}; known: {sorted(fields)}")
    return dataclasses.replace(base, **overrides)


def build_model(preset: str | ModelConfig = "tiny", **overrides: object) -> MaskedAutoencoderViT:
    """Build a freshly initialised model from a preset name (or config) plus overrides.

    Example: `build_model("tiny", img_size=64, num_frames=16)`.
    """
    return MaskedAutoencoderViT(preset_config(preset, **overrides))


def random_init(config: ModelConfig, seed: int) -> MaskedAutoencoderViT:
    """A freshly initialised model of `config` under `seed`, without touching the caller's RNG.
    With the seed a pretraining run used, these are exactly the weights it started from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MaskedAutoencoderViT(config)
