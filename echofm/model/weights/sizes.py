"""The model config a weights file implies (`load_pretrained(..., preset=None)`).

Sizes come from the tensor shapes (widths, depths, patch and tubelet, channels, grid); what shapes
cannot tell comes from the file's own config or training arguments when it has them, else from a
rule that the load report names under `assumed`: head counts (a preset of the same width, else 64
channels per head, 16 heads for ViT-H/g widths), the frame count of files without a time axis or
position table, and the decoder of files without one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from echofm.model.config import ModelConfig, ModelConfigError
from echofm.model.presets import PRESETS
from echofm.model.weights.errors import WeightsConversionError
from echofm.model.weights.source import SourceModel, block_indices

# Widths whose published head count is not width / 64 (ViT-H/14: 80, ViT-g/14: 88 per head).
_WIDE_HEADS = {1280: 16, 1408: 16}
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


def _encoder_heads(dim: int) -> tuple[int, str]:
    for name, preset in PRESETS.items():
        if preset.embed_dim == dim:
            return preset.num_heads, f"not in the file: the {name} preset's count for width {dim}"
    if dim in _WIDE_HEADS:
        return _WIDE_HEADS[dim], f"not in the file: the published count for width {dim}"
    if dim % 64 == 0:
        return dim // 64, "not in the file: 64 channels per head, the ViT standard"
    raise ModelConfigError(f"the head count of width {dim} is not in the file and no rule gives "
                           "it; pass preset=ModelConfig(...)")


def _decoder(src: SourceModel, dim: int, hints: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    tensors = src.tensors
    if "decoder_embed.weight" not in tensors:
        name, preset = next(((n, p) for n, p in PRESETS.items() if p.embed_dim == dim),
                            ("large", PRESETS["large"]))
        why = f"the file has no decoder: the {name} preset's"
        sizes = {"decoder_embed_dim": preset.decoder_embed_dim,
                 "decoder_depth": preset.decoder_depth,
                 "decoder_num_heads": preset.decoder_num_heads}
        return sizes, dict.fromkeys(sizes, why)
    width = tensors["decoder_embed.weight"].tensor.shape[0]
    sizes = {"decoder_embed_dim": width,
             "decoder_depth": len(block_indices(tensors, "decoder_blocks."))}
    assumed = {}
    if "decoder_num_heads" in hints:
        sizes["decoder_num_heads"] = hints["decoder_num_heads"]
    else:
        sizes["decoder_num_heads"] = max(width // src.decoder_head_dim, 1)
        assumed["decoder_num_heads"] = (f"not in the file: {src.decoder_head_dim} channels per "
                                        f"head, this family's decoder standard")
    return sizes, assumed


def source_config(src: SourceModel, path: Any) -> tuple[ModelConfig, dict[str, str]]:
    """`(config, assumed)`: the config the file describes and, per field a rule chose, its value
    and why (`{"num_heads": "16, not in the file: ..."}`).

    Raises:
        WeightsConversionError: the shapes do not make a valid config (or a head count is unknown).
    """
    tensors = src.tensors
    hints = {k: v for k, v in src.hints.items() if k in _CONFIG_FIELDS}
    try:
        if src.format == "echofm" and hints:
            return ModelConfig(**hints), {}
        dim, chans, t_patch, patch, _ = tensors["patch_embed.proj.weight"].tensor.shape
        side = math.isqrt(tensors["pos_embed_spatial"].tensor.shape[1])
        fields: dict[str, Any] = {
            "embed_dim": dim, "in_chans": chans, "t_patch_size": t_patch, "patch_size": patch,
            "img_size": side * patch,
            "num_frames": tensors["pos_embed_temporal"].tensor.shape[1] * t_patch,
            "depth": len(block_indices(tensors, "blocks.")),
            "mlp_ratio": tensors["blocks.0.mlp.fc1.weight"].tensor.shape[0] / dim,
        }
        assumed = {key: why for key, (_, why) in src.assumed.items()}
        fields.update({key: value for key, (value, _) in src.assumed.items()})
        fields.update({k: v for k, v in hints.items() if k not in fields})
        if "num_heads" not in fields:
            fields["num_heads"], assumed["num_heads"] = _encoder_heads(dim)
        decoder, decoder_assumed = _decoder(src, dim, hints)
        fields.update(decoder)
        assumed.update(decoder_assumed)
        config = ModelConfig(**fields)
        return config, {key: f"{getattr(config, key)!r}, {why}" for key, why in assumed.items()}
    except (KeyError, TypeError, ModelConfigError) as err:
        raise WeightsConversionError(path, f"cannot build a model config from the file ({err})") from err
