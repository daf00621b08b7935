"""Embeddings of clips from an MAE encoder, for the representation report (torch in, numpy out).

The clip embedding is the encoder's own (`forward_features`: mean of the unmasked patch tokens
after the final norm), so the report measures exactly what downstream users and the registered
model get. The slice embeddings are the means of each time slice's patch tokens of the same
pass: the encoder's own per-slice summary, with no pretraining-only projector in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from echofm.data.augment import ClipAugment
from echofm.data.augment_config import AugmentConfig
from echofm.data.loader import ClipNormalization


@dataclass(frozen=True)
class ClipEmbeddings:
    """clips: float32 `[N, D]`; slices: float32 `[N, t, D]`."""

    clips: np.ndarray
    slices: np.ndarray


@torch.no_grad()
def embed_clips(model: nn.Module, video: torch.Tensor, *, batch_size: int = 16) -> ClipEmbeddings:
    """Embed `video` `[N, C, T, H, W]` (normalised, on the model's device) in batches, no masking.

    `model` is a `MaskedAutoencoderViT` (anything with `forward_tokens` and `grid`); it is put in
    eval mode for the pass and restored to its previous mode after.
    """
    was_training = model.training
    model.eval()
    t, h, w = model.grid
    clips, slices = [], []
    try:
        for start in range(0, video.shape[0], batch_size):
            patches = model.forward_tokens(video[start : start + batch_size])[:, 1:].float()  # [B, L, D]
            per_slice = rearrange(patches, "b (t hw) d -> b t hw d", t=t, hw=h * w).mean(dim=2)
            clips.append(patches.mean(dim=1).cpu())
            slices.append(per_slice.cpu())
    finally:
        model.train(was_training)
    return ClipEmbeddings(clips=torch.cat(clips).numpy(), slices=torch.cat(slices).numpy())


def pixel_slices(video: torch.Tensor, t_patch_size: int) -> np.ndarray:
    """float32 `[N, t, P]`: the first channel of `video` `[N, C, T, H, W]` per time slice of
    `t_patch_size` frames, flattened: the pixel-space counterpart of the slice embeddings."""
    grey = video[:, 0].float().cpu()
    return rearrange(grey, "n (t pt) h w -> n t (pt h w)", pt=t_patch_size).numpy()


def augmented_pair(video: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented copies of every clip of `video` `[N, C, T, H, W]`; `augment`
    maps one clip `[C, T, H, W]` to an augmented one (it draws its own parameters per call)."""
    first = torch.stack([augment(clip) for clip in video])
    second = torch.stack([augment(clip) for clip in video])
    return first, second


def normalised_augment(normalization: ClipNormalization, config: AugmentConfig, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pretraining's clip augmentation for clips that are already normalised `[C, T, H, W]`:
    back to [0, 1] intensities, `config`'s per-clip draw (seeded: the n-th call of a fresh
    function always draws the same), normalised again."""
    augment = ClipAugment(config, seed)

    def apply(clip: torch.Tensor) -> torch.Tensor:
        return normalization.apply(augment(normalization.invert(clip).clamp(0.0, 1.0)))

    return apply
