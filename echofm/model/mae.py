"""Spatiotemporal masked autoencoder (MAE-ST style) with EchoFM's temporal triplet loss.

Token order ("slot order") everywhere is the tubelet convolution's flattened output:
slot `s = ti*h*w + hi*w + wi` for time slice ti, row hi, column wi.

Correctness rules that the published implementation broke and this one keeps (tests prove both):
position embeddings are added in slot order *before* visible tokens are gathered, so each token
keeps the embedding of its own location; the decoder scatters every latent back to its own slot
with `ids_restore` and fills the remaining slots with the mask token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.utils.checkpoint
from einops import rearrange
from timm.models.vision_transformer import Block

from echofm.model.config import ModelConfig
from echofm.model.masking import gather_tokens, make_mask
from echofm.model.phase_triplet import phase_triplet_loss, pixel_phase_prior
from echofm.model.pos_embed import separable_pos_embed
from echofm.model.projector import SliceProjector
from echofm.model.triplet import slice_token_counts, temporal_triplet_loss
from echofm.errors import ModelError

# Parameter-name prefixes of everything `encode` uses (for encoder-only optimisers and exports).
ENCODER_PREFIXES: tuple[str, ...] = (
    "patch_embed.",
    "cls_token",
    "pos_embed_spatial",
    "pos_embed_temporal",
    "pos_embed_class",
    "blocks.",
    "norm.",
)

# Parameters an optimizer should exclude from weight decay.
NO_WEIGHT_DECAY: frozenset[str] = frozenset(
    {
        "cls_token",
        "mask_token",
        "pos_embed_spatial",
        "pos_embed_temporal",
        "pos_embed_class",
        "decoder_pos_embed_spatial",
        "decoder_pos_embed_temporal",
        "decoder_pos_embed_class",
        "slice_projector.cls_token",
    }
)


class VideoShapeError(ModelError, ValueError):
    """The video tensor does not have the `[B, C, T, H, W]` shape the model was built for."""


class TripletInputError(ModelError, ValueError):
    """The phase triplet loss was asked for without the video whose pixels are its prior."""


@dataclass(frozen=True)
class EncoderOutput:
    """What `encode` returns and `decode` consumes.

    tokens: `[B, 1 + L_vis, D]`, CLS first, then visible tokens in `ids_keep` order.
    mask: `[B, L]` float, 1 = masked.
    ids_restore: `[B, L]` int64 (see `echofm.model.masking`).
    ids_keep: `[B, L_vis]` int64, the slot of each visible token.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor
    ids_keep: torch.Tensor


@dataclass(frozen=True)
class MAEOutput:
    """Result of one pretraining forward pass.

    loss = recon_loss + triplet_weight * triplet_loss (float32 scalars).
    pred: `[B, L, patch_dim]` predicted pixels of every slot (in `patchify` layout).
    mask: `[B, L]` float, 1 = masked; ids_restore: `[B, L]` int64.
    """

    loss: torch.Tensor
    recon_loss: torch.Tensor
    triplet_loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


def clip_features(tokens: torch.Tensor) -> torch.Tensor:
    """Clip embedding `[B, D]` from encoder tokens `[B, 1 + L, D]`: the mean of the patch tokens.

    The mean of patch tokens rather than CLS: MAE pretraining gives CLS no objective of its
    own, while every patch token is trained by reconstruction (MAE/VideoMAE probe this way).
    A model with token and feature heads pools its one encoder pass with this.
    """
    return tokens[:, 1:].mean(dim=1)


class TubeletEmbed(nn.Module):
    """Conv3d with kernel = stride = (t_patch, p, p): `[B, C, T, H, W]` -> `[B, L, D]`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.expected = (config.in_chans, config.num_frames, config.img_size, config.img_size)
        kernel = (config.t_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_chans, config.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() != 5 or tuple(video.shape[1:]) != self.expected:
            raise VideoShapeError(
                f"expected video [B, {', '.join(map(str, self.expected))}], "
                f"got {list(video.shape)}"
            )
        return self.proj(video).flatten(2).transpose(1, 2)


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float) -> nn.ModuleList:
    norm = partial(nn.LayerNorm, eps=1e-6)
    # Stochastic depth grows linearly with depth (plain floats: this also runs on the meta device).
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList(
        Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm, drop_path=rate)
        for rate in rates
    )


class MaskedAutoencoderViT(nn.Module):
    """MAE for echo video `[B, C, T, H, W]` with a temporal triplet loss on the encoder output.

    Build it with `echofm.model.build_model(preset, **overrides)` or from a `ModelConfig`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        t, h, w = config.grid
        dim, ddim = config.embed_dim, config.decoder_embed_dim

        self.patch_embed = TubeletEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, dim))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, dim))
        self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = _blocks(dim, config.depth, config.num_heads, config.mlp_ratio,
                              config.drop_path_rate)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # Pretraining only (the triplet loss's per-slice CLS summaries); `encode` does not use it.
        self.slice_projector = SliceProjector(dim, config.num_heads, config.mlp_ratio)

        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, ddim))
        self.decoder_pos_embed_temporal = nn.Parameter(torch.zeros(1, t, ddim))
        self.decoder_pos_embed_class = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_blocks = _blocks(ddim, config.decoder_depth, config.decoder_num_heads,
                                      config.mlp_ratio, 0.0)
        self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = nn.Linear(ddim, config.patch_dim)
        # Recompute block activations in the backward pass instead of storing them (training
        # only): less memory for more compute. A run-time switch, not part of the config: it
        # changes no number the model computes.
        self.activation_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # MAE-ST initialisation: xavier for projections, trunc-normal 0.02 for learned tables.
        for table in (
            self.cls_token, self.pos_embed_spatial, self.pos_embed_temporal, self.pos_embed_class,
            self.decoder_pos_embed_spatial, self.decoder_pos_embed_temporal,
            self.decoder_pos_embed_class,
        ):
            nn.init.trunc_normal_(table, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ----------------------------------------------------------------- layout helpers
    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid `(t, h, w)`."""
        return self.config.grid

    @property
    def num_patches(self) -> int:
        """Tokens per clip `L`."""
        return self.config.num_patches

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """`[B, C, T, H, W]` -> `[B, L, patch_dim]`, slot order, pixels ordered (pt, py, px, C)."""
        cfg = self.config
        return rearrange(video, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)",
                         pt=cfg.t_patch_size, ph=cfg.patch_size, pw=cfg.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of `patchify`: `[B, L, patch_dim]` -> `[B, C, T, H, W]`."""
        cfg = self.config
        t, h, w = self.grid
        return rearrange(patches, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
                         t=t, h=h, w=w, pt=cfg.t_patch_size, ph=cfg.patch_size, pw=cfg.patch_size)

    # ----------------------------------------------------------------- encoder
    def _embed(self, video: torch.Tensor) -> torch.Tensor:
        """Patch tokens plus their position embeddings, in slot order: `[B, L, D]`."""
        x = self.patch_embed(video)
        return x + separable_pos_embed(self.pos_embed_spatial, self.pos_embed_temporal)

    def _encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend CLS, run the blocks and the final norm: `[B, N, D]` -> `[B, 1 + N, D]`."""
        cls = (self.cls_token + self.pos_embed_class).expand(x.shape[0], -1, -1)
        x = torch.cat([cls.to(x.dtype), x], dim=1)
        return self.norm(self._run_blocks(self.blocks, x))

    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        checkpointed = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in blocks:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
        return x

    def encode(
        self,
        video: torch.Tensor,
        mask_ratio: float | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> EncoderOutput:
        """Mask `video` `[B, C, T, H, W]` and encode the visible tokens.

        `mask_ratio` defaults to `config.mask_ratio`; 0 keeps every token (still shuffled).
        `generator` makes the mask reproducible without touching the global RNG.
        """
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        x = self._embed(video)
        plan = make_mask(self.config.mask_mode, x.shape[0], self.grid, ratio,
                         device=x.device, generator=generator)
        tokens = self._encode_tokens(gather_tokens(x, plan.ids_keep))
        return EncoderOutput(tokens=tokens, mask=plan.mask, ids_restore=plan.ids_restore,
                             ids_keep=plan.ids_keep)

    def forward_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """All tokens without masking, slot order, after the final norm: `[B, 1 + L, D]`."""
        return self._encode_tokens(self._embed(video))

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """Clip embedding `[B, D]`: `clip_features` of `forward_tokens`."""
        return clip_features(self.forward_tokens(video))

    # ----------------------------------------------------------------- decoder
    def decode(self, latent: EncoderOutput) -> torch.Tensor:
        """Predict the pixels of every slot: `[B, L, patch_dim]` (patchify layout).

        Visible latents go back to their own slots via `ids_restore`; the other slots hold the
        mask token. Decoder position embeddings are added after that, in slot order.
        """
        x = self.decoder_embed(latent.tokens)
        b, n_vis = x.shape[0], x.shape[1] - 1
        fill = self.mask_token.to(x.dtype).expand(b, self.num_patches - n_vis, -1)
        patches = gather_tokens(torch.cat([x[:, 1:], fill], dim=1), latent.ids_restore)
        patches = patches + separable_pos_embed(self.decoder_pos_embed_spatial,
                                                self.decoder_pos_embed_temporal)
        cls = x[:, :1] + self.decoder_pos_embed_class
        x = torch.cat([cls.to(patches.dtype), patches], dim=1)
        x = self._run_blocks(self.decoder_blocks, x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    # ----------------------------------------------------------------- losses
    def reconstruction_loss(
        self, video: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Per-patch MSE averaged over masked slots only (0 when nothing is masked), float32."""
        target = self.patchify(video).float()
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def slice_summaries(self, latent: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-time-slice CLS summaries of the visible tokens (`projector.py`), in float32.

        Returns summaries `[B, t, D]` and the visible tokens per slice `[B, t]` (a slice with none
        has no real summary). Float32 even under autocast: the projector is a small share of the
        step, and bf16 cosines (3 significant digits) would blur the positive/negative split
        around the row mean.
        """
        t, h, w = self.grid
        slice_index = torch.div(latent.ids_keep, h * w, rounding_mode="floor")
        with torch.autocast(latent.tokens.device.type, enabled=False):
            summaries = self.slice_projector(latent.tokens[:, 1:].float(), slice_index, t)
        return summaries, slice_token_counts(slice_index, t)

    def triplet_loss(self, latent: EncoderOutput, video: torch.Tensor | None = None) -> torch.Tensor:
        """Temporal triplet loss of `config.triplet_mode` on the per-slice CLS summaries, float32:
        "phase" (`phase_triplet.py`) needs the `video` the latent was encoded from, whose pixels
        are its phase prior; "self" is the seed's design (`triplet.py`)."""
        summaries, counts = self.slice_summaries(latent)
        cfg = self.config
        with torch.autocast(summaries.device.type, enabled=False):
            if cfg.triplet_mode == "self":
                return temporal_triplet_loss(summaries, counts > 0, cfg.triplet_margin)
            if video is None:
                raise TripletInputError("the phase triplet loss needs the video its latent was encoded from")
            prior = pixel_phase_prior(video, cfg.t_patch_size)
            return phase_triplet_loss(summaries, counts > 0, prior, cfg.triplet_margin)

    def forward(
        self,
        video: torch.Tensor,
        mask_ratio: float | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """Pretraining pass on `video` `[B, C, T, H, W]` (normalised pixels)."""
        latent = self.encode(video, mask_ratio, generator=generator)
        pred = self.decode(latent)
        recon = self.reconstruction_loss(video, pred, latent.mask)
        triplet = self.triplet_loss(latent, video)
        return MAEOutput(
            loss=recon + self.config.triplet_weight * triplet,
            recon_loss=recon,
            triplet_loss=triplet,
            pred=pred,
            mask=latent.mask,
            ids_restore=latent.ids_restore,
        )

    # ----------------------------------------------------------------- optimiser helpers
    def no_weight_decay(self) -> set[str]:
        """Names of parameters to exclude from weight decay (tables and tokens)."""
        return set(NO_WEIGHT_DECAY)

    def encoder_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """`(name, parameter)` of everything `encode` uses (no decoder, no mask token)."""
        for name, param in self.named_parameters():
            if name.startswith(ENCODER_PREFIXES):
                yield name, param

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of everything `encode` uses (see `encoder_named_parameters`)."""
        for _, param in self.encoder_named_parameters():
            yield param
