"""The checkpoint layouts `load_pretrained` reads, and how each is recognised from its keys.

| format | what | recognised by |
|---|---|---|
| `echofm` | this project's checkpoints, run directories, export folders, registered models | a stored `config`, or `slice_projector.*` / `pos_embed_spatial` with a fused `qkv` |
| `echofm-2026` | published EchoFM, 2026 release (`{"model", "model_args"}`) | `prj_norm.*` or `model_args` |
| `echofm-2024` | published EchoFM, 2024 release, whole or encoder only | `decoder_block.*` / `decoder_prj_cls_token`, or split q/k/v with neither decoder nor head |
| `mae-st` | MAE-ST video ViTs (pretraining with decoder, or fine-tuned with head) | split q/k/v with `decoder_blocks.*` or `head.*` |
| `videomae` | VideoMAE / VideoMAEv2 (pretraining `encoder.*`/`decoder.*`, or fine-tuned) | 3D tubelet kernel, fused `qkv` with `q_bias`/`v_bias` or no separable tables |
| `timm-vit` | timm image ViTs (`vit_base_patch16_224` and friends) | 2D patch kernel and fused `qkv` |

Each reader puts the file's tensors under this model's names at the file's own geometry
(`source.SourceModel`); `fit.py` then brings them to the model being built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from echofm.model.mae import ENCODER_PREFIXES
from echofm.model.weights.errors import UnknownWeightsFormat, WeightsConversionError
from echofm.model.weights.files import WeightsFile
from echofm.model.weights.source import SourceBuilder, SourceModel
from echofm.model.weights.tables import additive_fit, sincos_1d_table

# Training-script arguments that name a model config field (EchoFM/MAE-ST `args`, `model_args`).
_ARG_FIELDS = {
    "num_frames": "num_frames", "t_patch_size": "t_patch_size", "norm_pix_loss": "norm_pix_loss",
    "mask_ratio": "mask_ratio", "triplet_weight": "triplet_weight",
    "triplet_margin": "triplet_margin", "num_heads": "num_heads",
    "decoder_num_heads": "decoder_num_heads",
}
# Head counts of the published model factories (`--model NAME`), which files do not store.
_FACTORY_HEADS = {"mae_vit_base_patch16": 12, "mae_vit_large_patch16": 16,
                  "mae_vit_huge_patch14": 16, "vit_base_patch16": 12, "vit_large_patch16": 16,
                  "vit_huge_patch14": 16}
_HEAD = "head."
_KERNEL = "patch_embed.proj.weight"


@dataclass(frozen=True)
class ReadOptions:
    """bgr_to_rgb: reverse the input channels of the patch embedding (None: the layout's
    default, which is True for the 2024 EchoFM release, trained on BGR frames)."""

    bgr_to_rgb: bool | None = None


@dataclass(frozen=True)
class WeightsLayout:
    name: str
    title: str
    read: Callable[[WeightsFile, ReadOptions], SourceModel]


def _classify(key: str) -> tuple[bool, str]:
    """Default classification of a key no reader took: (unsupported, reason)."""
    if key.startswith(_HEAD):
        return False, "classifier head: not part of the encoder"
    if key.startswith((*ENCODER_PREFIXES, "pos_embed", "reg_token", "fc_norm.")):
        return True, "part of the source encoder that this model has no place for"
    if key.startswith("norm_pre."):
        return True, "pre-norm of the source encoder: this model has none"
    return False, "no counterpart in this model"


def _training_args(meta: dict[str, Any]) -> dict[str, Any]:
    args = meta.get("model_args") or meta.get("args") or {}
    return args if isinstance(args, dict) else {}


def _hints_from_args(args: dict[str, Any]) -> dict[str, Any]:
    hints = {field: args[name] for name, field in _ARG_FIELDS.items() if name in args}
    heads = _FACTORY_HEADS.get(str(args.get("model", "")))
    if heads is not None:
        hints.setdefault("num_heads", heads)
    return hints


def _video_grid(
    file: WeightsFile, length: int | None, kernel: torch.Tensor, frames: int, img_size: int,
    assumed: dict[str, tuple[Any, str]], why: str,
) -> tuple[int, int, int]:
    """The token grid `(t, h, w)` of a joint (or absent) position table of `length` tokens,
    read with the source family's default `frames` (and `img_size` when that fails)."""
    t_patch, patch = kernel.shape[2], kernel.shape[-1]
    t = max(frames // t_patch, 1)
    if length is None:
        assumed["num_frames"] = (frames, why)
        assumed["img_size"] = (img_size, why)
        return t, img_size // patch, img_size // patch
    side = math.isqrt(length // t) if length % t == 0 else 0
    if side and side * side * t == length:
        assumed["num_frames"] = (frames, why)
        return t, side, side
    side = img_size // patch
    if length % (side * side) == 0:
        assumed["img_size"] = (img_size, why)
        return length // (side * side), side, side
    raise WeightsConversionError(file.path, f"cannot tell the token grid of a {length}-token "
                                            f"position table ({frames} frames or {img_size} px)")


def _split_joint(b: SourceBuilder, key: str, dst: str, grid: tuple[int, int, int],
                 cls_rows: int) -> None:
    """Joint table `key` (`[1, cls_rows + t*h*w, D]`) -> `{dst}spatial/temporal(/class)`."""
    table = b.take(key)
    if cls_rows:
        b.put(f"{dst}class", table[:, :1], (key,), "row 0 (CLS) of the joint table")
    spatial, temporal = additive_fit(table[:, cls_rows:], grid)
    how = "additive least-squares fit of the joint table (grid {}x{}x{})".format(*grid)
    b.put(f"{dst}spatial", spatial, (key,), how)
    b.put(f"{dst}temporal", temporal, (key,), how)


def _sincos(b: SourceBuilder, dst: str, dim: int, grid: tuple[int, int, int]) -> None:
    """VideoMAE's fixed table (not stored) regenerated for `grid`, split additively."""
    spatial, temporal = additive_fit(sincos_1d_table(math.prod(grid), dim), grid)
    how = ("fixed sin-cos table of the source (not stored in the file) regenerated for grid "
           "{}x{}x{}; additive least-squares fit".format(*grid))
    b.put(f"{dst}spatial", spatial, (), how)
    b.put(f"{dst}temporal", temporal, (), how)


def _separable(b: SourceBuilder, src: str, dst: str) -> bool:
    if not b.has(f"{src}spatial"):
        return False
    for part in ("spatial", "temporal", "class"):
        b.copy(f"{src}{part}", f"{dst}{part}")
    return True


def _patch_embed(b: SourceBuilder, flip_channels: bool) -> torch.Tensor:
    kernel = b.take(_KERNEL)
    steps = []
    if kernel.dim() == 4:
        kernel = kernel.unsqueeze(2)
        steps.append("2D image kernel read as a one-frame tubelet")
    if flip_channels:
        kernel = kernel.flip(1)
        steps.append("input channels reversed (BGR -> RGB)")
    b.put(_KERNEL, kernel, (_KERNEL,), *steps)
    b.copy("patch_embed.proj.bias", "patch_embed.proj.bias")
    return kernel


def _final_norm(b: SourceBuilder) -> None:
    """`norm`, or for mean-pooling models (no per-token norm) their `fc_norm`."""
    if not b.has("norm.weight") and b.has("fc_norm.weight"):
        for part in ("weight", "bias"):
            b.copy(f"fc_norm.{part}", f"norm.{part}",
                   "fc_norm (applied to the pooled features in the source) as the final norm")
    b.copy_parts("norm", "norm")


# ----------------------------------------------------------------- this project


def read_echofm(file: WeightsFile, options: ReadOptions) -> SourceModel:
    """This project's names: every tensor by name (blocks in any attention layout)."""
    b = SourceBuilder("echofm", file.state, file.original)
    b.blocks("blocks.", "blocks.")
    b.blocks("decoder_blocks.", "decoder_blocks.")
    if b.has("slice_projector.block.norm1.weight"):
        b.block("slice_projector.block.", "slice_projector.block.")
    for key in file.state:
        if key not in b.used:
            b.copy(key, key)
    config = file.meta.get("config")
    return b.finish(_classify, hints=dict(config) if isinstance(config, dict) else {})


# ----------------------------------------------------------------- MAE family


def _read_mae_family(file: WeightsFile, fmt: str, *, flip: bool, frames: int) -> SourceModel:
    """EchoFM (2024, 2026) and MAE-ST: split q/k/v, separable or joint tables, optional CLS."""
    b = SourceBuilder(fmt, file.state, file.original)
    args = _training_args(file.meta)
    hints = _hints_from_args(args)
    assumed: dict[str, tuple[Any, str]] = {}
    kernel = _patch_embed(b, flip)
    has_cls = b.copy("cls_token", "cls_token")
    grid = None
    if not _separable(b, "pos_embed_", "pos_embed_"):
        table = file.state.get("pos_embed")
        if table is None:
            raise WeightsConversionError(file.path, f"{fmt} file without position embeddings")
        stated = hints.get("num_frames")
        why = ("the joint position table's grid, with the frame count of the stored arguments"
               if isinstance(stated, int) else
               f"the joint position table's grid, read with {fmt}'s default {frames} frames")
        grid = _video_grid(file, table.shape[1] - int(has_cls), kernel,
                           stated if isinstance(stated, int) else frames, 224, assumed, why)
        _split_joint(b, "pos_embed", "pos_embed_", grid, int(has_cls))
    b.blocks("blocks.", "blocks.")
    b.copy_parts("norm", "norm")
    # The per-slice projector of the triplet loss (EchoFM only).
    if b.has("decoder_block.norm1.weight"):
        b.block("decoder_block.", "slice_projector.block.")
    b.copy("decoder_prj_cls_token", "slice_projector.cls_token")
    shared_norm = "slice_projector.block.norm1.weight" in b.tensors and b.has("norm.weight")
    if shared_norm and not b.has("prj_norm.weight"):
        for part in ("weight", "bias"):
            b.put(f"slice_projector.norm.{part}", file.state[f"norm.{part}"], (f"norm.{part}",),
                  "copy of the encoder's final norm, which the 2024 projector shared")
    b.copy_parts("prj_norm", "slice_projector.norm")
    # The reconstruction decoder.
    b.copy_parts("decoder_embed", "decoder_embed")
    b.copy("mask_token", "mask_token")
    if not _separable(b, "decoder_pos_embed_", "decoder_pos_embed_") and b.has("decoder_pos_embed"):
        if grid is None:
            t = b.tensors["pos_embed_temporal"].tensor.shape[1]
            side = math.isqrt(b.tensors["pos_embed_spatial"].tensor.shape[1])
            grid = (t, side, side)
        _split_joint(b, "decoder_pos_embed", "decoder_pos_embed_", grid, int(has_cls))
    b.blocks("decoder_blocks.", "decoder_blocks.")
    b.copy_parts("decoder_norm", "decoder_norm")
    b.copy_parts("decoder_pred", "decoder_pred")
    if b.has("decoder_cls_token"):
        b.ignore("decoder_cls_token", "the decoder's CLS row comes from the encoder's CLS here")
    return b.finish(_classify, hints=hints, assumed=assumed)


def read_echofm_2024(file: WeightsFile, options: ReadOptions) -> SourceModel:
    flip = True if options.bgr_to_rgb is None else options.bgr_to_rgb
    return _read_mae_family(file, "echofm-2024", flip=flip, frames=32)


def read_echofm_2026(file: WeightsFile, options: ReadOptions) -> SourceModel:
    return _read_mae_family(file, "echofm-2026", flip=bool(options.bgr_to_rgb), frames=32)


def read_mae_st(file: WeightsFile, options: ReadOptions) -> SourceModel:
    return _read_mae_family(file, "mae-st", flip=bool(options.bgr_to_rgb), frames=16)


# ----------------------------------------------------------------- VideoMAE / VideoMAEv2


def read_videomae(file: WeightsFile, options: ReadOptions) -> SourceModel:
    """VideoMAE/VideoMAEv2: no CLS, fixed sin-cos (absent) or learned joint table, q/v biases.

    Files carry no frame count or position table, so the grid comes from the stored training
    arguments (`num_frames`, `input_size`) when there are any, else 16 frames at 224 px.
    """
    b = SourceBuilder("videomae", file.state, file.original)
    assumed: dict[str, tuple[Any, str]] = {}
    kernel = _patch_embed(b, bool(options.bgr_to_rgb))
    args = _training_args(file.meta)
    frames, img_size = args.get("num_frames"), args.get("input_size")
    if isinstance(frames, int) and isinstance(img_size, int):
        why = "from the training arguments stored beside the weights"
    else:
        frames, img_size = 16, 224
        why = "VideoMAE files carry no frame count or image size: its default 16 x 224 x 224"
    table = file.state.get("pos_embed")
    grid = _video_grid(file, None if table is None else table.shape[1], kernel, frames, img_size,
                       assumed, why)
    if table is None:
        _sincos(b, "pos_embed_", kernel.shape[0], grid)
    else:
        _split_joint(b, "pos_embed", "pos_embed_", grid, 0)
    b.blocks("blocks.", "blocks.")
    _final_norm(b)
    if b.has("encoder_to_decoder.weight"):
        weight = b.take("encoder_to_decoder.weight")
        b.put("decoder_embed.weight", weight, ("encoder_to_decoder.weight",))
        b.put("decoder_embed.bias", weight.new_zeros(weight.shape[0]), (),
              "zeros: the source's encoder_to_decoder has no bias")
        b.copy("mask_token", "mask_token")
        _sincos(b, "decoder_pos_embed_", weight.shape[0], grid)
        b.blocks("decoder.blocks.", "decoder_blocks.")
        b.copy_parts("decoder.norm", "decoder_norm")
        b.copy_parts("decoder.head", "decoder_pred")
    return b.finish(_classify, assumed=assumed, decoder_head_dim=64)


# ----------------------------------------------------------------- timm image ViTs


def read_timm_vit(file: WeightsFile, options: ReadOptions) -> SourceModel:
    """timm ViT: 2D kernel, `pos_embed` with a CLS row unless `no_embed_class`, no time axis."""
    b = SourceBuilder("timm-vit", file.state, file.original)
    _patch_embed(b, bool(options.bgr_to_rgb))
    has_cls = b.copy("cls_token", "cls_token")
    table = b.take("pos_embed")
    rows = table.shape[1] - int(has_cls)
    cls_rows = int(has_cls) if math.isqrt(rows) ** 2 == rows else 0
    side = math.isqrt(table.shape[1] - cls_rows)
    if side * side != table.shape[1] - cls_rows:
        raise WeightsConversionError(file.path, f"pos_embed of {table.shape[1]} rows is neither a "
                                                "square grid nor one with a CLS row")
    if cls_rows:
        b.put("pos_embed_class", table[:, :1], ("pos_embed",), "row 0 (CLS) of pos_embed")
    b.put("pos_embed_spatial", table[:, cls_rows:], ("pos_embed",),
          "rows after the CLS row of pos_embed" if cls_rows else "")
    b.put("pos_embed_temporal", table.new_zeros(1, 1, table.shape[-1]), (),
          "zeros: an image model has no time axis (every time slice starts alike)")
    b.blocks("blocks.", "blocks.")
    _final_norm(b)
    why = "an image model has no frame count: this project's 32 frames in tubelets of 4"
    assumed = {"num_frames": (32, why), "t_patch_size": (4, why)}
    return b.finish(_classify, assumed=assumed)


LAYOUTS: dict[str, WeightsLayout] = {
    layout.name: layout for layout in (
        WeightsLayout("echofm", "this project's checkpoints, run directories and exports",
                      read_echofm),
        WeightsLayout("echofm-2026", "published EchoFM, 2026 release", read_echofm_2026),
        WeightsLayout("echofm-2024", "published EchoFM, 2024 release", read_echofm_2024),
        WeightsLayout("mae-st", "MAE-ST video ViT (Kinetics)", read_mae_st),
        WeightsLayout("videomae", "VideoMAE / VideoMAEv2 video ViT (Kinetics)", read_videomae),
        WeightsLayout("timm-vit", "timm image ViT (ImageNet)", read_timm_vit),
    )
}


def detect_layout(file: WeightsFile) -> str:
    """The `LAYOUTS` name of `file`, from its keys, shapes and metadata (table in module doc).

    Raises:
        UnknownWeightsFormat: the file matches none of them.
    """
    keys = file.state
    kernel = keys.get(_KERNEL)
    if file.container == "export" or isinstance(file.meta.get("config"), dict) or any(
            key.startswith("slice_projector.") for key in keys):
        return "echofm"
    if "prj_norm.weight" in keys or "model_args" in file.meta:
        return "echofm-2026"
    if "decoder_block.norm1.weight" in keys or "decoder_prj_cls_token" in keys:
        return "echofm-2024"
    if "blocks.0.attn.q.weight" in keys:
        with_parts = "head.weight" in keys or "decoder_blocks.0.norm1.weight" in keys
        return "mae-st" if with_parts else "echofm-2024"
    if kernel is not None and kernel.dim() == 5 and "blocks.0.attn.qkv.weight" in keys:
        return "echofm" if "pos_embed_spatial" in keys else "videomae"
    if kernel is not None and kernel.dim() == 4 and "blocks.0.attn.qkv.weight" in keys:
        return "timm-vit"
    sample = ", ".join(sorted(keys)[:6])
    raise UnknownWeightsFormat(file.path, f"the tensors ({sample}, ...) match no supported layout "
                                          f"({', '.join(LAYOUTS)})")
