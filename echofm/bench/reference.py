"""The published EchoFM pretraining step, re-stated for side-by-side timing (`echofm bench model`).

Not a model to train or load weights into. It does the *work* of one training step of the
published implementation (EchoFM's `models_mae.py` on MAE-ST's `video_vit` blocks) at the size of a
`ModelConfig`, so the model benchmark can time it against `MaskedAutoencoderViT` in the same run,
on the same machine and input. What it reproduces, because each costs time:

- **Attention** with three separate q, k and v projections and an explicit
  `softmax(Q K^T * scale) V`: the full `[B, heads, N, N]` matrix is built, scaled, soft-maxed and
  kept for the backward pass (in the decoder, N = 1 + 1568).
- **Encoder**: CLS token plus the visible tokens of a tube mask (the same spatial keep-set in every
  time slice, which the per-slice projector needs), separable position embeddings, pre-norm blocks
  with a GELU MLP, final norm.
- **Projector** for the triplet loss: one extra encoder-width block, run once per time slice on
  `[projector CLS, that slice's visible tokens]` and followed by the encoder's final norm; the CLS
  output of each slice is that slice's summary.
- **Decoder**: linear embed, mask tokens, unshuffle, CLS, position embeddings, blocks, norm, and a
  pixel head for `pred_frames` frames spread evenly over the clip (8 of 32: one frame per
  tubelet); the loss is MSE on masked tokens against those frames.

Every parameter trains, the encoder included (a step that froze the encoder would skip its
backward pass and time a different, cheaper job). The index fixes of `echofm.model` are used
here (correct slots): they cost nothing, and the published index errors do not change the work.
The triplet selection uses `echofm.model.triplet` on the projector summaries; the published
selection (a pixel-space prior, or a random positive and negative) is a few `[B, 8, 8]` operations,
negligible beside the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from einops import rearrange
from timm.layers import Mlp

from echofm.model.config import ModelConfig
from echofm.model.masking import gather_tokens, make_mask
from echofm.model.pos_embed import separable_pos_embed
from echofm.model.triplet import temporal_triplet_loss

# Frames the published decoder reconstructs per clip (its `pred_t_dim`).
PUBLISHED_PRED_FRAMES = 8


@dataclass(frozen=True)
class ReferenceOutput:
    """Losses of one reference step (float32 scalars): loss = recon_loss + triplet_weight * triplet."""

    loss: torch.Tensor
    recon_loss: torch.Tensor
    triplet_loss: torch.Tensor


class ExplicitAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections and a materialised score matrix.

    `[B, N, D]` -> `[B, N, D]`; the same function as timm's fused attention (tests compare them).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b n (h e) -> b h n e", h=self.heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) * self.scale  # [B, heads, N, N]
        mixed = scores.softmax(dim=-1) @ v
        return self.proj(rearrange(mixed, "b h n e -> b n (h e)"))


class ReferenceBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.attn = ExplicitAttention(dim, heads)
        self.norm2 = norm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _table(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.02)


class PublishedStepReference(nn.Module):
    """The published EchoFM training step's computation at the sizes of `config` (module doc).

    `forward(video)` on `[B, C, T, H, W]` returns a `ReferenceOutput`; `config` is kept so the
    model benchmark builds the same input for it as for `MaskedAutoencoderViT`.
    """

    def __init__(self, config: ModelConfig, pred_frames: int = PUBLISHED_PRED_FRAMES) -> None:
        super().__init__()
        self.config = config
        t, h, w = config.grid
        dim, ddim, p = config.embed_dim, config.decoder_embed_dim, config.patch_size
        # Frames of the target per tubelet; 1 for the published 8 of 32 frames, 4-frame tubelets.
        self.pred_t = max(1, config.t_patch_size * min(pred_frames, config.num_frames)
                          // config.num_frames)
        kernel = (config.t_patch_size, p, p)
        self.patch_embed = nn.Conv3d(config.in_chans, dim, kernel_size=kernel, stride=kernel)
        self.cls_token = _table(1, 1, dim)
        self.pos_embed_spatial = _table(1, h * w, dim)
        self.pos_embed_temporal = _table(1, t, dim)
        self.pos_embed_class = _table(1, 1, dim)
        self.blocks = nn.ModuleList(ReferenceBlock(dim, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.projector_cls = _table(1, 1, dim)
        self.projector = ReferenceBlock(dim, config.num_heads, config.mlp_ratio)
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = _table(1, 1, ddim)
        self.decoder_cls_token = _table(1, 1, ddim)
        self.decoder_pos_embed_spatial = _table(1, h * w, ddim)
        self.decoder_pos_embed_temporal = _table(1, t, ddim)
        self.decoder_pos_embed_class = _table(1, 1, ddim)
        self.decoder_blocks = nn.ModuleList(
            ReferenceBlock(ddim, config.decoder_num_heads, config.mlp_ratio)
            for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = nn.Linear(ddim, self.pred_t * p * p * config.in_chans)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """What the published encoder holds (patch embed, CLS, position tables, blocks, norm)."""
        modules = (self.patch_embed, self.blocks, self.norm)
        tables = (self.cls_token, self.pos_embed_spatial, self.pos_embed_temporal,
                  self.pos_embed_class)
        return [p for m in modules for p in m.parameters()] + list(tables)

    def _mask(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                               torch.Tensor]:
        """Tube mask with visible slots in ascending order, so each slice's tokens are contiguous.

        Returns ids_keep `[B, L_vis]`, ids_restore `[B, L]` and mask `[B, L]` (1 = masked).
        """
        cfg = self.config
        mask = make_mask("tube", batch, cfg.grid, cfg.mask_ratio, device=device).mask
        order = torch.argsort(mask, dim=1, stable=True)  # visible slots ascending, then masked
        n_visible = int((mask[0] == 0).sum())
        return order[:, :n_visible], torch.argsort(order, dim=1), mask

    def _encode(self, video: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """`[B, 1 + L_vis, D]` after the final norm, CLS first."""
        x = self.patch_embed(video).flatten(2).transpose(1, 2)
        x = x + separable_pos_embed(self.pos_embed_spatial, self.pos_embed_temporal)
        x = gather_tokens(x, ids_keep)
        cls = (self.cls_token + self.pos_embed_class).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _slice_summaries(self, visible: torch.Tensor) -> torch.Tensor:
        """Projector CLS output per time slice: `[B, L_vis, D]` -> `[B, t, D]`, one block call per
        slice (the published loop)."""
        t = self.config.grid[0]
        per_slice = rearrange(visible, "b (t n) d -> b t n d", t=t)
        cls = self.projector_cls.expand(visible.shape[0], -1, -1)
        summaries = [self.norm(self.projector(torch.cat([cls, per_slice[:, i]], dim=1)))[:, 0]
                     for i in range(t)]
        return torch.stack(summaries, dim=1)

    def _decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Pixel predictions of every slot `[B, L, pred_t * p * p * C]` from visible latents."""
        x = self.decoder_embed(latent)
        fill = self.mask_token.expand(x.shape[0], ids_restore.shape[1] - x.shape[1], -1)
        x = gather_tokens(torch.cat([x, fill], dim=1), ids_restore)
        x = x + separable_pos_embed(self.decoder_pos_embed_spatial,
                                    self.decoder_pos_embed_temporal)
        cls = (self.decoder_cls_token + self.decoder_pos_embed_class).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def _target(self, video: torch.Tensor) -> torch.Tensor:
        """The frames the decoder predicts, patchified like its output: `[B, L, pred_t*p*p*C]`."""
        cfg = self.config
        frames = cfg.grid[0] * self.pred_t
        index = torch.linspace(0, cfg.num_frames - 1, frames, device=video.device).long()
        return rearrange(video.index_select(2, index),
                         "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)",
                         pt=self.pred_t, ph=cfg.patch_size, pw=cfg.patch_size)

    def forward(self, video: torch.Tensor) -> ReferenceOutput:
        ids_keep, ids_restore, mask = self._mask(video.shape[0], video.device)
        encoded = self._encode(video, ids_keep)
        visible = encoded[:, 1:]
        summaries = self._slice_summaries(visible)
        valid = torch.ones(summaries.shape[:2], dtype=torch.bool, device=video.device)
        triplet = temporal_triplet_loss(summaries, valid, self.config.triplet_margin)
        pred = self._decode(visible, ids_restore)
        per_patch = ((pred - self._target(video)) ** 2).mean(dim=-1)
        recon = (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
        return ReferenceOutput(loss=recon + self.config.triplet_weight * triplet,
                               recon_loss=recon, triplet_loss=triplet)
