"""Weights in and out: load published checkpoints and this project's, export a self-describing model.

    from echofm.model import load_pretrained
    model = load_pretrained("mae_pretrain_vit_large_k400.pth", preset="large")
    model.load_report.summary()          # what was mapped, converted (how), initialised, ignored

Formats (`layouts.LAYOUTS`): this project's checkpoints/run directories/exports/registered
models, the published EchoFM releases (2024, 2026), MAE-ST, VideoMAE/VideoMAEv2 and timm image
ViTs, in `.pth .pt .pyth .bin .ckpt .safetensors` files. See docs/weights.md.
"""

from echofm.model.weights.card import ModelCard
from echofm.model.weights.errors import (
    IncompleteWeights,
    UnknownWeightsFormat,
    UnreadableWeights,
    WeightsConversionError,
    WeightsError,
)
from echofm.model.weights.export import ExportError, export_model
from echofm.model.weights.layouts import LAYOUTS, detect_layout
from echofm.model.weights.load import FORMATS, build_from_file, load_pretrained
from echofm.model.weights.report import LoadReport, TensorRecord
from echofm.model.weights.tables import INFLATIONS

__all__ = [
    "ExportError",
    "FORMATS",
    "INFLATIONS",
    "IncompleteWeights",
    "LAYOUTS",
    "LoadReport",
    "ModelCard",
    "TensorRecord",
    "UnknownWeightsFormat",
    "UnreadableWeights",
    "WeightsConversionError",
    "WeightsError",
    "build_from_file",
    "detect_layout",
    "export_model",
    "load_pretrained",
]
