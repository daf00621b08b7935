"""Export an encoder as a folder anyone can load and publish: `echofm export MODEL DIR`.

MODEL is anything `echofm.model.load_pretrained` reads: a pretraining run directory, a checkpoint,
a `models:/` URI, an export folder, a published checkpoint. DIR receives `config.json`,
`model.safetensors` and a `README.md` model card (`echofm.model.weights.export_model`); the
MLflow pyfunc of a registered encoder is untouched. The card's facts come from where the model
came from, and never name a path:

- the checkpoint: input normalisation, optimiser steps, the pretraining options (preset, batch,
  learning rate, masking, precision, seed);
- the run directory's `result.json`: final loss, throughput;
- the MLflow run that recorded it (the checkpoint's `mlflow_run_id`, or a registered version's
  run) when the tracking store can be reached: manifest digest, code version, the last value of
  each metric;
- for an imported checkpoint, its load report (what was mapped and how it was converted).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from echofm.model import LoadReport, load_pretrained
from echofm.model.weights import ModelCard, export_model
from echofm.store import default_tracking_uri, is_registry_uri, package_version, parse_alias_uri, parse_model_uri

log = logging.getLogger(__name__)

RUN_RESULT = "result.json"  # echofm.pretrain.loop.RESULT_FILE; read, not imported (no torch run needed)
# Pretraining options worth a line on the card (the rest stays in the run's records).
TRAINING_KEYS: tuple[str, ...] = ("preset", "steps", "epochs", "batch_size", "accum_steps", "base_lr",
                                  "weight_decay", "mask_ratio", "precision", "seed")
RESULT_KEYS: tuple[str, ...] = ("final_loss", "clips_per_s", "data_wait_fraction")


def _registered_run(client: Any, source: str) -> tuple[str | None, dict[str, str]]:
    """(run id, version tags) of a `models:/NAME@ALIAS` or `models:/NAME/VERSION` source."""
    alias = parse_alias_uri(source)
    if alias is not None:
        version = client.get_model_version_by_alias(*alias)
    elif source.startswith("models:/"):
        version = client.get_model_version(*parse_model_uri(source))
    else:
        return None, {}
    return version.run_id, dict(version.tags)


def recorded_run(source: str, report: LoadReport, tracking_uri: str | None) -> tuple[dict[str, str], dict[str, float]]:
    """(tags, last metric values) of the MLflow run behind the model, or empty when there is no
    run or no reachable store (the card then says the facts were not recorded)."""
    from mlflow import MlflowClient

    run_id = report.extra.get("mlflow_run_id")
    if not run_id and not is_registry_uri(source):
        return {}, {}
    try:
        uri = tracking_uri or default_tracking_uri(None if is_registry_uri(source) else source, None)
        client = MlflowClient(uri)
        registered_run, tags = _registered_run(client, source)
        run_id = registered_run or run_id
        if not run_id:
            return tags, {}
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - an unreachable store (or mlflow's many errors) only thins the card
        log.warning("no MLflow record for the card of %s: %s", source, exc)
        return {}, {}
    return {**run.data.tags, **tags}, dict(run.data.metrics)


def model_card_for(source: str, report: LoadReport, tracking_uri: str | None = None) -> ModelCard:
    """The card's facts for a model loaded from `source` (module doc)."""
    extra = report.extra
    options = extra.get("pretrain_config") or {}
    tags, metrics = recorded_run(source, report, tracking_uri)
    result_file = Path(report.path).parent / RUN_RESULT
    if not is_registry_uri(source) and result_file.is_file():
        result = json.loads(result_file.read_text())
        metrics.update({key: result[key] for key in RESULT_KEYS if isinstance(result.get(key), (int, float))})
    training = {key: options[key] for key in TRAINING_KEYS if options.get(key) is not None}
    if extra.get("step") is not None:
        training["optimiser steps"] = extra["step"]
    if tags.get("code_version"):
        training["code version"] = tags["code_version"]
    data = {"manifest digest": tags["manifest_digest"]} if tags.get("manifest_digest") else {}
    imported = report.format != "echofm"
    preset = options.get("preset") or tags.get("preset")
    title = (f"{report.format} encoder, imported by echofm-pipeline" if imported
             else f"EchoFM encoder ({preset})" if preset else "EchoFM encoder")
    provenance = report.summary() if imported else (
        f"pretrained by echofm-pipeline; MLflow run {extra.get('mlflow_run_id')}" if extra.get("mlflow_run_id") else "")
    return ModelCard(title=title, data=data, training=training,
                     metrics={k: float(v) for k, v in metrics.items()}, provenance=provenance)


def export_encoder(
    source: str | os.PathLike[str], directory: str | os.PathLike[str], *, tracking_uri: str | None = None,
    format: str = "auto", allow_partial: bool = False,  # noqa: A002 - load_pretrained's name
) -> tuple[Path, ModelCard]:
    """Load `source`, write the export folder `directory`; returns it and the card written.

    Raises:
        WeightsError: the model cannot be loaded, or `directory` holds other files.
    """
    text = str(source)
    model = load_pretrained(text, format=format, allow_partial=allow_partial, tracking_uri=tracking_uri)
    report = model.load_report
    card = model_card_for(text, report, tracking_uri)
    out = export_model(model, directory, card=card, normalization=report.extra.get("normalization"),
                       library_version=package_version())
    return out, card
