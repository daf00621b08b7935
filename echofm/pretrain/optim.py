"""AdamW with MAE's parameter groups, the linear lr scaling rule and a warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

REFERENCE_BATCH = 256  # lr = base_lr * effective_batch / 256 (MAE, Goyal et al.)


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """Peak learning rate for `effective_batch` clips per optimiser step (all ranks, accumulation)."""
    return base_lr * effective_batch / REFERENCE_BATCH


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and undecayed norms, biases, position tables and tokens.

    1-D parameters (LayerNorm scales and shifts, biases) and the names `model.no_weight_decay()`
    lists are not decayed: shrinking them towards zero regularises nothing useful.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in skip or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model)`, with fused kernels where `fused_adamw_ok` allows."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                             fused=fused_adamw_ok(model.parameters()) or None)


def fused_adamw_ok(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel can update `params`: floating point, all on CPU or all
    on CUDA. It updates every tensor in one pass instead of a dozen elementwise ops per
    parameter: at the `large` preset on 2 CPU cores, 0.3-0.4 s per step against 1-2.5 s for the
    default (measured with 345M parameters)."""
    devices = set()
    for param in params:
        if not param.is_floating_point():
            return False
        devices.add(param.device.type)
    return len(devices) == 1 and devices <= {"cpu", "cuda"}


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """lr multiplier at optimiser step `step` (0-based): linear from 1/warmup to 1 over
    `warmup_steps`, then a half cosine from 1 down to `min_ratio` at `total_steps`."""
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), total >= 1")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    """`LambdaLR` over `warmup_cosine`; call `scheduler.step()` once per optimiser step."""
    return LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, min_ratio))
