"""MLflow tracking of pretraining (rank 0 only) and registration of the encoder.

Where records go: `MLFLOW_TRACKING_URI` when it is set (an `mlflow server` at scale), otherwise a
SQLite file `sqlite:///<RUN_DIR>/mlflow.db` with artifacts in `<RUN_DIR>/mlartifacts/`, so a run
on one machine needs no server; browse it with
`mlflow ui --backend-store-uri sqlite:///<RUN_DIR>/mlflow.db`.

What one run records: its parameters, per-step losses (reconstruction and triplet separately),
learning rate, throughput and data-wait fraction, system metrics (MLflow's sampler), the dataset
(manifest path and digest, an input with context "pretraining"), at each evaluation the figures
and the representation report (`repr/*` metrics, `representation/report-step-N.json` table;
`echofm.representation`), and at the end the encoder, registered as `echofm-encoder` with alias
`challenger`, the last report in its model card and its `representation` tag.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from echofm.data import storage
from echofm.data.loader import file_digest, manifest_path_for
from echofm.pretrain.config import PretrainConfig
from echofm.pretrain.plan import RunPlan
from echofm.representation.gate import GATE_TAG, REPORT_TAG, check_representation
from echofm.representation.report import RepresentationReport
from echofm.store import (
    CHALLENGER,
    code_version,
    default_artifact_location,
    pip_requirements,
    resolve_tracking_uri,
    tracking_uri_scope,
    version_uri,
)

RUN_ID_FILE = "mlflow_run_id"
# MLflow's SQL store writes each logged batch in its own transaction: one call holding a step's
# seven metrics took ~11 ms of CPU on the 2-core VM, CPU the training threads lose. Held for up
# to FLUSH_SECONDS and sent together they cost ~1.3 ms per step (docs/benchmarks.md, "Metrics
# logging"); every step's values are still recorded.
FLUSH_SECONDS = 5.0
MAX_BATCH_METRICS = 1000  # MLflow's limit of metrics per `log_batch`


def dataset_digest(shards_dir: Path | str) -> str:
    """sha256 of the manifest, or of the shards' names and sizes when there is none."""
    manifest = manifest_path_for(shards_dir)
    if storage.exists(manifest):
        return file_digest(manifest)
    digest = hashlib.sha256()
    for shard in storage.glob(shards_dir, "*.tar"):
        digest.update(f"{storage.name(shard)}:{storage.size(shard)}\n".encode())
    return digest.hexdigest()


def dataset_record(shards_dir: Path | str, clips: dict[str, Path]) -> DatasetRecord:
    manifest = manifest_path_for(shards_dir)
    source = manifest if storage.exists(manifest) else storage.location(shards_dir)
    ids = sorted(clips)
    return DatasetRecord(
        source=str(source) if storage.is_remote(source) else Path(source).resolve().as_uri(),
        digest=dataset_digest(shards_dir),
        clip_ids=ids,
        shards=[storage.name(clips[k]) for k in ids],
    )



class ClipEncoder(nn.Module):
    """What the registry holds: the pretrained MAE, called as an encoder.

    `forward(video)` returns the clip embedding `[B, D]` (`forward_features`, no masking), so the
    MLflow pyfunc flavour predicts embeddings; `.mae` is the full model (`forward_tokens`,
    `encode`, the config) for downstream heads:

        encoder = mlflow.pytorch.load_model("models:/echofm-encoder@challenger")
        tokens = encoder.mae.forward_tokens(video)   # [B, 1 + L, D]
    """

    def __init__(self, mae: nn.Module) -> None:
        super().__init__()
        self.mae = mae

    @property
    def config(self) -> Any:
        return self.mae.config

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.mae.forward_features(video)

    def forward_tokens(self, video: torch.Tensor) -> torch.Tensor:
        return self.mae.forward_tokens(video)


@dataclass(frozen=True, kw_only=True)
class DatasetRecord:
    """The data a run trained on, as MLflow records it."""

    source: str  # manifest path (or the shards directory when there is no manifest)
    digest: str  # sha256 of the manifest file (or of the shard names and sizes)
    clip_ids: list[str]
    shards: list[str]


@dataclass(frozen=True)
class RegisteredEncoder:
    name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME/VERSION


def run_params(
    config: PretrainConfig, plan: RunPlan, model_config: Any, world_size: int, precision: str, n_clips: int
) -> dict[str, Any]:
    """What a run records as MLflow parameters: its config, plan and model, and what it resolved."""
    params = {k: v for k, v in config.to_dict().items() if k not in ("augment", "model_overrides")}
    params.update({f"plan.{k}": v for k, v in asdict(plan).items()})
    params.update({f"model.{k}": v for k, v in asdict(model_config).items()})
    params.update(
        {
            "world_size": world_size,
            "precision_used": precision,
            "train_clips": n_clips,
            "augment": json.dumps(asdict(config.augment)) if config.augment else "none",
        }
    )
    return params


class PretrainTracker:
    """One MLflow run of a pretraining job. Create it on rank 0 only.

    Every record goes through a client bound to `tracking_uri` (default: `resolve_tracking_uri`
    of the run directory); the process-wide MLflow URI is borrowed only while the encoder is
    logged (`tracking_uri_scope`), so other MLflow users in the process are not redirected.
    """

    def __init__(self, run_dir: str | Path, *, experiment_name: str, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri or resolve_tracking_uri(self.run_dir)
        self.client = MlflowClient(self.tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            experiment_id = self.client.create_experiment(
                experiment_name, artifact_location=default_artifact_location(self.tracking_uri)
            )
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        self.run_id: str | None = None
        self._system_metrics: Any = None
        self._pending: list[Any] = []  # metrics logged but not sent yet (mlflow.entities.Metric)
        self._flushed_at = time.monotonic()

    def start(self, *, params: dict[str, Any], dataset: DatasetRecord, resume: bool) -> str:
        """Start the run (or continue the one this run directory recorded, when resuming)."""
        import mlflow
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag, Param, RunTag
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        id_file = self.run_dir / RUN_ID_FILE
        previous = id_file.read_text().strip() if resume and id_file.exists() else None
        if previous is not None:
            self.client.update_run(previous, status="RUNNING")
            self.run_id = previous
        else:
            self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_dir.name).info.run_id
        id_file.write_text(self.run_id)
        self._system_metrics = SystemMetricsMonitor(
            self.run_id, resume_logging=previous is not None, tracking_uri=self.tracking_uri
        )
        self._system_metrics.start()
        if previous is None:
            self.client.log_batch(self.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
            frame = pd.DataFrame({"clip_id": dataset.clip_ids, "shard": dataset.shards})
            # MLflow stores digests in a 36-character column; the full sha256 goes in a tag.
            with warnings.catch_warnings():
                # MLflow registers its local-file source class twice and warns that a path is ambiguous.
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                source = mlflow.data.from_pandas(
                    frame, source=dataset.source, name="echofm-manifest", digest=dataset.digest[:32]
                )
            tags = [InputTag("manifest_sha256", dataset.digest), InputTag(MLFLOW_DATASET_CONTEXT, "pretraining")]
            self.client.log_inputs(self.run_id, [DatasetInput(source._to_mlflow_entity(), tags)])
            self.client.log_batch(self.run_id, tags=[RunTag("manifest_digest", dataset.digest),
                                                     RunTag("code_version", code_version())])
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record `metrics` at `step`, stamped now; sent with the next `flush`, which happens by
        itself once FLUSH_SECONDS have passed since the last one or a batch is full."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._pending) >= MAX_BATCH_METRICS or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send every metric logged so far. The loop flushes before writing each checkpoint, so
        once a checkpoint exists MLflow holds the steps a resumed run will not repeat."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH_METRICS], self._pending[MAX_BATCH_METRICS:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._flushed_at = time.monotonic()

    def log_figure(self, png: bytes, step: int) -> None:
        path = self.run_dir / "figures" / f"reconstruction-step-{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        self.client.log_artifact(self.run_id, str(path), artifact_path="figures")

    def log_report(self, report: RepresentationReport) -> None:
        """The report's measures as metrics at its step, and its rows as a small JSON table."""
        self.log_metrics(report.metrics(), report.step)
        path = self.run_dir / "representation" / f"report-step-{report.step:08d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.rows(), indent=1))
        self.client.log_artifact(self.run_id, str(path), artifact_path="representation")

    def register_encoder(
        self, mae: nn.Module, *, checkpoint: Path, name: str, tags: dict[str, str],
        report: RepresentationReport | None = None,
    ) -> RegisteredEncoder:
        """Log `ClipEncoder(mae)` as this run's model, register it as `name`, alias `challenger`.

        `report` (the last representation report) becomes the version's model card and its
        `representation` tag, which the promotion gate reads.

        `checkpoint` (the run's `encoder.pt`) travels inside the model's artifacts too, so the
        registered version also loads with `echofm.model.load_checkpoint`, without unpickling.
        """
        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        config = mae.config
        encoder = ClipEncoder(mae).cpu().eval()
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.in_chans, config.num_frames, config.img_size, config.img_size))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.embed_dim))]),
        )
        # Logging a model needs MLflow's active run, which lives under the process-wide URI.
        with tracking_uri_scope(self.tracking_uri), mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                encoder,
                name="encoder",
                registered_model_name=name,
                signature=signature,
                # Explicit requirements: inferring them would load the model again in a subprocess.
                pip_requirements=pip_requirements(),
                serialization_format="pickle",
                extra_files=[str(checkpoint)],
            )
        version = str(info.registered_model_version)
        self.client.set_registered_model_alias(name, CHALLENGER, version)
        gate = check_representation(report)
        tags = {**tags, REPORT_TAG: json.dumps(report.to_dict() if report else None), GATE_TAG: gate.reason}
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)
        self.client.update_model_version(name, version, description=encoder_model_card(name, config, report, gate.reason))
        return RegisteredEncoder(name=name, version=version, alias=CHALLENGER, model_uri=version_uri(name, version))

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.flush()  # a failed run keeps its metrics up to the failure
        if self._system_metrics is not None:
            self._system_metrics.finish()
            self._system_metrics = None
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)


def encoder_model_card(name: str, config: Any, report: RepresentationReport | None, gate_reason: str) -> str:
    """Markdown description of a registered encoder: what it is and its representation report."""
    size = f"{config.embed_dim}-wide, {config.depth} blocks, {config.num_frames} x {config.img_size}^2 input"
    if report is None:
        measured = "No representation report was recorded (the run had no evaluation)."
    else:
        labelled = ", ".join(f"{k} {v}" for k, v in report.n_labelled.items()) or "none"
        measured = (f"Measured at step {report.step} on {report.n_clips} clips (labelled: {labelled}), "
                    f"against a random encoder of the same config:\n\n{report.markdown()}")
    return f"""# {name}

EchoFM video encoder (spatiotemporal MAE, {config.triplet_mode} temporal triplet), {size}.
`forward(video)` gives the clip embedding `[B, {config.embed_dim}]` (mean of the patch tokens).

## Representation report
{measured}

Promotion gate: {gate_reason}.
"""


def _param_value(value: Any) -> str:
    """MLflow params are strings of at most a few thousand characters."""
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."
