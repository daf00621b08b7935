"""A multi-task model: one encoder, one head per task on the encoder's one pass, saved as one file.

`MultiTaskModel.encode` runs the encoder once per clip: all tokens `[B, 1 + L, D]` when any head
reads tokens (attentive pooling, segmentation's decoder on the patch tokens), else the clip
embedding `[B, D]`; a feature head on a token pass reads `clip_features(tokens)`, which is
exactly the encoder's `forward_features`. So each head sees what it would see alone, and
`head_model(task)` is that head as a single-task `DownstreamModel` sharing the same modules.

The checkpoint (`save_multitask`) embeds the encoder config, every head's config, every fitted
task (`TaskSpec`) and the input spec; `load_fine_tuned` reads it or a single-task checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echofm.downstream.model import (
    DOWNSTREAM_FORMAT,
    DownstreamModel,
    downstream_from_payload,
    encoder_from_payload,
    head_from_state,
    read_payload,
)
from echofm.downstream.objectives import TaskSpec, TaskSpecError, joined_columns
from echofm.model.mae import clip_features
from echofm.preprocess.clips import InputSpec

MULTITASK_FORMAT = "echofm-multitask/1"


class MultiTaskModel(nn.Module):
    """Encoder + one head per task: normalised video `[B, C, T, H, W]` -> raw outputs by task.

    heads and specs are keyed and ordered by task name. Raises TaskSpecError when the tasks'
    output column groups would clash (two groups with one column name).
    """

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], specs: dict[str, TaskSpec],
                 inputs: InputSpec) -> None:
        super().__init__()
        if list(heads) != list(specs) or len(specs) < 2:
            raise TaskSpecError(f"a multi-task model needs one head per task for two or more tasks, got {list(heads)}")
        joined_columns(tuple(specs.values()))  # refuses clashing output columns now, not at serving time
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.specs = dict(specs)
        self.inputs = inputs

    @property
    def task_specs(self) -> tuple[TaskSpec, ...]:
        return tuple(self.specs.values())

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.specs)

    @property
    def input_kind(self) -> str:
        """What one encoder pass yields: "tokens" when any head reads tokens, else "features"."""
        return "tokens" if any(head.input_kind == "tokens" for head in self.heads.values()) else "features"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        if self.input_kind == "tokens":
            return self.encoder.forward_tokens(video)
        return self.encoder.forward_features(video)

    def head_input(self, task: str, encoded: torch.Tensor) -> torch.Tensor:
        """What head `task` reads from the shared pass `encoded`."""
        if self.heads[task].input_kind == self.input_kind:
            return encoded
        return clip_features(encoded)

    def heads_forward(self, encoded: torch.Tensor, select: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every head on the shared pass `encoded` (`encode`'s output, or its cache).

        select: per task, a bool `[B]` of the clips to run its head on (training runs a head on
        its labelled clips only; a task none of them is labelled for has no output); a task
        absent from it runs on every clip.
        """
        out = {}
        for task in self.specs:
            x = self.head_input(task, encoded)
            if select is not None and task in select:
                if not bool(select[task].any()):
                    continue  # no clip of this batch is labelled for the task: its head does not run
                x = x[select[task]]
            out[task] = self.heads[task](x)
        return out

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads_forward(self.encode(video))

    def task_outputs(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        return self(video)

    def head_model(self, task: str) -> DownstreamModel:
        """Head `task` on this encoder as a single-task model (the same modules, not copies)."""
        if task not in self.specs:
            raise TaskSpecError(f"the model predicts {', '.join(self.specs)}, not {task!r}")
        return DownstreamModel(self.encoder, self.heads[task], self.specs[task], self.inputs)


@dataclass(frozen=True)
class FineTuned:
    """A loaded fine-tuned checkpoint of either kind and the metadata saved with it."""

    model: DownstreamModel | MultiTaskModel
    meta: dict[str, Any] = field(default_factory=dict)


def save_multitask(path: str | Path, model: MultiTaskModel, *, meta: dict[str, Any] | None = None) -> Path:
    """Write encoder + heads and every config needed to rebuild them to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MULTITASK_FORMAT,
        "encoder_config": asdict(model.encoder.config),
        "encoder": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
        "heads": {task: {"config": head.config.to_dict(), "state": {k: v.detach().cpu() for k, v in head.state_dict().items()}}
                  for task, head in model.heads.items()},
        "tasks": [spec.to_dict() for spec in model.task_specs],
        "inputs": model.inputs.to_dict(),
        "meta": dict(meta or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_fine_tuned(path: str | Path, *, map_location: str | torch.device = "cpu") -> FineTuned:
    """A single-task (`save_downstream`) or multi-task (`save_multitask`) checkpoint, in eval mode."""
    payload = read_payload(path, (DOWNSTREAM_FORMAT, MULTITASK_FORMAT), map_location=map_location)
    if payload["format"] == DOWNSTREAM_FORMAT:
        loaded = downstream_from_payload(payload)
        return FineTuned(model=loaded.model, meta=loaded.meta)
    specs = {spec.task: spec for spec in map(TaskSpec.from_dict, payload["tasks"])}
    heads = {task: head_from_state(saved["config"], saved["state"]) for task, saved in payload["heads"].items()}
    model = MultiTaskModel(encoder_from_payload(payload), heads, specs, InputSpec.from_dict(payload["inputs"]))
    return FineTuned(model=model.eval(), meta=payload["meta"])
