"""Which torch device a run uses: the one rule for pretraining, fine-tuning and benchmarks."""

from __future__ import annotations

import torch


def resolve_device(choice: str) -> torch.device:
    """`auto` is this process's GPU when there is one (its local GPU under torchrun), else the
    CPU; `cuda` is that GPU; anything else (`cpu`, `cuda:1`) is taken as torch spells it."""
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "auto":
        return torch.device("cpu")
    return torch.device(choice)
