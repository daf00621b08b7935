"""The process group: started from torchrun's environment, used through a few helpers.

torchrun (`python -m torch.distributed.run`) sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT for every process it starts. A plain `python` process has none of them and runs as a
world of one without a process group, so the same training code serves one process, several
processes and several nodes. The backend is NCCL when the process has a GPU, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# Long enough for rank 0 to write a checkpoint or register a model while the others wait.
DEFAULT_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True, kw_only=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: no process group (a world of one)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, MLflow records and results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def init_distributed(timeout: timedelta = DEFAULT_TIMEOUT) -> DistContext:
    """Join the process group torchrun describes (idempotent); a world of one without torchrun.

    On GPU each process takes the device LOCAL_RANK before NCCL starts, so collectives run on
    the right card.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    if "RANK" not in os.environ:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timeout)
    return current_context()


def current_context() -> DistContext:
    """The context of an already joined group, or a world of one."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(
        rank=dist.get_rank(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=dist.get_world_size(),
        backend=dist.get_backend(),
    )


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The one place the model meets DDP: unchanged for a world of one.

    DDP broadcasts rank 0's parameters and buffers when it wraps, so every rank starts from the
    same weights whatever its own initialisation drew.
    """
    if not ctx.distributed:
        return model
    device_ids = [ctx.local_rank] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under a DDP wrapper (what checkpoints and evaluation use)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for a world of one)."""
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of `value` over ranks (for logging losses), `value` itself for a world of one."""
    if not ctx.distributed:
        return value
    reduced = value.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / ctx.world_size


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one."""
    if not ctx.distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
