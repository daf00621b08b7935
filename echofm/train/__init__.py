"""Training: pretraining (MAE + triplet, DDP, MLflow) and downstream fine-tuning.

    from echofm.train import PretrainConfig, pretrain
    result = pretrain(PretrainConfig(preset="tiny", steps=100), "OUTPUT/shards", "runs/tiny")

Names resolve lazily, so importing the package does not import torch, MLflow or every stage.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "PretrainConfig": "echofm.train.config",
    "PretrainConfigError": "echofm.train.config",
    "pretrain": "echofm.train.pretrain",
    "PretrainResult": "echofm.train.pretrain",
    "NonFiniteLoss": "echofm.train.pretrain",
    "LaunchSpec": "echofm.train.launch",
    "launch_pretraining": "echofm.train.launch",
    "TrainingJobFailed": "echofm.train.launch",
    "TrainingDiverged": "echofm.train.launch",
    "finetune": "echofm.train.finetune",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echofm.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
