"""Export a model as a folder anyone can load: `config.json` + `model.safetensors` + `README.md`.

    export_model(model, "exports/echofm-large", card=ModelCard(metrics={"ef_mae": 4.1}),
                 normalization={"mean": [0.1] * 3, "std": [0.2] * 3})
    load_pretrained("exports/echofm-large")          # the same model, bit for bit

`config.json`: `format` ("echofm-export"), `format_version`, `model_config` (every
`ModelConfig` field), `input` (tensor layout, channel order, normalisation), `weights` (file,
sha256, tensor count), `library` and the card's facts. `model.safetensors`: the whole state dict
(encoder, slice projector, decoder) under this model's parameter names; no pickle anywhere. Each
file is written to a temporary name and renamed, `config.json` last, so a reader never takes a
half-written folder for an export.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from echofm.model.mae import ENCODER_PREFIXES, MaskedAutoencoderViT
from echofm.model.weights.card import ModelCard, render_card
from echofm.model.weights.errors import WeightsError
from echofm.model.weights.files import (
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_WEIGHTS,
    is_export_folder,
    sha256_file,
)

EXPORT_FORMAT_VERSION = 1
EXPORT_CARD = "README.md"


class ExportError(WeightsError):
    """The export folder cannot be written (it holds other files, or the disk refuses)."""


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_model(
    model: MaskedAutoencoderViT,
    directory: str | os.PathLike[str],
    *,
    card: ModelCard | None = None,
    normalization: dict[str, Any] | None = None,
    library_version: str = "unknown",
) -> Path:
    """Write the export folder `directory` (module doc); returns it.

    `normalization`: the input standardisation of pretraining (`{"mean": [...], "std": [...]}`,
    intensities in [0, 1]). An existing export in `directory` is replaced; any other non-empty
    folder is refused.

    Raises:
        ExportError: `directory` holds files that are not an export.
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not is_export_folder(directory):
        raise ExportError(directory, "exists and is not an export folder; choose an empty one")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EXPORT_CONFIG).unlink(missing_ok=True)
    card = card or ModelCard()
    config = model.config
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = directory / EXPORT_WEIGHTS
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file(state, tmp, metadata={"format": EXPORT_FORMAT,
                                    "model_config": json.dumps(dataclasses.asdict(config))})
    os.replace(tmp, weights)
    inputs = {"layout": "[B, C, T, H, W]", "dtype": "float32", "channel_order": "RGB",
              "in_chans": config.in_chans, "num_frames": config.num_frames,
              "img_size": config.img_size, "normalization": normalization,
              "intensity_units": "[0, 1] before normalisation"}
    encoder_parameters = sum(p.numel() for _, p in model.encoder_named_parameters())
    _write_text(directory / EXPORT_CARD, render_card(card, config, inputs, encoder_parameters))
    description = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "architecture": "MaskedAutoencoderViT",
        "model_config": dataclasses.asdict(config),
        "input": inputs,
        "encoder_prefixes": list(ENCODER_PREFIXES),
        "weights": {"file": EXPORT_WEIGHTS, "sha256": sha256_file(weights), "tensors": len(state)},
        "library": {"name": "echofm-pipeline", "version": library_version},
        "card": dataclasses.asdict(card),
    }
    _write_text(directory / EXPORT_CONFIG, json.dumps(description, indent=2, default=str))
    return directory
