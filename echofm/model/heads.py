"""Downstream heads on top of the EchoFM encoder.

Two kinds of input, named by each head's `input_kind`:
- "features": the clip embedding `[B, D]` from `model.forward_features(video)`
  (LinearHead, MLPHead);
- "tokens": CLS then patch tokens `[B, 1 + L, D]` from `model.forward_tokens(video)`, patch
  tokens in slot order (time-major over the `(t, h, w)` grid) (AttentivePoolingHead,
  SegmentationHead).

Heads hold no encoder, so frozen-encoder training can cache encoder outputs once per clip and
train the head alone. `build_head(HeadConfig)` rebuilds a head from its saved config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from echofm.errors import ModelError

HEAD_KINDS: tuple[str, ...] = ("linear", "mlp", "attentive", "segmentation")


class HeadConfigError(ModelError, ValueError):
    """A head configuration that cannot be built."""


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """Everything needed to rebuild a head; saved beside its weights.

    kind: one of HEAD_KINDS. embed_dim: encoder width D. out_dim: outputs per clip (classes, or 1
    for regression/detection); "segmentation": logits per pixel (1: one mask; C: C classes).
    grid, frames, img_size, t_patch_size, patch_size: only for "segmentation": token grid
    `(t, h, w)` and the input size the masks are predicted at.
    """

    kind: str
    embed_dim: int
    out_dim: int = 1
    hidden_dim: int = 256
    num_heads: int = 4
    dropout: float = 0.0
    grid: tuple[int, int, int] | None = None
    num_frames: int | None = None
    img_size: int | None = None
    patch_size: int | None = None
    decoder_channels: int = 64

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise HeadConfigError(f"head kind {self.kind!r} not in {HEAD_KINDS}")
        if self.embed_dim <= 0 or self.out_dim <= 0 or self.hidden_dim <= 0:
            raise HeadConfigError("embed_dim, out_dim and hidden_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise HeadConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.kind == "attentive" and self.embed_dim % self.num_heads:
            raise HeadConfigError(f"embed_dim {self.embed_dim} not divisible by {self.num_heads}")
        if self.kind == "segmentation":
            if self.grid is None or self.num_frames is None or self.img_size is None:
                raise HeadConfigError("segmentation head needs grid, num_frames and img_size")
            if self.patch_size is None or self.patch_size <= 0:
                raise HeadConfigError("segmentation head needs a positive patch_size")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        data = dict(data)
        if data.get("grid") is not None:
            data["grid"] = tuple(data["grid"])
        return cls(**data)


class LinearHead(nn.Module):
    """LayerNorm + Linear on the clip embedding: `[B, D] -> [B, out_dim]` (the linear probe)."""

    input_kind = "features"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        # A parameter-free norm standardises features whose scale differs between a pretrained
        # and a random encoder, so one learning rate suits both arms of the comparison.
        self.norm = nn.LayerNorm(config.embed_dim, elementwise_affine=False)
        self.fc = nn.Linear(config.embed_dim, config.out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(features))


class MLPHead(nn.Module):
    """LayerNorm, Linear, GELU, dropout, Linear: `[B, D] -> [B, out_dim]`."""

    input_kind = "features"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.LayerNorm(config.embed_dim),
            nn.Linear(config.embed_dim, config.hidden_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.out_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class AttentivePoolingHead(nn.Module):
    """A learned query cross-attends to all tokens: `[B, 1 + L, D] -> [B, out_dim]`.

    The query sees CLS and patch tokens alike, so it can weight the frames and regions that
    matter for the task instead of relying on the encoder's own pooling.
    """

    input_kind = "tokens"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.query = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm_kv = nn.LayerNorm(config.embed_dim)
        self.attn = nn.MultiheadAttention(
            config.embed_dim, config.num_heads, dropout=config.dropout, batch_first=True
        )
        self.norm_out = nn.LayerNorm(config.embed_dim)
        self.fc = nn.Linear(config.embed_dim, config.out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        query = self.query.expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attn(query, kv, kv, need_weights=False)
        return self.fc(self.norm_out(pooled[:, 0]))


class SegmentationHead(nn.Module):
    """Light decoder on patch tokens: `[B, 1 + L, D] -> [B, T, H, W]` mask logits (out_dim 1),
    or `[B, C, T, H, W]` class logits (out_dim C > 1).

    The patch tokens are laid back on their `(t, h, w)` grid as a `[B, D, t, h, w]` volume,
    projected to `decoder_channels`, then upsampled 2x in space per stage (a per-frame 3x3 conv
    each, channels halving) until the patch size is undone, and finally interpolated to the
    input's `(T, H, W)` and refined by one 3x3x3 conv. The CLS token is not used.
    """

    input_kind = "tokens"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        assert config.grid is not None and config.patch_size is not None
        channels = config.decoder_channels
        self.proj = nn.Conv3d(config.embed_dim, channels, kernel_size=1)
        stages = []
        for _ in range(max(0, math.ceil(math.log2(config.patch_size)))):
            out = max(8, channels // 2)
            stages.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=(1, 2, 2), mode="trilinear", align_corners=False),
                    nn.Conv3d(channels, out, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
                    nn.GroupNorm(1, out),
                    nn.GELU(),
                )
            )
            channels = out
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv3d(channels, config.out_dim, kernel_size=3, padding=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t, h, w = self.config.grid  # type: ignore[misc]
        patches = tokens[:, 1:]
        if patches.shape[1] != t * h * w:
            raise HeadConfigError(f"expected {t * h * w} patch tokens, got {patches.shape[1]}")
        volume = patches.transpose(1, 2).reshape(tokens.shape[0], -1, t, h, w)
        x = self.stages(self.proj(volume))
        size = (self.config.num_frames, self.config.img_size, self.config.img_size)
        x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        logits = self.out(x)
        return logits[:, 0] if self.config.out_dim == 1 else logits


HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead,
    "mlp": MLPHead,
    "attentive": AttentivePoolingHead,
    "segmentation": SegmentationHead,
}


def build_head(config: HeadConfig) -> nn.Module:
    """The head named by `config.kind`, freshly initialised."""
    return HEADS[config.kind](config)
