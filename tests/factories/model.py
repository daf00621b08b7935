"""Small model configs and deterministic inputs shared by the model tests."""

from __future__ import annotations

import torch

from echofm.model import ModelConfig

# 16 frames of 32 x 32 with 4 x 8 x 8 tubelets: a 4 x 4 x 4 grid, 64 tokens, 4 time slices.
MICRO = dict(
    img_size=32,
    num_frames=16,
    patch_size=8,
    t_patch_size=4,
    embed_dim=48,
    depth=2,
    num_heads=3,
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=2,
)


def make_video(config: ModelConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Deterministic random video `[B, C, T, H, W]` matching `config`."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.in_chans, config.num_frames, config.img_size, config.img_size)
    return torch.randn(shape, generator=g)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
