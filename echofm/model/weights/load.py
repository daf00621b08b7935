"""`load_pretrained`: any supported checkpoint -> a `MaskedAutoencoderViT`, with a load report.

    model = load_pretrained("vit_base_patch16_224.safetensors", preset="base")
    print(model.load_report.summary())

Steps: read the container (`files`), recognise the layout (`layouts`), read it into this
model's names at the file's geometry, give a CLS-less source a derived CLS (`fit.derive_cls`),
work out the config (`sizes`, or `preset` / keyword overrides), bring every tensor to that config
(`fit`), and refuse when an encoder tensor would stay random or a file tensor the source encoder
computes with would be dropped, unless `allow_partial=True`. Nothing touches the network except a
`models:/` / `runs:/` URI, which is downloaded from the MLflow server named by `tracking_uri`.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch

from echofm.model.config import ModelConfig, ModelConfigError
from echofm.model.mae import MaskedAutoencoderViT
from echofm.model.presets import UnknownPreset, preset_config
from echofm.model.weights.errors import (
    IncompleteWeights,
    UnknownWeightsFormat,
    UnreadableWeights,
    WeightsConversionError,
    WeightsError,
)
from echofm.model.weights.files import WeightsFile, read_weights
from echofm.model.weights.fit import derive_cls, fit_source
from echofm.model.weights.layouts import LAYOUTS, ReadOptions, detect_layout
from echofm.model.weights.report import LoadReport, compact_names
from echofm.model.weights.sizes import source_config
from echofm.model.weights.tables import INFLATIONS
from echofm.store import downloaded, is_registry_uri

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("auto", *LAYOUTS)
# Metadata too large or too internal for a report (the rest travels in `report.extra`).
_NOT_EXTRA = frozenset({"config", "safetensors_metadata"})


def load_pretrained(
    source: str | os.PathLike[str],
    *,
    format: str = "auto",  # noqa: A002 - the issue's interface
    preset: str | ModelConfig | None = None,
    allow_partial: bool = False,
    inflation: str = "average",
    bgr_to_rgb: bool | None = None,
    tracking_uri: str | None = None,
    map_location: str | torch.device = "cpu",
    **overrides: object,
) -> MaskedAutoencoderViT:
    """Build a model from any supported checkpoint; the report is `model.load_report` (logged).

    Args:
        source: a weights file (`.pth .pt .pyth .bin .ckpt .safetensors`), an export folder, a
            run directory (its newest checkpoint) or a `models:/`/`runs:/` URI.
        format: one of `FORMATS`; "auto" recognises the layout from the keys.
        preset: None builds the file's own layout (sizes from the shapes); a preset name or a
            `ModelConfig` converts the weights into that model. `overrides` (any config field,
            e.g. `num_frames=32`) apply on top of either.
        allow_partial: accept encoder tensors left at random initialisation and file tensors the
            model cannot represent (they are still reported).
        inflation: "average" or "centre", how a kernel is spread over a longer tubelet.
        bgr_to_rgb: reverse the patch embedding's input channels; None: the layout's default
            (True for the 2024 EchoFM release, trained on BGR frames; False otherwise).

    Raises:
        UnreadableWeights, UnknownWeightsFormat, WeightsConversionError, IncompleteWeights (all
        `WeightsError`, each naming the file).
    """
    text = str(source)
    file = _read_registered(text, tracking_uri) if is_registry_uri(text) else read_weights(source)
    model = build_from_file(file, format=format, preset=preset, allow_partial=allow_partial,
                            inflation=inflation, bgr_to_rgb=bgr_to_rgb, label=text, **overrides)
    return model.to(map_location)


def _read_registered(uri: str, tracking_uri: str | None) -> WeightsFile:
    """The weights of a `models:/` / `runs:/` URI, read into memory (the download is deleted)."""
    try:
        with downloaded(uri, tracking_uri) as local:
            return read_weights(local)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - mlflow raises several types for unknown names/servers
        raise UnreadableWeights(uri, f"cannot download ({err})") from err


def build_from_file(
    file: WeightsFile,
    *,
    format: str = "auto",  # noqa: A002
    preset: str | ModelConfig | None = None,
    allow_partial: bool = False,
    inflation: str = "average",
    bgr_to_rgb: bool | None = None,
    label: str | None = None,
    **overrides: object,
) -> MaskedAutoencoderViT:
    """`load_pretrained` on an already read container (same arguments; `label` names the source
    in the report)."""
    if format not in FORMATS:
        raise UnknownWeightsFormat(file.path, f"format {format!r} is not one of {FORMATS}")
    if inflation not in INFLATIONS:
        raise WeightsConversionError(file.path, f"inflation must be one of {INFLATIONS}")
    name = detect_layout(file) if format == "auto" else format
    try:
        src = LAYOUTS[name].read(file, ReadOptions(bgr_to_rgb=bgr_to_rgb))
    except KeyError as err:
        raise WeightsConversionError(file.path, f"not a complete {name} file: it has no tensor "
                                                f"{err}") from err
    derive_cls(src)
    try:
        own, assumed = source_config(src, file.path)
    except WeightsConversionError:
        if preset is None:
            raise
        own, assumed = None, {}  # with a preset, the file's own sizes only explain a refusal
    try:
        config = preset_config(own if preset is None else preset, **overrides)
    except (UnknownPreset, ModelConfigError) as err:
        raise WeightsConversionError(file.path, f"cannot build the requested model ({err})") from err
    model = MaskedAutoencoderViT(config)
    state, records, ignored = fit_source(src, model, inflation=inflation, path=file.path)
    report = LoadReport(
        source=label or str(file.path), path=str(file.path), format=name,
        config=dataclasses.asdict(config),
        model_tensors=tuple(records), ignored=tuple(ignored), assumed=assumed,
        allow_partial=allow_partial,
        extra={k: v for k, v in file.meta.items() if k not in _NOT_EXTRA},
    )
    sizes = ""
    if own is not None and (own.embed_dim, own.depth) != (config.embed_dim, config.depth):
        sizes = (f"the file holds a {own.embed_dim}-wide encoder of {own.depth} blocks, the "
                 f"requested model is {config.embed_dim}-wide with {config.depth} blocks; ")
    _refuse_incomplete(file, src.unsupported, report, sizes)
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    model.load_report = report
    log.info("%s", report.summary())
    return model


def _refuse_incomplete(
    file: WeightsFile, unsupported: dict[str, str], report: LoadReport, lead: str
) -> None:
    missing = report.missing_encoder
    dropped = [file.original.get(k, k) for k in unsupported]
    if report.allow_partial or not (missing or dropped):
        return
    parts = []
    if missing:
        by_reason: dict[str, list[str]] = {}
        for record in report.records("initialised", "encoder"):
            by_reason.setdefault(record.how, []).append(record.name)
        named = "; ".join(f"{compact_names(names)} ({how})" for how, names in by_reason.items())
        parts.append(f"encoder tensors would stay randomly initialised: {named}")
    if dropped:
        parts.append(f"file tensors of the source encoder have no place in this model: "
                     f"{compact_names(dropped)}")
    raise IncompleteWeights(file.path, f"{lead}{'; and '.join(parts)}; pass allow_partial=True to "
                                       f"load anyway", missing=missing, dropped=dropped)
