"""Seeded clip augmentations for pretraining.

Every augmentation is drawn once per clip and applied identically to every frame of it: the MAE
and the temporal triplet loss learn from how a heart moves between frames, so a per-frame jitter
would invent motion that is not there. Pure functions work on one clip tensor `[C, T, H, W]`
(float, intensities in [0, 1]); `ClipAugment` is the thin seeded layer on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from echofm.data.augment_config import AugmentConfig


@dataclass(frozen=True, kw_only=True)
class AugmentParams:
    """One clip's draw: the values every frame of that clip is transformed with."""

    brightness: float = 0.0
    contrast: float = 1.0
    angle_deg: float = 0.0
    scale: float = 1.0
    translate_x: float = 0.0  # fraction of the width, positive moves content right
    translate_y: float = 0.0  # fraction of the height, positive moves content down


def sample_augment_params(config: AugmentConfig, rng: np.random.Generator) -> AugmentParams:
    """Draw one clip's parameters from `config`'s ranges; always consumes exactly six draws."""
    u = rng.uniform(-1.0, 1.0, size=6)
    return AugmentParams(
        brightness=float(u[0] * config.brightness),
        contrast=float(1.0 + u[1] * config.contrast),
        angle_deg=float(u[2] * config.rotation_deg),
        scale=float(1.0 + u[3] * config.scale),
        translate_x=float(u[4] * config.translate),
        translate_y=float(u[5] * config.translate),
    )


def adjust_brightness_contrast(clip: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """Scale intensities around the clip mean by `contrast`, add `brightness`, clamp to [0, 1].

    clip: float `[C, T, H, W]` in [0, 1]. One mean for the whole clip, so every frame gets the
    same mapping.
    """
    mean = clip.mean()
    return ((clip - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def affine_clip(
    clip: torch.Tensor,
    *,
    angle_deg: float,
    scale: float,
    translate_x: float,
    translate_y: float,
) -> torch.Tensor:
    """Rotate, zoom and shift every frame of `clip` with one sampling grid.

    clip: float `[C, T, H, W]`. Returns the same shape; pixels sampled from outside the frame are
    zero, which matches the black background outside the ultrasound sector.
    """
    channels, frames, height, width = clip.shape
    theta = _affine_matrix(angle_deg, scale, translate_x, translate_y, dtype=clip.dtype, device=clip.device)
    grid = F.affine_grid(theta, [1, channels * frames, height, width], align_corners=False)
    # Folding C and T into the channel axis lets a single grid_sample move all frames identically.
    warped = F.grid_sample(
        clip.reshape(1, channels * frames, height, width),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return warped.reshape(channels, frames, height, width)


def _affine_matrix(
    angle_deg: float,
    scale: float,
    translate_x: float,
    translate_y: float,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The `[1, 2, 3]` output-to-input map `affine_grid` expects, in normalised [-1, 1] units."""
    angle = math.radians(angle_deg)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # affine_grid maps output coordinates to input ones, so the forward transform is inverted:
    # rotate by -angle, divide by the zoom, and shift by minus the translation (x2: [-1, 1] spans 2).
    tx, ty = -2.0 * translate_x, -2.0 * translate_y
    matrix = [
        [cos, sin, cos * tx + sin * ty],
        [-sin, cos, -sin * tx + cos * ty],
    ]
    return torch.tensor([matrix], dtype=dtype, device=device)


def apply_augment(clip: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Intensity jitter then the affine warp, both with `params`. clip: float `[C, T, H, W]` in [0, 1]."""
    out = adjust_brightness_contrast(clip, params.brightness, params.contrast)
    if params.angle_deg or params.scale != 1.0 or params.translate_x or params.translate_y:
        out = affine_clip(
            out,
            angle_deg=params.angle_deg,
            scale=params.scale,
            translate_x=params.translate_x,
            translate_y=params.translate_y,
        )
    return out


class ClipAugment:
    """Seeded augmentation: the n-th call on the same seed always draws the same parameters.

    >>> augment = ClipAugment(AugmentConfig(), seed=0)
    >>> out = augment(clip)            # clip: float [C, T, H, W] in [0, 1]
    """

    def __init__(self, config: AugmentConfig, seed: int) -> None:
        self.config = config
        self._rng = np.random.default_rng(seed)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        return apply_augment(clip, sample_augment_params(self.config, self._rng))
