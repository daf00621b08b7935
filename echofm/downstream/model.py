"""A fine-tuned downstream model: encoder + head + what the outputs mean, saved as one file.

The checkpoint (`save_downstream` / `load_downstream`) embeds the encoder config, the head config,
the fitted task (`TaskSpec`, see `echofm.downstream.objectives`) and the input spec, so the model
is rebuilt from the file alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echofm.downstream.encoder import encoder_from_config
from echofm.downstream.objectives import TaskSpec, TaskSpecError
from echofm.model.heads import HeadConfig, build_head
from echofm.preprocess.clips import InputSpec

DOWNSTREAM_FORMAT = "echofm-downstream/1"


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

    @property
    def task_specs(self) -> tuple[TaskSpec, ...]:
        """The tasks this model answers (one; a `MultiTaskModel` has several)."""
        return (self.task,)

    def task_outputs(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head outputs by task name, the form every fine-tuned model answers in."""
        return {self.task.task: self(video)}


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


def read_payload(path: str | Path, formats: tuple[str, ...], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The saved dictionary of a fine-tuned checkpoint whose format is one of `formats`."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        raise TaskSpecError(f"{path} is not a fine-tuned EchoFM checkpoint")
    return payload


def encoder_from_payload(payload: dict[str, Any]) -> nn.Module:
    encoder = encoder_from_config(payload["encoder_config"])
    encoder.load_state_dict(payload["encoder"])
    return encoder


def head_from_state(config: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    head = build_head(HeadConfig.from_dict(config))
    head.load_state_dict(state)
    return head


def downstream_from_payload(payload: dict[str, Any]) -> DownstreamCheckpoint:
    """The model and metadata of a payload written by `save_downstream`."""
    model = DownstreamModel(
        encoder_from_payload(payload), head_from_state(payload["head_config"], payload["head"]),
        TaskSpec.from_dict(payload["task"]), InputSpec.from_dict(payload["inputs"]),
    )
    return DownstreamCheckpoint(model=model.eval(), meta=payload["meta"])


def load_downstream(path: str | Path, *, map_location: str | torch.device = "cpu") -> DownstreamCheckpoint:
    """Rebuild a `DownstreamModel` (in eval mode) from a file written by `save_downstream`."""
    return downstream_from_payload(read_payload(path, (DOWNSTREAM_FORMAT,), map_location=map_location))
