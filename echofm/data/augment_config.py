"""The ranges pretraining's clip augmentations are drawn from (`echofm.data.augment` applies them).

Torch-free, so the pretraining options (and the command line built from them) can name it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Ranges the per-clip parameters are drawn from (uniformly).

    brightness: additive shift in [-brightness, brightness] (intensity units, [0, 1] scale).
    contrast: multiplicative factor in [1 - contrast, 1 + contrast] around the clip mean.
    rotation_deg: rotation angle in [-rotation_deg, rotation_deg] degrees (positive: clockwise as
        displayed, rows running downwards).
    scale: zoom factor in [1 - scale, 1 + scale].
    translate: shift in [-translate, translate], as a fraction of the frame width / height.
    """

    brightness: float = 0.1
    contrast: float = 0.2
    rotation_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "scale", "translate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AugmentConfig.{name} must lie in [0, 1), got {value}")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ValueError(f"AugmentConfig.rotation_deg must lie in [0, 180], got {self.rotation_deg}")
