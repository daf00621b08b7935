"""Bring a file read at its own geometry (`SourceModel`) to the model being built.

Per model tensor: the file's tensor as it is (mapped), adapted (converted: tubelet kernel
inflated or merged, position tables resampled bicubically in space and linearly in time, pixel
head resampled in time, dtype cast), or nothing that fits (initialised, and the file tensors it
would have come from are reported as ignored with the reason).
"""

from __future__ import annotations

import math

import torch

from echofm.model.config import ModelConfig
from echofm.model.mae import ENCODER_PREFIXES, MaskedAutoencoderViT
from echofm.model.weights.errors import WeightsConversionError
from echofm.model.weights.report import TensorRecord
from echofm.model.weights.source import Entry, SourceModel
from echofm.model.weights.tables import (
    fit_prediction_frames,
    fit_tubelet,
    resample_spatial,
    resample_temporal,
)

_SPATIAL = ("pos_embed_spatial", "decoder_pos_embed_spatial")
_TEMPORAL = ("pos_embed_temporal", "decoder_pos_embed_temporal")
_PIXEL_HEAD = ("decoder_pred.weight", "decoder_pred.bias")


def part_of(name: str) -> str:
    """"encoder" (what `encode` uses), "projector" (the triplet loss's) or "decoder"."""
    if name.startswith(ENCODER_PREFIXES):
        return "encoder"
    return "projector" if name.startswith("slice_projector.") else "decoder"


def derive_cls(src: SourceModel) -> None:
    """Give a source without CLS (VideoMAE, MAE-ST without `cls_embed`) or without a CLS
    position one derived from its own weights, so no encoder tensor is left random:
    CLS = the embedding of an all-zero (mean-intensity) tubelet, i.e. the patch-embedding
    bias; CLS position = zeros, which is exactly what a source that adds none computes."""
    tensors = src.tensors
    bias = tensors.get("patch_embed.proj.bias")
    if "cls_token" not in tensors and bias is not None:
        tensors["cls_token"] = Entry(bias.tensor.reshape(1, 1, -1), bias.sources, (
            "derived: the source has no CLS token; it starts as the embedding of an all-zero "
            "(mean-intensity) tubelet, the patch-embedding bias",))
    spatial = tensors.get("pos_embed_spatial")
    if "pos_embed_class" not in tensors and spatial is not None:
        tensors["pos_embed_class"] = Entry(spatial.tensor.new_zeros(1, 1, spatial.tensor.shape[-1]),
                                           (), ("zeros: the source adds no position to its CLS",))


def _adapt(name: str, tensor: torch.Tensor, shape: torch.Size, target: ModelConfig,
           inflation: str, path: object) -> tuple[torch.Tensor, list[str]] | str:
    """`(tensor, steps)` fitting `shape`, or the reason it cannot."""
    steps: list[str] = []
    if name == "patch_embed.proj.weight" and tensor.dim() == 5 and tensor.shape[:2] == shape[:2] \
            and tensor.shape[3:] == shape[3:]:
        try:
            tensor, how = fit_tubelet(tensor, shape[2], inflation)
        except ValueError as err:
            raise WeightsConversionError(path, str(err)) from err
        steps += [how] if how else []
    elif name in _SPATIAL and tensor.shape[-1] == shape[-1] and tensor.shape[1] != shape[1]:
        before, after = math.isqrt(tensor.shape[1]), math.isqrt(shape[1])
        tensor = resample_spatial(tensor, after)
        steps.append(f"resampled bicubically from {before}x{before} to {after}x{after}")
    elif name in _TEMPORAL and tensor.shape[-1] == shape[-1] and tensor.shape[1] != shape[1]:
        steps.append(f"resampled linearly from {tensor.shape[1]} to {shape[1]} time slices")
        tensor = resample_temporal(tensor, shape[1])
    elif name in _PIXEL_HEAD and tensor.shape[1:] == shape[1:]:
        per_frame = target.patch_size ** 2 * target.in_chans
        if tensor.shape[0] % per_frame == 0 and tensor.shape[0] != shape[0]:
            frames = tensor.shape[0] // per_frame
            tensor = fit_prediction_frames(tensor, frames, target.t_patch_size)
            steps.append(f"the file predicts {frames} frame(s) per tubelet; each of "
                         f"{target.t_patch_size} takes the nearest in time")
    if tensor.shape != shape:
        return f"file shape {list(tensor.shape)} does not fit {list(shape)}"
    return tensor, steps


def fit_source(
    src: SourceModel, model: MaskedAutoencoderViT, *, inflation: str, path: object
) -> tuple[dict[str, torch.Tensor], list[TensorRecord], list[TensorRecord]]:
    """`(state, model_records, ignored_records)` for `model` from `src` (module doc).

    `state` holds every model tensor that comes from the file; the rest keep the model's
    initialisation. Every file tensor appears in a model record's sources or in the ignored ones.

    Raises:
        WeightsConversionError: a conversion the issue forbids (tubelets that are no multiples).
    """
    original = src.original
    state: dict[str, torch.Tensor] = {}
    records: list[TensorRecord] = []
    dropped: dict[str, str] = {}
    targets = model.state_dict()
    for name, target in targets.items():
        shape, part = tuple(target.shape), part_of(name)
        entry = src.tensors.get(name)
        if entry is None:
            records.append(TensorRecord(name, "initialised", shape, part, how="not in the file"))
            continue
        adapted = _adapt(name, entry.tensor, target.shape, model.config, inflation, path)
        if isinstance(adapted, str):
            records.append(TensorRecord(name, "initialised", shape, part, how=adapted))
            dropped.update(dict.fromkeys(entry.sources, f"{name}: {adapted}"))
            continue
        tensor, steps = adapted
        if tensor.dtype != target.dtype:
            steps.append(f"cast from {str(tensor.dtype).removeprefix('torch.')}")
        state[name] = tensor.to(target.dtype).contiguous()
        steps = [*entry.steps, *steps]
        records.append(TensorRecord(name, "converted" if steps else "mapped", shape, part,
                                    tuple(original.get(k, k) for k in entry.sources),
                                    "; ".join(steps)))
    for name, entry in src.tensors.items():
        if name not in targets:
            for key in entry.sources:
                dropped.setdefault(key, f"{name}: no such tensor in the model being built")
    fed = {key for record in records for key in record.sources}
    ignored = [
        TensorRecord(original.get(key, key), "ignored", tuple(src.shapes[key]), "file", how=reason)
        for key, reason in {**src.ignored, **src.unsupported, **dropped}.items()
        if original.get(key, key) not in fed
    ]
    return state, records, ignored

