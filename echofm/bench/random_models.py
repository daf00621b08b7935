"""Untrained models at a preset, for the inference benchmarks (`echofm.bench.predict` and
`echofm.bench.predict_stream`): speed does not depend on the weights, so random ones serve.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Classes and target scale of the untrained models (the cost does not depend on them).
VIEW_CLASSES = ("A2C", "A4C", "PLAX", "PSAX")
EF_MEAN, EF_STD = 55.0, 10.0


def preset_config(preset: str, *, img_size: int | None = None, num_frames: int | None = None) -> Any:
    """The encoder config of `preset` with the given overrides."""
    from echofm.model.presets import preset_config as config_of

    overrides = {k: v for k, v in {"img_size": img_size, "num_frames": num_frames}.items() if v is not None}
    return config_of(preset, **overrides)


def random_task_spec(task: str) -> Any:
    """A `TaskSpec` of `task` as a fit would give it (fixed classes and EF scale)."""
    from echofm.downstream.objectives import TaskSpec
    from echofm.downstream.tasks import TASKS

    kind = TASKS[task].kind
    if kind == "multiclass":
        return TaskSpec(task=task, classes=VIEW_CLASSES)
    if kind == "regression":
        outputs = len(TASKS[task].outputs)
        return TaskSpec(task=task, target_mean=(EF_MEAN,) * outputs, target_std=(EF_STD,) * outputs)
    return TaskSpec(task=task)


def random_head(task: Any, encoder: Any) -> Any:
    """The head a default (frozen, linear) fine-tuning of `task` puts on `encoder`, untrained."""
    from echofm.downstream.config import FinetuneConfig
    from echofm.downstream.finetune import head_config
    from echofm.model.heads import build_head

    return build_head(head_config(FinetuneConfig(task=task.task), encoder, task))


def input_spec(config: Any) -> Any:
    from echofm.preprocess.clips import InputSpec

    return InputSpec(num_frames=config.num_frames, img_size=config.img_size, in_chans=config.in_chans)


def random_task_model(task: str, config: Any, seed: int) -> Any:
    """A single-task `DownstreamModel` of `task` on a fresh encoder of `config` (seeded)."""
    from echofm.downstream.model import DownstreamModel
    from echofm.model.presets import random_init

    encoder = random_init(config, seed)
    spec = random_task_spec(task)
    return DownstreamModel(encoder, random_head(spec, encoder), spec, input_spec(config)).eval()


def random_multitask(tasks: Sequence[str], config: Any, seed: int) -> Any:
    """A `MultiTaskModel` of `tasks` on one fresh encoder of `config` (seeded)."""
    from echofm.downstream.multitask.model import MultiTaskModel
    from echofm.model.presets import random_init

    encoder = random_init(config, seed)
    specs = {task: random_task_spec(task) for task in tasks}
    heads = {task: random_head(spec, encoder) for task, spec in specs.items()}
    return MultiTaskModel(encoder, heads, specs, input_spec(config)).eval()


def machine() -> str:
    """The CPU model and core count, and the load when the run started (the runs are CPU-bound)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores{load}"


