"""Checkpoints that embed their config, so a model is rebuilt from the file alone.

File layout (a `torch.save` dict): `{"config": asdict(ModelConfig), "model": state_dict,
"format": 1, ...state, ...extra}`. The seed's format `{"model": state_dict}` also loads: the
config is then taken from an explicit `preset`/`config` argument, or inferred from the tensor
shapes (sizes from the shapes, head counts from the registered preset with the same widths and
depths; see `infer_config`). Seed files whose attention stores separate `q`/`k`/`v` projections
are merged into timm's fused `qkv` on load, and the published names of the slice projector
(`decoder_block.*`, `decoder_prj_cls_token`; it shared the encoder's final norm) are mapped onto
`slice_projector.*`. A file without a slice projector (it is used only by the pretraining loss)
loads with a freshly initialised one and a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from echofm.model.config import ModelConfig, ModelConfigError
from echofm.model.mae import MaskedAutoencoderViT
from echofm.model.presets import PRESETS, preset_config
from echofm.errors import ModelError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# State-dict prefix of the pretraining-only module a checkpoint may lack.
_PROJECTOR = "slice_projector."
_RESERVED = frozenset({"config", "model", "format"})


class CheckpointError(ModelError, ValueError):
    """A checkpoint cannot be read or does not match the model it describes; names the file."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MaskedAutoencoderViT,
    *,
    extra: dict[str, Any] | None = None,
    **state: Any,
) -> Path:
    """Write `{"config", "model", "format", **state, **extra}` to `path` atomically.

    `state` holds named training state (e.g. `optimizer=opt.state_dict(), epoch=3`); `extra`
    holds anything else. Keep values to tensors, containers and plain scalars so the file loads
    with `weights_only=True`. The file is written to `path.tmp` and renamed, so a reader never
    sees half a checkpoint.
    """
    path = Path(path)
    payload: dict[str, Any] = {}
    for source in (state, extra or {}):
        clash = _RESERVED & set(source)
        if clash:
            raise ValueError(f"checkpoint keys {sorted(clash)} are reserved")
        payload.update(source)
    payload["config"] = dataclasses.asdict(model.config)
    payload["model"] = model.state_dict()
    payload["format"] = CHECKPOINT_FORMAT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    preset: str | None = None,
    config: ModelConfig | None = None,
    trusted: bool = False,
) -> tuple[MaskedAutoencoderViT, dict[str, Any]]:
    """Rebuild the model stored in `path`; returns `(model, checkpoint_dict)`.

    The config comes from, in order: `config`, `preset`, the file's own `"config"`, or
    `infer_config` on the state dict (seed format). `trusted=True` allows pickled objects
    (`weights_only=False`); only use it for files you produced.

    Raises:
        CheckpointError: unreadable file, no `"model"` entry, or weights that do not fit.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trusted)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(path, f"cannot read checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(path, "not a model checkpoint: no 'model' entry")
    state_dict = _merge_split_qkv(_rename_published_projector(dict(ckpt["model"])))
    try:
        if config is None and preset is not None:
            config = preset_config(preset)
        if config is None and "config" in ckpt:
            config = ModelConfig(**ckpt["config"])
        if config is None:
            config = infer_config(state_dict)
    except (ModelConfigError, TypeError, KeyError) as err:
        raise CheckpointError(path, f"cannot determine the model config ({err})") from err
    model = MaskedAutoencoderViT(config)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:
        raise CheckpointError(path, f"weights do not fit {config}: {err}") from err
    absent = [key for key in missing if not key.startswith(_PROJECTOR)]
    if absent or unexpected:
        raise CheckpointError(path, f"weights do not fit {config}: missing {absent}, "
                                    f"unexpected {list(unexpected)}")
    if missing:
        log.warning("%s has no slice projector (pretraining-only); it starts from initialisation",
                    path)
    return model.to(map_location), ckpt


def infer_config(state_dict: dict[str, torch.Tensor]) -> ModelConfig:
    """Model config from the tensor shapes of a `MaskedAutoencoderViT` state dict.

    Widths, depths, patch sizes, channels, frames and (square) image size come from the shapes;
    the head counts, which shapes do not reveal, come from the registered preset with the same
    encoder and decoder widths and depths.

    Raises:
        ModelConfigError: a required tensor is missing or no preset matches the widths/depths.
    """
    try:
        proj = state_dict["patch_embed.proj.weight"]  # [D, C, pt, p, p]
        spatial = state_dict["pos_embed_spatial"]  # [1, h*w, D]
        temporal = state_dict["pos_embed_temporal"]  # [1, t, D]
        decoder_width = state_dict["decoder_embed.weight"].shape[0]
        fc1 = state_dict["blocks.0.mlp.fc1.weight"]
    except KeyError as err:
        raise ModelConfigError(f"state dict lacks {err}") from err
    dim, chans, t_patch, patch, _ = proj.shape
    side = round(spatial.shape[1] ** 0.5)
    if side * side != spatial.shape[1]:
        raise ModelConfigError(f"spatial table of {spatial.shape[1]} tokens is not square")
    sizes = {
        "embed_dim": dim,
        "depth": _count_blocks(state_dict, "blocks"),
        "decoder_embed_dim": decoder_width,
        "decoder_depth": _count_blocks(state_dict, "decoder_blocks"),
    }
    for preset in PRESETS.values():
        if all(getattr(preset, key) == value for key, value in sizes.items()):
            return dataclasses.replace(
                preset,
                img_size=side * patch,
                num_frames=temporal.shape[1] * t_patch,
                patch_size=patch,
                t_patch_size=t_patch,
                in_chans=chans,
                mlp_ratio=fc1.shape[0] / dim,
            )
    raise ModelConfigError(
        f"no preset has encoder/decoder sizes {sizes}; pass config= or preset= explicitly"
    )


def _count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _rename_published_projector(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the published slice projector's names onto `slice_projector.*` (see module doc)."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("decoder_block."):
            key = _PROJECTOR + "block." + key.removeprefix("decoder_block.")
        elif key == "decoder_prj_cls_token":
            key = _PROJECTOR + "cls_token"
        renamed[key] = value
    if _PROJECTOR + "block.norm1.weight" in renamed and _PROJECTOR + "norm.weight" not in renamed:
        for kind in ("weight", "bias"):
            if f"norm.{kind}" in renamed:
                renamed[f"{_PROJECTOR}norm.{kind}"] = renamed[f"norm.{kind}"].clone()
    return renamed


def _merge_split_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fuse `attn.q/k/v.{weight,bias}` (MAE-ST's video_vit layout) into timm's `attn.qkv`."""
    for key in [k for k in state_dict if k.endswith(".attn.q.weight")]:
        stem = key[: -len("q.weight")]
        for kind in ("weight", "bias"):
            parts = [f"{stem}{name}.{kind}" for name in ("q", "k", "v")]
            if all(p in state_dict for p in parts):
                state_dict[f"{stem}qkv.{kind}"] = torch.cat([state_dict.pop(p) for p in parts])
    return state_dict
