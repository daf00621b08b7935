"""The pretrained encoder for downstream work: where it comes from and how it is optimised.

Sources (`load_encoder`): anything `echofm.model.load_pretrained` reads: this project's
checkpoints, pretraining run directories (their newest checkpoint), export folders and registered
model URIs such as `models:/echofm-encoder@champion`, and the published checkpoints (EchoFM,
MAE-ST, VideoMAE, timm ViTs; docs/weights.md), each with its load report. `random_like` builds
the same architecture with fresh weights for the random-initialisation baseline;
`baseline_encoder` builds any comparison arm (`echofm.downstream.baselines`).

Optimisation helpers: `layer_id` orders encoder parameters from input (0: tubelet embedding,
position tables, CLS) through the blocks (1..depth) to the final norm (depth + 1), which is what
layer-wise learning-rate decay and progressive unfreezing both need.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from echofm.downstream.baselines import Baseline
from echofm.errors import DownstreamError
from echofm.model import LoadReport, load_pretrained, random_init
from echofm.model.config import ModelConfig
from echofm.model.mae import MaskedAutoencoderViT
from echofm.store import is_registry_uri, parse_alias_uri

log = logging.getLogger(__name__)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


class EncoderSourceError(DownstreamError, ValueError):
    """The encoder source names nothing loadable (no such file or directory, unknown alias)."""


@dataclass(frozen=True)
class LoadedEncoder:
    """An encoder and where it came from: `source` as given, `checkpoint` the file loaded (None
    when downloaded from the registry), `parent_run_id` the MLflow run that produced it when
    known, `extra` the checkpoint's extra entries (e.g. the pretraining normalisation), `report`
    the load report (what was mapped, converted, initialised)."""

    model: MaskedAutoencoderViT
    source: str
    checkpoint: Path | None
    parent_run_id: str | None
    extra: dict
    report: LoadReport


def _alias_run_id(uri: str, tracking_uri: str | None) -> str | None:
    from mlflow import MlflowClient

    alias = parse_alias_uri(uri)
    if alias is None:
        return None
    try:
        return MlflowClient(tracking_uri).get_model_version_by_alias(*alias).run_id
    except Exception as exc:  # mlflow raises several types for unknown names/aliases/servers
        raise EncoderSourceError(f"cannot resolve {uri}: {exc}") from exc


def load_encoder(source: str | Path, *, tracking_uri: str | None = None) -> LoadedEncoder:
    """Load the encoder named by `source` (see module doc).

    Raises:
        EncoderSourceError: nothing at `source`, or an alias the registry does not know.
        WeightsError (`echofm.model`): the file cannot become an encoder (unreadable, unknown
            layout, a partial load); the message names the file and the tensors.
    """
    text = str(source)
    registered = is_registry_uri(text)
    if not registered and not Path(text).exists():
        raise EncoderSourceError(f"{source}: no such checkpoint, run directory, export or models:/ URI")
    model = load_pretrained(text, tracking_uri=tracking_uri)
    report = model.load_report
    extra = dict(report.extra)
    run_id = (_alias_run_id(text, tracking_uri) if registered else None) \
        or extra.get("mlflow_run_id") or extra.get("run_id")
    return LoadedEncoder(model=model, source=text, checkpoint=None if registered else Path(report.path),
                         parent_run_id=run_id, extra=extra, report=report)


def random_like(model: MaskedAutoencoderViT, seed: int) -> MaskedAutoencoderViT:
    """Same architecture and config as `model`, freshly initialised under `seed`."""
    return random_init(model.config, seed)


def baseline_encoder(
    baseline: Baseline, like: MaskedAutoencoderViT, *, seed: int, tracking_uri: str | None = None
) -> tuple[MaskedAutoencoderViT, LoadReport | None]:
    """The encoder of one comparison arm, for the input of `like` (the chosen encoder): random
    (`random_like`), or imported with `load_pretrained` at `like`'s frame count, image size and
    channels, keeping its own widths, depth and tubelet; with its load report when imported.

    Raises:
        WeightsError: the source cannot be read or converted (a partial load is refused).
    """
    if baseline.source is None:
        return random_like(like, seed), None
    config = like.config
    model = load_pretrained(baseline.source, num_frames=config.num_frames,
                            img_size=config.img_size, in_chans=config.in_chans,
                            tracking_uri=tracking_uri)
    return model, model.load_report


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
