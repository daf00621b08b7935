"""MLflow tracking of pretraining (rank 0 only) and registration of the encoder.

Where records go: `MLFLOW_TRACKING_URI` when it is set (an `mlflow server` at scale), otherwise a
SQLite file `sqlite:///<RUN_DIR>/mlflow.db` with artifacts in `<RUN_DIR>/mlartifacts/`, so a run
on one machine needs no server; browse it with
`mlflow ui --backend-store-uri sqlite:///<RUN_DIR>/mlflow.db`.

What one run records: its parameters, per-step losses (reconstruction and triplet separately),
learning rate, throughput and data-wait fraction, system metrics (MLflow's sampler), the dataset
(manifest path and digest, `mlflow.log_input(..., context="pretraining")`), at each evaluation a
reconstruction figure (`figures/reconstruction-step-N.png`: original | masked | reconstructed)
and the representation-collapse monitor (`embedding_mean_cosine`), and at the end the encoder,
registered as `echofm-encoder` with alias `challenger`.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echofm.data.loader import ClipNormalization, file_digest, manifest_path_for
from echofm.registry.register import CHALLENGER, resolve_tracking_uri

log = logging.getLogger(__name__)

COLLAPSE_THRESHOLD = 0.95
RUN_ID_FILE = "mlflow_run_id"


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (`mlartifacts/` next to the file); a server decides its own."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


def package_version() -> str:
    """The installed `echofm-pipeline` distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("echofm-pipeline")
    except PackageNotFoundError:
        return "unknown"


def code_version() -> str:
    """`git describe` of the source tree when it is a checkout, else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        described = ""
    return described or package_version()


def dataset_digest(shards_dir: Path) -> str:
    """sha256 of the manifest, or of the shards' names and sizes when there is none."""
    manifest = manifest_path_for(shards_dir)
    if manifest.exists():
        return file_digest(manifest)
    digest = hashlib.sha256()
    for shard in sorted(shards_dir.glob("*.tar")):
        digest.update(f"{shard.name}:{shard.stat().st_size}\n".encode())
    return digest.hexdigest()


def dataset_record(shards_dir: Path, clips: dict[str, Path]) -> DatasetRecord:
    manifest = manifest_path_for(shards_dir)
    ids = sorted(clips)
    return DatasetRecord(
        source=(manifest if manifest.exists() else shards_dir).resolve().as_uri(),
        digest=dataset_digest(shards_dir),
        clip_ids=ids,
        shards=[clips[k].name for k in ids],
    )


# ---------------------------------------------------------------- evaluation helpers (pure)


def mean_pairwise_cosine(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity over distinct pairs of `embeddings` `[N, D]` (N >= 2).

    Near 1 means every clip maps to almost the same direction: representation collapse.
    """
    if embeddings.shape[0] < 2:
        raise ValueError("need at least two embeddings")
    unit = F.normalize(embeddings.float(), dim=-1)
    similarity = unit @ unit.T
    n = similarity.shape[0]
    off_diagonal = similarity.sum() - similarity.diagonal().sum()
    return float(off_diagonal / (n * (n - 1)))


def collapse_warning(mean_cosine: float, step: int) -> bool:
    """Log a warning when the embeddings look collapsed; returns whether it warned."""
    if mean_cosine > COLLAPSE_THRESHOLD:
        log.warning(
            "step %d: held-out clip embeddings have mean pairwise cosine %.3f > %.2f: the encoder "
            "may be collapsing to one representation",
            step,
            mean_cosine,
            COLLAPSE_THRESHOLD,
        )
        return True
    return False


def reconstruction_figure(
    model: nn.Module,
    video: torch.Tensor,
    pred: torch.Tensor,
    mask: torch.Tensor,
    normalization: ClipNormalization,
    *,
    max_clips: int = 2,
    max_frames: int = 8,
) -> bytes:
    """PNG bytes of a grid: per clip three rows (original | masked | reconstructed), frames across.

    video: normalised `[B, 3, T, H, W]`; pred: `[B, L, patch_dim]`; mask: `[B, L]` (1 = masked).
    The reconstruction shows the model's prediction in masked patches and the input elsewhere,
    as the MAE papers draw it. With `norm_pix_loss` the prediction is mapped back through each
    target patch's own mean and variance.
    """
    video = video[:max_clips].float().cpu()
    pred = pred[:max_clips].float().cpu()
    mask = mask[:max_clips].float().cpu()
    target = model.patchify(video)
    if getattr(model.config, "norm_pix_loss", False):
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    keep = (1.0 - mask).unsqueeze(-1)
    masked = model.unpatchify(target * keep)
    pasted = model.unpatchify(target * keep + pred * (1.0 - keep))
    rows = []
    frames = np.linspace(0, video.shape[2] - 1, min(max_frames, video.shape[2])).round().astype(int)
    for clip_index in range(video.shape[0]):
        for version, blank in ((video, None), (masked, keep), (pasted, None)):
            shown = normalization.invert(version[clip_index]).clamp(0, 1)
            image = (shown[0, frames] * 255).round().to(torch.uint8).numpy()  # [F, H, W], channel 0
            if blank is not None:
                # Masked-out areas drawn mid-grey, so they are not mistaken for black background.
                hidden = model.unpatchify(1.0 - keep.expand_as(target))[clip_index, 0, frames].numpy() > 0.5
                image = np.where(hidden, 128, image).astype(np.uint8)
            rows.append(_tile_row(image))
    grid = _stack_rows(rows)
    scale = max(1, 128 // video.shape[-1])
    if scale > 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", grid)
    if not ok:
        raise RuntimeError("OpenCV could not encode the reconstruction figure")
    return png.tobytes()


def _tile_row(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """uint8 `[F, H, W]` -> one image `[H, F*W + (F-1)*gap]` with white separators."""
    n, h, w = frames.shape
    row = np.full((h, n * w + (n - 1) * gap), 255, dtype=np.uint8)
    for i in range(n):
        row[:, i * (w + gap) : i * (w + gap) + w] = frames[i]
    return row


def _stack_rows(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    h, w = rows[0].shape
    grid = np.full((len(rows) * h + (len(rows) - 1) * gap, w), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        grid[i * (h + gap) : i * (h + gap) + h] = row
    return grid


# ---------------------------------------------------------------- the MLflow model


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


class PretrainTracker:
    """One MLflow run of a pretraining job. Create it on rank 0 only."""

    def __init__(self, run_dir: str | Path, *, experiment_name: str) -> None:
        import mlflow

        self._mlflow = mlflow
        self.run_dir = Path(run_dir)
        self.tracking_uri = resolve_tracking_uri(self.run_dir)
        mlflow.set_tracking_uri(self.tracking_uri)
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is None:
            experiment_id = mlflow.create_experiment(
                experiment_name, artifact_location=default_artifact_location(self.tracking_uri)
            )
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        self.run_id: str | None = None

    def start(self, *, params: dict[str, Any], dataset: DatasetRecord, resume: bool) -> str:
        """Start the run (or continue the one this run directory recorded, when resuming)."""
        import pandas as pd

        mlflow = self._mlflow
        id_file = self.run_dir / RUN_ID_FILE
        previous = id_file.read_text().strip() if resume and id_file.exists() else None
        run = mlflow.start_run(
            run_id=previous,
            experiment_id=None if previous else self.experiment_id,
            run_name=None if previous else self.run_dir.name,
            log_system_metrics=True,
        )
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id)
        if previous is None:
            mlflow.log_params({k: _param_value(v) for k, v in params.items()})
            frame = pd.DataFrame({"clip_id": dataset.clip_ids, "shard": dataset.shards})
            # MLflow stores digests in a 36-character column; the full sha256 goes in a tag.
            with warnings.catch_warnings():
                # MLflow registers its local-file source class twice and warns that a path is ambiguous.
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                source = mlflow.data.from_pandas(
                    frame, source=dataset.source, name="echofm-manifest", digest=dataset.digest[:32]
                )
            mlflow.log_input(source, context="pretraining", tags={"manifest_sha256": dataset.digest})
            mlflow.set_tags({"manifest_digest": dataset.digest, "code_version": code_version()})
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._mlflow.log_metrics(metrics, step=step)

    def log_figure(self, png: bytes, step: int) -> None:
        path = self.run_dir / "figures" / f"reconstruction-step-{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        self._mlflow.log_artifact(str(path), artifact_path="figures")

    def register_encoder(
        self, mae: nn.Module, *, checkpoint: Path, name: str, tags: dict[str, str]
    ) -> RegisteredEncoder:
        """Log `ClipEncoder(mae)` as this run's model, register it as `name`, alias `challenger`.

        `checkpoint` (the run's `encoder.pt`) travels inside the model's artifacts too, so the
        registered version also loads with `echofm.model.load_checkpoint`, without unpickling.
        """
        from mlflow import MlflowClient
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        mlflow = self._mlflow
        config = mae.config
        encoder = ClipEncoder(mae).cpu().eval()
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.in_chans, config.num_frames, config.img_size, config.img_size))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.embed_dim))]),
        )
        # Explicit requirements: inferring them would load the model again in a subprocess.
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"echofm-pipeline=={package_version()}"]
        info = mlflow.pytorch.log_model(
            encoder,
            name="encoder",
            registered_model_name=name,
            signature=signature,
            pip_requirements=requirements,
            serialization_format="pickle",
            extra_files=[str(checkpoint)],
        )
        version = str(info.registered_model_version)
        client = MlflowClient(tracking_uri=self.tracking_uri)
        client.set_registered_model_alias(name, CHALLENGER, version)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        return RegisteredEncoder(name=name, version=version, alias=CHALLENGER, model_uri=f"models:/{name}/{version}")

    def end(self, status: str = "FINISHED") -> None:
        self._mlflow.end_run(status=status)


def _param_value(value: Any) -> str:
    """MLflow params are strings of at most a few thousand characters."""
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."
