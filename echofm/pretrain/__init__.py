"""Pretraining: MAE + temporal triplet on the shards, one process or many under torchrun, tracked in MLflow.

    from echofm.pretrain import PretrainConfig, pretrain
    result = pretrain(PretrainConfig(preset="tiny", steps=100), "OUTPUT/shards", "runs/tiny")

Names resolve lazily, so importing the package does not import torch, MLflow or every stage.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "PretrainConfig": "echofm.pretrain.config",
    "PretrainConfigError": "echofm.pretrain.config",
    "LaunchSpec": "echofm.pretrain.config",
    "PretrainOptions": "echofm.pretrain.config",
    "check_run": "echofm.pretrain.plan",
    "build_run": "echofm.pretrain.loop",
    "run_pretraining": "echofm.pretrain.loop",
    "pretrain": "echofm.pretrain.loop",
    "PretrainResult": "echofm.pretrain.loop",
    "NonFiniteLoss": "echofm.pretrain.train_loop",
    "launch_pretraining": "echofm.pretrain.launch",
    "TrainingJobFailed": "echofm.pretrain.launch",
    "TrainingDiverged": "echofm.pretrain.launch",
    "TrainingJobRejected": "echofm.pretrain.launch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echofm.pretrain' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
