"""What every registration of a fine-tuned checkpoint shares: the experiment, the evaluation-set
identity, the provenance tags and the registered version it returns.

Single-task (`echofm.registry.register`) and multi-task (`echofm.registry.multitask_register`)
registration both use these, so a multi-task model's task `ef` and the single-task `echofm-ef`
carry comparable evaluation tags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from echofm.store import code_version, default_artifact_location

EXPERIMENT = "echofm-finetune"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str  # models:/NAME/VERSION


def evaluation_set_digest(manifest_digest: str | None, labels_digest: str | None, split: dict, task: str, split_name: str = "test") -> str:
    """Identity of an evaluation set: same digest = same clips, labels and split."""
    payload = json.dumps([manifest_digest, labels_digest, split, task, split_name], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def experiment_id(client: Any, experiment: str, uri: str) -> str:
    """The id of `experiment`, created (artifacts beside a local store) when missing."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(experiment, artifact_location=default_artifact_location(uri))


def provenance_tags(summary: dict[str, Any], task: str) -> dict[str, str]:
    """Where a fine-tuned model came from (run and version tags); `task` names its task(s)."""
    return {
        "task": task,
        "strategy": summary["config"]["strategy"],
        "manifest_digest": str(summary["manifest_digest"]),
        "code_version": code_version(),
        "parent_run_id": str(summary["parent_run_id"]),
        "encoder_source": str(summary["encoder_source"]),
    }


def run_params(config: dict[str, Any]) -> dict[str, str]:
    """A run's config as MLflow params (the split's fields prefixed `split_`)."""
    params = {k: str(v) for k, v in config.items() if k != "split"}
    params.update({f"split_{k}": str(v) for k, v in config["split"].items()})
    return params


def log_arm(mlflow: Any, prefix: str, metrics: dict[str, dict[str, float]], history: list[dict[str, float]]) -> None:
    """One arm's metrics per split (`<prefix>/<split>_<metric>`) and per-epoch record."""
    for split, values in metrics.items():
        mlflow.log_metrics({f"{prefix}/{split}_{k}": v for k, v in values.items() if np.isfinite(v)})
    for epoch in history:
        mlflow.log_metrics({f"{prefix}/{k}": v for k, v in epoch.items() if k != "epoch" and np.isfinite(v)},
                           step=int(epoch["epoch"]))
