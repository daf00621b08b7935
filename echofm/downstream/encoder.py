"""The pretrained encoder for downstream work: where it comes from and how it is optimised.

Sources (`load_encoder`): a checkpoint file, a pretraining run directory (its newest checkpoint),
or a registered model URI such as `models:/echofm-encoder@champion` (its artifacts are
downloaded and the checkpoint inside is loaded). `random_like` builds the same architecture with
fresh weights for the random-initialisation baseline.

Optimisation helpers: `layer_id` orders encoder parameters from input (0: tubelet embedding,
position tables, CLS) through the blocks (1..depth) to the final norm (depth + 1), which is what
layer-wise learning-rate decay and progressive unfreezing both need.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from echofm.model import load_checkpoint
from echofm.model.config import ModelConfig
from echofm.model.mae import MaskedAutoencoderViT
from echofm.errors import DownstreamError
from echofm.store import downloaded, is_registry_uri, parse_alias_uri

log = logging.getLogger(__name__)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# Preferred names inside a run directory or a registered model's artifacts, best first.
_CHECKPOINT_NAMES = ("encoder.pt", "final.pt", "checkpoint-final.pt", "last.pt", "checkpoint.pt")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


class EncoderSourceError(DownstreamError, ValueError):
    """The encoder source names no loadable checkpoint (missing file, empty run, bad URI)."""


@dataclass(frozen=True)
class LoadedEncoder:
    """An encoder and where it came from: `source` as given, `checkpoint` the file loaded (None
    when downloaded from the registry), `parent_run_id` the MLflow run that produced it when
    known, `extra` the checkpoint's extra entries (e.g. the pretraining normalisation)."""

    model: MaskedAutoencoderViT
    source: str
    checkpoint: Path | None
    parent_run_id: str | None
    extra: dict


def _newest_checkpoint(directory: Path) -> Path:
    candidates = [p for p in directory.rglob("*") if p.suffix in _CHECKPOINT_SUFFIXES and p.is_file()]
    if not candidates:
        raise EncoderSourceError(f"{directory}: no checkpoint ({', '.join(_CHECKPOINT_SUFFIXES)}) inside")
    for name in _CHECKPOINT_NAMES:
        named = [p for p in candidates if p.name == name]
        if named:
            return min(named, key=lambda p: len(p.parts))
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.name))


def _from_file(path: Path, source: str, parent_run_id: str | None) -> LoadedEncoder:
    model, ckpt = load_checkpoint(path)
    extra = {k: v for k, v in ckpt.items() if k not in ("model", "config", "optimizer")} if isinstance(ckpt, dict) else {}
    run_id = parent_run_id or extra.get("mlflow_run_id") or extra.get("run_id")
    return LoadedEncoder(model=model, source=source, checkpoint=path, parent_run_id=run_id, extra=extra)


def _from_registry(uri: str, tracking_uri: str | None) -> LoadedEncoder:
    from mlflow import MlflowClient

    # The checkpoint is read into memory, so the downloaded copy can go right away.
    try:
        with downloaded(uri, tracking_uri) as local:
            alias = parse_alias_uri(uri)
            parent = MlflowClient(tracking_uri).get_model_version_by_alias(*alias).run_id if alias else None
            loaded = _from_file(_newest_checkpoint(local), uri, parent)
    except EncoderSourceError:
        raise
    except Exception as exc:  # mlflow raises several types for unknown names/aliases/servers
        raise EncoderSourceError(f"cannot download {uri}: {exc}") from exc
    return replace(loaded, checkpoint=None)


def load_encoder(source: str | Path, *, tracking_uri: str | None = None) -> LoadedEncoder:
    """Load the encoder named by `source` (see module doc). Raises EncoderSourceError."""
    text = str(source)
    if is_registry_uri(text):
        return _from_registry(text, tracking_uri)
    path = Path(text)
    if path.is_dir():
        return _from_file(_newest_checkpoint(path), text, None)
    if path.is_file():
        return _from_file(path, text, None)
    raise EncoderSourceError(f"{source}: no such checkpoint, run directory or models:/ URI")


def random_like(model: MaskedAutoencoderViT, seed: int) -> MaskedAutoencoderViT:
    """Same architecture and config as `model`, freshly initialised under `seed`."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return MaskedAutoencoderViT(model.config)
    finally:
        torch.random.set_rng_state(state)


def encoder_from_config(config: dict) -> MaskedAutoencoderViT:
    """Rebuild an (untrained) encoder from `dataclasses.asdict(model.config)`."""
    return MaskedAutoencoderViT(ModelConfig(**config))


def layer_id(name: str, depth: int) -> int:
    """Position of an encoder parameter from input (0) to output (depth + 1)."""
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    if name.startswith("norm."):
        return depth + 1
    return 0


def layer_decay_groups(
    model: MaskedAutoencoderViT,
    head: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    layer_decay: float,
) -> list[dict]:
    """AdamW parameter groups with layer-wise lr decay (BEiT/MAE fine-tuning recipe).

    Encoder layer i gets `lr * layer_decay ** (depth + 1 - i)`; the head gets `lr`. Biases,
    norms and the position/CLS tables get no weight decay. Decoder parameters are left out.
    Each group records its `layer` so progressive unfreezing can address it.
    """
    depth = model.config.depth
    no_decay = model.no_weight_decay()
    groups: dict[tuple[int, bool], dict] = {}
    named = [(f"encoder.{n}", n, p) for n, p in model.encoder_named_parameters()]
    named += [(f"head.{n}", None, p) for n, p in head.named_parameters()]
    for full_name, enc_name, param in named:
        layer = depth + 1 if enc_name is None else layer_id(enc_name, depth)
        decay = not (param.ndim <= 1 or (enc_name is not None and enc_name in no_decay))
        key = (layer if enc_name is not None else depth + 2, decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer) if enc_name is not None else 1.0
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
                "layer": key[0],
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(full_name)
    return [groups[k] for k in sorted(groups)]


def set_trainable_layers(model: MaskedAutoencoderViT, n_blocks: int) -> None:
    """Progressive unfreezing: only the final norm and the top `n_blocks` blocks train.

    0 freezes the whole encoder; more than `depth` also unfreezes the tubelet embedding, the
    position tables and CLS (layer 0).
    """
    depth = model.config.depth
    lowest = depth + 2 if n_blocks <= 0 else depth + 1 - n_blocks
    for name, param in model.encoder_named_parameters():
        param.requires_grad_(layer_id(name, depth) >= lowest)


def parameter_count(module: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
