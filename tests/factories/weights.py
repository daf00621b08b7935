"""Checkpoints in the published layouts, generated (never downloaded) for the loader tests.

Key names and shapes follow each project's documented model definitions (facts, no code):

- EchoFM (`EchoFM/models_mae.py`, on MAE-ST's `video_vit`): `patch_embed.proj` Conv3d
  `[D, 3, pt, p, p]`; `cls_token`; separable `pos_embed_spatial [1, h*w, D]`,
  `pos_embed_temporal [1, t, D]`, `pos_embed_class [1, 1, D]` (or one joint `pos_embed`
  `[1, 1 + L, D]` without `sep_pos_embed`); blocks with separate `attn.q/k/v`; `norm`; the
  per-slice projector `decoder_block.*` + `decoder_prj_cls_token` (+ `prj_norm` since 2026);
  decoder `decoder_embed`, `mask_token`, `decoder_cls_token`, `decoder_pos_embed_*`,
  `decoder_blocks.*`, `decoder_norm`, `decoder_pred [pred_t * p * p * 3, Dd]`. Saved as
  `{"model": state_dict}` (2024) and `{"model", "model_args"}` (2026).
- MAE-ST (`models_mae.py`, `models_vit.py`): the same encoder and decoder names without the
  projector; fine-tuned files add `head`; training checkpoints `{"model", "optimizer", "epoch",
  "scaler", "args": Namespace}`, the released Kinetics ones `{"model_state": ...}`.
- VideoMAE / VideoMAEv2 (`modeling_pretrain.py`, `modeling_finetune.py`): no CLS; fixed sin-cos
  table not stored; blocks with a fused bias-free `attn.qkv` plus `attn.q_bias`/`attn.v_bias`,
  optional layer scale `gamma_1`/`gamma_2`; pretraining keys under `encoder.` / `decoder.` with
  `encoder_to_decoder` (no bias), `mask_token`, `decoder.head [3 * pt * p * p, Dd]`; fine-tuned
  `fc_norm` + `head`; saved under `model` or `module`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from echofm.bench.reference import PublishedStepReference
from echofm.model import ModelConfig


def timm_vit_file(path: Path, *, depth: int = 2, img_size: int = 32, patch_size: int = 8,
                  seed: int = 0) -> Path:
    """An ImageNet-style baseline: timm's `vit_tiny_patch16_224` architecture (the tiny preset's
    192 width, 3 heads) at test size, randomly initialised, saved as timm/Hugging Face do
    (`.safetensors`)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=depth,
                            img_size=img_size, patch_size=patch_size)
    save_file(vit.state_dict(), path)
    return path


def _random(generator: torch.Generator, *shape: int, scale: float = 0.02) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * scale


def vit_block(prefix: str, dim: int, generator: torch.Generator, *, attention: str,
              layer_scale: bool = False) -> dict[str, torch.Tensor]:
    """One pre-norm block: `attention` is "split" (q/k/v), "fused" (qkv) or "qv_bias"."""
    g = generator
    state = {
        f"{prefix}norm1.weight": 1 + _random(g, dim), f"{prefix}norm1.bias": _random(g, dim),
        f"{prefix}attn.proj.weight": _random(g, dim, dim), f"{prefix}attn.proj.bias": _random(g, dim),
        f"{prefix}norm2.weight": 1 + _random(g, dim), f"{prefix}norm2.bias": _random(g, dim),
        f"{prefix}mlp.fc1.weight": _random(g, 4 * dim, dim),
        f"{prefix}mlp.fc1.bias": _random(g, 4 * dim),
        f"{prefix}mlp.fc2.weight": _random(g, dim, 4 * dim), f"{prefix}mlp.fc2.bias": _random(g, dim),
    }
    if attention == "split":
        for name in "qkv":
            state[f"{prefix}attn.{name}.weight"] = _random(g, dim, dim)
            state[f"{prefix}attn.{name}.bias"] = _random(g, dim)
    else:
        state[f"{prefix}attn.qkv.weight"] = _random(g, 3 * dim, dim)
        if attention == "fused":
            state[f"{prefix}attn.qkv.bias"] = _random(g, 3 * dim)
        else:
            state[f"{prefix}attn.q_bias"] = _random(g, dim)
            state[f"{prefix}attn.v_bias"] = _random(g, dim)
    if layer_scale:
        state[f"{prefix}gamma_1"] = 0.1 + _random(g, dim, scale=0.01)
        state[f"{prefix}gamma_2"] = 0.1 + _random(g, dim, scale=0.01)
    return state


@dataclass(frozen=True, kw_only=True)
class VideoViT:
    """Sizes of a generated video ViT: grid `(frames // t_patch, img // patch, img // patch)`."""

    dim: int = 64
    depth: int = 2
    frames: int = 16
    t_patch: int = 2
    img: int = 32
    patch: int = 8
    decoder_dim: int = 64
    decoder_depth: int = 1

    @property
    def grid(self) -> tuple[int, int, int]:
        side = self.img // self.patch
        return self.frames // self.t_patch, side, side


def mae_st_state(
    vit: VideoViT, *, seed: int = 0, sep_pos_embed: bool = True, cls_embed: bool = True,
    decoder: bool = True, head_classes: int = 0, pred_t_dim: int = 8,
) -> dict[str, torch.Tensor]:
    """An MAE-ST state dict (pretraining with decoder, or fine-tuned with `head_classes`)."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = vit.grid
    d, dd, p = vit.dim, vit.decoder_dim, vit.patch
    state = {"patch_embed.proj.weight": _random(g, d, 3, vit.t_patch, p, p),
             "patch_embed.proj.bias": _random(g, d)}
    if cls_embed:
        state["cls_token"] = _random(g, 1, 1, d)
    state.update(_positions("", d, vit.grid, g, sep_pos_embed, cls_embed))
    for i in range(vit.depth):
        state.update(vit_block(f"blocks.{i}.", d, g, attention="split"))
    state.update({"norm.weight": 1 + _random(g, d), "norm.bias": _random(g, d)})
    if decoder:
        pred_rows = vit.t_patch * pred_t_dim // vit.frames * p * p * 3
        state.update({"decoder_embed.weight": _random(g, dd, d), "decoder_embed.bias": _random(g, dd),
                      "mask_token": _random(g, 1, 1, dd),
                      "decoder_norm.weight": 1 + _random(g, dd), "decoder_norm.bias": _random(g, dd),
                      "decoder_pred.weight": _random(g, pred_rows, dd),
                      "decoder_pred.bias": _random(g, pred_rows)})
        if cls_embed:
            state["decoder_cls_token"] = _random(g, 1, 1, dd)
        state.update(_positions("decoder_", dd, vit.grid, g, sep_pos_embed, cls_embed))
        for i in range(vit.decoder_depth):
            state.update(vit_block(f"decoder_blocks.{i}.", dd, g, attention="split"))
    if head_classes:
        state.update({"head.weight": _random(g, head_classes, d), "head.bias": _random(g, head_classes)})
    return state


def _positions(prefix: str, dim: int, grid: tuple[int, int, int], g: torch.Generator,
               separable: bool, cls: bool) -> dict[str, torch.Tensor]:
    t, h, w = grid
    if separable:
        tables = {f"{prefix}pos_embed_spatial": _random(g, 1, h * w, dim),
                  f"{prefix}pos_embed_temporal": _random(g, 1, t, dim)}
        if cls:
            tables[f"{prefix}pos_embed_class"] = _random(g, 1, 1, dim)
        return tables
    return {f"{prefix}pos_embed": _random(g, 1, int(cls) + t * h * w, dim)}


def additive_joint_table(spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
    """`[1, t*h*w, D]` with slot `ti*h*w + si` = spatial[si] + temporal[ti]."""
    return (temporal.transpose(0, 1) + spatial).reshape(1, -1, spatial.shape[-1])


def videomae_state(
    vit: VideoViT, *, seed: int = 0, pretraining: bool = True, layer_scale: bool = False,
    learned_pos: bool = False, head_classes: int = 0,
) -> dict[str, torch.Tensor]:
    """A VideoMAE/VideoMAEv2 state dict (pretraining `encoder.`/`decoder.`, or fine-tuned)."""
    g = torch.Generator().manual_seed(seed)
    d, dd, p = vit.dim, vit.decoder_dim, vit.patch
    enc = "encoder." if pretraining else ""
    state = {f"{enc}patch_embed.proj.weight": _random(g, d, 3, vit.t_patch, p, p),
             f"{enc}patch_embed.proj.bias": _random(g, d)}
    if learned_pos:
        state[f"{enc}pos_embed"] = _random(g, 1, vit.grid[0] * vit.grid[1] * vit.grid[2], d)
    for i in range(vit.depth):
        state.update(vit_block(f"{enc}blocks.{i}.", d, g, attention="qv_bias",
                               layer_scale=layer_scale))
    if pretraining:
        state.update({"encoder.norm.weight": 1 + _random(g, d), "encoder.norm.bias": _random(g, d),
                      "encoder_to_decoder.weight": _random(g, dd, d),
                      "mask_token": _random(g, 1, 1, dd),
                      "decoder.norm.weight": 1 + _random(g, dd), "decoder.norm.bias": _random(g, dd),
                      "decoder.head.weight": _random(g, 3 * vit.t_patch * p * p, dd),
                      "decoder.head.bias": _random(g, 3 * vit.t_patch * p * p)})
        for i in range(vit.decoder_depth):
            state.update(vit_block(f"decoder.blocks.{i}.", dd, g, attention="qv_bias"))
    else:
        state.update({"fc_norm.weight": 1 + _random(g, d), "fc_norm.bias": _random(g, d)})
    if head_classes:
        state.update({"head.weight": _random(g, head_classes, d), "head.bias": _random(g, head_classes)})
    return state


def training_args(**values: object) -> argparse.Namespace:
    """The `args` Namespace MAE-ST/EchoFM/VideoMAE training scripts store in checkpoints."""
    return argparse.Namespace(**values)


def published_echofm(config: ModelConfig, *, release: int = 2024, pred_frames: int = 8,
                     seed: int = 0) -> tuple[PublishedStepReference, dict[str, torch.Tensor]]:
    """The published EchoFM model (re-stated by `echofm.bench.reference`, index-correct) with
    every parameter perturbed, and its state dict under the published names."""
    torch.manual_seed(seed)
    reference = PublishedStepReference(config, pred_frames=pred_frames)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(torch.randn(param.shape, generator=g) * 0.02)
    renames = {"patch_embed.weight": "patch_embed.proj.weight",
               "patch_embed.bias": "patch_embed.proj.bias",
               "projector_cls": "decoder_prj_cls_token"}
    state = {}
    for key, value in reference.state_dict().items():
        key = renames.get(key, key)
        state[key.replace("projector.", "decoder_block.", 1) if key.startswith("projector.")
              else key] = value.clone()
    if release >= 2026:
        state["prj_norm.weight"] = 1 + _random(g, config.embed_dim)
        state["prj_norm.bias"] = _random(g, config.embed_dim)
    return reference.eval(), state


def published_encoder_tokens(reference: PublishedStepReference, video: torch.Tensor) -> torch.Tensor:
    """The published encoder's output at mask ratio 0: `[B, 1 + L, D]`, CLS then slot order."""
    ids = torch.arange(reference.config.num_patches).expand(video.shape[0], -1)
    with torch.no_grad():
        return reference._encode(video, ids)
