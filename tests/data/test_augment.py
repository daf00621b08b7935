from __future__ import annotations

import numpy as np
import pytest
import torch

from echofm.data.augment import (
    AugmentConfig,
    AugmentParams,
    ClipAugment,
    adjust_brightness_contrast,
    affine_clip,
    apply_augment,
    sample_augment_params,
)


def _moving_square_clip(frames: int = 6, size: int = 32) -> torch.Tensor:
    """[1, T, H, W]: a bright square moving one pixel right per frame."""
    clip = torch.zeros(1, frames, size, size)
    for t in range(frames):
        clip[0, t, 10:18, 8 + t : 16 + t] = 1.0
    return clip


def test_same_seed_same_output_and_different_seed_differs():
    clip = torch.rand(3, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    config = AugmentConfig()
    a = ClipAugment(config, seed=7)
    b = ClipAugment(config, seed=7)
    c = ClipAugment(config, seed=8)
    first_a, first_b, first_c = a(clip), b(clip), c(clip)
    assert torch.equal(first_a, first_b)
    assert not torch.allclose(first_a, first_c)
    # The stream advances: the second draw of a seed is not the first one again.
    assert not torch.allclose(a(clip), first_a)


def test_every_frame_gets_the_same_transform():
    # Frames that are identical before augmentation must stay identical after it.
    frame = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    clip = frame.repeat(3, 5, 1, 1)
    out = ClipAugment(AugmentConfig(rotation_deg=20.0, translate=0.1), seed=3)(clip)
    for t in range(1, 5):
        assert torch.allclose(out[:, t], out[:, 0])
    assert not torch.allclose(out, clip)


def test_translation_moves_content_in_the_stated_direction():
    clip = _moving_square_clip()
    shifted = affine_clip(clip, angle_deg=0.0, scale=1.0, translate_x=4 / 32, translate_y=0.0)
    # 4/32 of the width is exactly 4 pixels: each frame's square moves 4 pixels right.
    assert torch.allclose(shifted[..., 4:], clip[..., :-4], atol=1e-5)
    down = affine_clip(clip, angle_deg=0.0, scale=1.0, translate_x=0.0, translate_y=2 / 32)
    assert torch.allclose(down[:, :, 2:], clip[:, :, :-2], atol=1e-5)


def test_positive_angle_rotates_clockwise_on_screen():
    clip = _moving_square_clip(frames=3, size=16)
    rotated = affine_clip(clip, angle_deg=90.0, scale=1.0, translate_x=0.0, translate_y=0.0)
    # rot90 with k=-1 over (H, W) is a clockwise quarter turn as displayed (rows run downwards).
    assert torch.allclose(rotated, torch.rot90(clip, k=-1, dims=(2, 3)), atol=1e-4)


def test_zoom_in_enlarges_the_bright_area():
    clip = _moving_square_clip(frames=2)
    zoomed = affine_clip(clip, angle_deg=0.0, scale=1.5, translate_x=0.0, translate_y=0.0)
    assert zoomed.sum() > 1.8 * clip.sum()


def test_brightness_contrast_keeps_range_and_mean_mapping():
    clip = torch.full((1, 2, 4, 4), 0.5)
    clip[0, :, 0, 0] = 0.9
    out = adjust_brightness_contrast(clip.clone(), brightness=0.1, contrast=2.0)
    mean = clip.mean()
    assert torch.allclose(out[0, 0, 0, 0], ((0.9 - mean) * 2 + mean + 0.1).clamp(max=1.0))
    assert out.min() >= 0 and out.max() <= 1
    saturated = adjust_brightness_contrast(clip.clone(), brightness=0.9, contrast=1.0)
    assert saturated.max() == 1.0


def test_identity_params_leave_the_clip_unchanged():
    clip = torch.rand(3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(apply_augment(clip.clone(), AugmentParams()), clip)


def test_sampled_params_stay_within_ranges():
    config = AugmentConfig(brightness=0.05, contrast=0.1, rotation_deg=5.0, scale=0.2, translate=0.02)
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = sample_augment_params(config, rng)
        assert abs(p.brightness) <= 0.05
        assert 0.9 <= p.contrast <= 1.1
        assert abs(p.angle_deg) <= 5.0
        assert 0.8 <= p.scale <= 1.2
        assert abs(p.translate_x) <= 0.02 and abs(p.translate_y) <= 0.02


@pytest.mark.parametrize("field,value", [("brightness", -0.1), ("scale", 1.0), ("rotation_deg", 200.0)])
def test_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})
