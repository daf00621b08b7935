"""A fine-tuned downstream model: encoder + head + what the outputs mean, saved as one file.

`TaskSpec` says how raw head outputs become predictions and losses:
- ef: one output, EF standardised by the training split's mean/std (MSE loss); prediction in %.
- view: one logit per class name in `classes` (cross-entropy); prediction = class probabilities.
- reduced_ef: one logit for EF < 40 % (binary cross-entropy); prediction = probability.
- segmentation: one mask logit per pixel `[B, T, H, W]` (BCE + soft Dice on labelled frames);
  prediction = foreground probability.

The checkpoint (`save_downstream` / `load_downstream`) embeds the encoder config, the head config,
the task spec and the input spec, so the model is rebuilt from the file alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from echofm.model.heads import HeadConfig, build_head
from echofm.downstream import metrics
from echofm.preprocess.clips import InputSpec
from echofm.downstream.encoder import encoder_from_config
from echofm.downstream.labels import REDUCED_EF_THRESHOLD, TASKS

# The metric each task is judged by, and whether higher is better.
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {
    "ef": ("mae", False),
    "view": ("accuracy", True),
    "reduced_ef": ("auroc", True),
    "segmentation": ("dice", True),
}
DOWNSTREAM_FORMAT = "echofm-downstream/1"


class TaskSpecError(ValueError):
    """A task spec that does not describe a known task consistently."""


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """How head outputs map to predictions for one task (see module doc)."""

    task: str
    classes: tuple[str, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0
    threshold: float = REDUCED_EF_THRESHOLD

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise TaskSpecError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.task == "view" and len(self.classes) < 2:
            raise TaskSpecError("view classification needs at least two classes")
        if self.target_std <= 0:
            raise TaskSpecError("target_std must be positive")

    @property
    def out_dim(self) -> int:
        return len(self.classes) if self.task == "view" else 1

    @property
    def primary_metric(self) -> tuple[str, bool]:
        return PRIMARY_METRIC[self.task]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TaskSpec:
        data = dict(data)
        data["classes"] = tuple(data.get("classes", ()))
        return cls(**data)

    def loss(self, output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss of raw head outputs against targets in task units (see module doc)."""
        if self.task == "ef":
            scaled = (target.float() - self.target_mean) / self.target_std
            return F.mse_loss(output[:, 0], scaled)
        if self.task == "view":
            return F.cross_entropy(output, target.long())
        if self.task == "reduced_ef":
            return F.binary_cross_entropy_with_logits(output[:, 0], target.float())
        return segmentation_loss(output, target.float(), valid)

    def decode(self, output: torch.Tensor) -> np.ndarray:
        """Raw outputs to predictions: EF % `[B]`, class probabilities `[B, K]`, probability `[B]`,
        or mask probabilities `[B, T, H, W]`."""
        output = output.detach().float().cpu()
        if self.task == "ef":
            return (output[:, 0] * self.target_std + self.target_mean).numpy()
        if self.task == "view":
            return torch.softmax(output, dim=1).numpy()
        if self.task == "reduced_ef":
            return torch.sigmoid(output[:, 0]).numpy()
        return torch.sigmoid(output).numpy()

    def score(self, predictions: np.ndarray, targets: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
        """Metrics of decoded predictions against targets (EF %, class index, 0/1, masks)."""
        if self.task == "ef":
            return metrics.regression_metrics(predictions, targets)
        if self.task == "view":
            return metrics.classification_metrics(predictions.argmax(axis=1), targets.astype(int))
        if self.task == "reduced_ef":
            return metrics.detection_metrics(predictions, targets.astype(int))
        return metrics.segmentation_metrics((predictions >= 0.5).astype(np.uint8), targets, valid)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """BCE + soft Dice over labelled frames. logits, target `[B, T, H, W]`; valid bool `[B, T]`."""
    weight = torch.ones_like(target) if valid is None else valid.float()[..., None, None].expand_as(target)
    denom = weight.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / denom
    prob = torch.sigmoid(logits) * weight
    inter = (prob * target * weight).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + (target * weight).sum(dim=(1, 2, 3))
    soft_dice = (2 * inter + 1.0) / (total + 1.0)
    return bce + (1.0 - soft_dice).mean()


class DownstreamModel(nn.Module):
    """Encoder + head: normalised video `[B, C, T, H, W]` -> raw head outputs.

    `encode` gives what the head consumes (`[B, D]` features or `[B, 1 + L, D]` tokens), so a
    frozen encoder's outputs can be cached and fed to `head` directly.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, task: TaskSpec, inputs: InputSpec) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.task = task
        self.inputs = inputs

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        if self.head.input_kind == "features":
            return self.encoder.forward_features(video)
        return self.encoder.forward_tokens(video)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(video))


@dataclass(frozen=True)
class DownstreamCheckpoint:
    """A loaded downstream checkpoint: the model and the metadata saved with it."""

    model: DownstreamModel
    meta: dict[str, Any] = field(default_factory=dict)


def save_downstream(path: str | Path, model: DownstreamModel, *, meta: dict[str, Any] | None = None) -> Path:
    """Write encoder + head weights and every config needed to rebuild them to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": DOWNSTREAM_FORMAT,
        "encoder_config": asdict(model.encoder.config),
        "encoder": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
        "head_config": model.head.config.to_dict(),
        "head": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
        "task": model.task.to_dict(),
        "inputs": model.inputs.to_dict(),
        "meta": dict(meta or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_downstream(path: str | Path, *, map_location: str | torch.device = "cpu") -> DownstreamCheckpoint:
    """Rebuild a `DownstreamModel` (in eval mode) from a file written by `save_downstream`."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != DOWNSTREAM_FORMAT:
        raise TaskSpecError(f"{path} is not a fine-tuned EchoFM checkpoint")
    encoder = encoder_from_config(payload["encoder_config"])
    encoder.load_state_dict(payload["encoder"])
    head = build_head(HeadConfig.from_dict(payload["head_config"]))
    head.load_state_dict(payload["head"])
    model = DownstreamModel(
        encoder, head, TaskSpec.from_dict(payload["task"]), InputSpec.from_dict(payload["inputs"])
    )
    return DownstreamCheckpoint(model=model.eval(), meta=payload["meta"])
