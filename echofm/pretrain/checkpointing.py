"""Training checkpoints: everything a resumed run needs to continue exactly.

A checkpoint `RUN_DIR/checkpoints/step-00000100.pt` is an `echofm.model.save_checkpoint` file
(model config + weights, so `load_checkpoint` rebuilds the model from it alone) whose extra
entries hold the optimizer, scheduler and gradient-scaler states, the optimiser step, the
`PretrainConfig` and the RNG states of *every* rank (python, numpy, torch, CUDA), gathered to
rank 0. The data order needs no state of its own: the loader's stream is a function of
(seed, epoch, rank) and the trainer skips to the step (see `echofm.data.loader`).

Writes go to `*.tmp` and are renamed (inside `save_checkpoint`), and rotation deletes old files
only after the new one is complete, so the last good checkpoint is never lost or half-written.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from echofm.model import save_checkpoint
from echofm.pretrain.distributed import DistContext, unwrap_model
from echofm.errors import TrainingError

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"  # inside the run directory
_NAME = re.compile(r"^step-(\d{8})\.pt$")


class NoCheckpoint(TrainingError, FileNotFoundError):
    """`--resume` was asked for but the run directory holds no readable checkpoint."""

    def __init__(self, ckpt_dir: Path) -> None:
        super().__init__(f"no readable checkpoint in {ckpt_dir}")
        self.path = ckpt_dir


class ResumeMismatch(TrainingError, ValueError):
    """The checkpoint was written by a run that computes something else (config or world size)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class TrainingState:
    """What a loaded checkpoint says about the run: the optimiser step to continue from, and the
    stored `PretrainConfig` as a dict."""

    step: int
    config: dict[str, Any]
    path: Path


def weights_digest(model: nn.Module) -> str:
    """sha256 over the state dict's tensor bytes, in key order: equal iff the weights are bitwise equal."""
    digest = hashlib.sha256()
    for key, tensor in sorted(unwrap_model(model).state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step-{step:08d}.pt"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints `(step, path)`, oldest first (`*.tmp` files are never listed)."""
    found = []
    for path in Path(ckpt_dir).glob("step-*.pt"):
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states, as plain containers and tensors (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(ctx: DistContext) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (on every rank)."""
    mine = capture_rng_state()
    if not ctx.distributed:
        return [mine]
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, mine)
    return states


def save_training_checkpoint(
    ckpt_dir: Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: dict[str, Any],
    rng_states: list[dict[str, Any]],
    keep_last: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `step-<step>.pt` (rank 0 only), then delete all but the newest `keep_last`.

    `extra`: further plain entries (the run's `normalization`, its `mlflow_run_id`).
    """
    path = checkpoint_path(ckpt_dir, step)
    save_checkpoint(
        path,
        unwrap_model(model),
        extra={
            **(extra or {}),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "pretrain_config": config,
            "rng": rng_states,
        },
    )
    rotate_checkpoints(ckpt_dir, keep_last)
    return path


def rotate_checkpoints(ckpt_dir: Path, keep_last: int) -> list[Path]:
    """Delete complete checkpoints older than the newest `keep_last` (>= 1); returns those deleted."""
    found = list_checkpoints(ckpt_dir)
    doomed = [path for _, path in found[: max(0, len(found) - max(1, keep_last))]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


@dataclass(frozen=True)
class StoredCheckpoint:
    """What the newest readable checkpoint of a run says, as a resumed job would find it: its
    file, optimiser step, stored `PretrainConfig` (a dict) and the ranks that wrote it."""

    path: Path
    step: int
    config: dict[str, Any]
    world_size: int


def _readable(ckpt_dir: Path, *, mmap: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Complete checkpoints, newest first, loaded; one that cannot be read (a disk that filled
    up, say) is skipped for the one before."""
    for _, path in reversed(list_checkpoints(ckpt_dir)):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except (RuntimeError, EOFError, OSError) as err:
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        yield path, ckpt


def read_checkpoint(ckpt_dir: Path) -> StoredCheckpoint:
    """The newest readable checkpoint's description, its tensors memory-mapped rather than read
    (what the launcher checks before starting a resumed job). Raises NoCheckpoint."""
    for path, ckpt in _readable(ckpt_dir, mmap=True):
        return StoredCheckpoint(path=path, step=int(ckpt["step"]), config=ckpt["pretrain_config"],
                                world_size=len(ckpt["rng"]))
    raise NoCheckpoint(Path(ckpt_dir))


def load_training_checkpoint(
    ckpt_dir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ctx: DistContext,
) -> TrainingState:
    """Restore the newest readable checkpoint into the given objects, and this rank's RNG state.

    Raises:
        NoCheckpoint: nothing readable in `ckpt_dir`.
        ResumeMismatch: it was written by a job of another world size.
    """
    for path, ckpt in _readable(ckpt_dir):
        rng_states = ckpt["rng"]
        if len(rng_states) != ctx.world_size:
            raise ResumeMismatch(path, f"written by {len(rng_states)} ranks, resuming with {ctx.world_size}")
        unwrap_model(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(rng_states[ctx.rank])
        return TrainingState(step=int(ckpt["step"]), config=ckpt["pretrain_config"], path=path)
    raise NoCheckpoint(Path(ckpt_dir))
