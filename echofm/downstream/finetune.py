"""Fine-tune the pretrained encoder on a downstream task and compare it with its baselines.

Strategies:
- `linear`, `mlp`, `attentive`: the encoder stays frozen and only that head trains. Encoder
  outputs (clip features, or all tokens for attentive pooling and segmentation) are computed once
  per clip and cached, so an epoch costs only the head.
- `full`: encoder and head train together, with layer-wise learning-rate decay.
- `progressive`: the head trains alone first; every `unfreeze_every` epochs the next block from
  the top (with the final norm at the first step) joins, with the same layer-wise decay.
Segmentation always uses the segmentation decoder as its head; the frozen strategies all mean
"train the decoder on a frozen encoder" there.

Every run trains the same head, with the same strategy, seed, split and epochs, on each
initialisation of `config.compare` (`echofm.downstream.baselines`: by default a randomly
initialised encoder of the same architecture; also imported ImageNet, Kinetics or published
EchoFM weights) and reports them side by side (`FinetuneResult.pretrained`, `.baselines`,
`summary()["comparison"]`): the gaps are what this pretraining bought.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from echofm.data import storage
from echofm.data.loader import manifest_path_for
from echofm.device import resolve_device
from echofm.model.heads import HeadConfig, build_head
from echofm.preprocess.clips import InputSpec, to_model_input
from echofm.downstream.dataset import TaskData, build_task_data
from echofm.downstream.model import DownstreamModel, save_downstream
from echofm.downstream.baselines import PRETRAINED_ARM, RANDOM, comparison_table
from echofm.downstream.encoder import (
    LoadedEncoder,
    baseline_encoder,
    layer_decay_groups,
    load_encoder,
    parameter_count,
    set_trainable_layers,
)
from echofm.downstream.config import FinetuneConfig, FinetuneConfigError, FinetuneOptions
from echofm.downstream.objectives import OBJECTIVES, TaskSpec
from echofm.downstream.tasks import TASKS
from echofm.pretrain.optim import fused_adamw_ok

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "model.pt"
RESULT_NAME = "result.json"


@dataclass
class ArmResult:
    """One arm of the comparison: metrics per split ("val", "test"), loss per epoch; for an
    imported encoder, `source` (what its `--compare` entry points at) and `load` (layout, tensor
    counts and the load report's summary)."""

    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    trainable_parameters: int
    source: str | None = None
    load: dict[str, Any] | None = None


@dataclass
class FinetuneResult:
    """What a run produced. `model` is the fine-tuned pretrained-encoder model (in memory);
    `checkpoint` its file when an output directory was given."""

    config: FinetuneConfig
    task: TaskSpec
    inputs: InputSpec
    pretrained: ArmResult
    baselines: dict[str, ArmResult]
    counts: dict[str, dict[str, int]]
    encoder_source: str
    parent_run_id: str | None
    manifest_digest: str | None
    model: DownstreamModel
    checkpoint: Path | None = None
    data_notes: dict[str, Any] = field(default_factory=dict)

    @property
    def test_metrics(self) -> dict[str, float]:
        return self.pretrained.metrics.get("test", {})

    @property
    def random_init(self) -> ArmResult | None:
        return self.baselines.get(RANDOM)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the run (no weights); `comparison` holds every arm's metrics side
        by side, `random_init` the random arm again (the key earlier records used)."""
        arms = {PRETRAINED_ARM: self.pretrained, **self.baselines}
        return {
            "config": self.config.to_dict(),
            "task": self.task.to_dict(),
            "inputs": self.inputs.to_dict(),
            "pretrained": asdict(self.pretrained),
            "random_init": asdict(self.random_init) if self.random_init else None,
            "baselines": {name: asdict(arm) for name, arm in self.baselines.items()},
            "comparison": {split: comparison_table({n: a.metrics for n, a in arms.items()}, split)
                           for split in ("val", "test")},
            "counts": self.counts,
            "data": self.data_notes,
            "encoder_source": self.encoder_source,
            "parent_run_id": self.parent_run_id,
            "manifest_digest": self.manifest_digest,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
        }


def fit_task_spec(task: str, train_targets: np.ndarray, classes: tuple[str, ...]) -> TaskSpec:
    """The task as a run fits it: its classes, and what its objective learns from the training targets."""
    definition = TASKS[task]
    fitted = OBJECTIVES[definition.kind].fit(definition, train_targets)
    return TaskSpec(task=task, classes=classes, **fitted)


def head_config(config: FinetuneConfig, encoder: Any, task: TaskSpec) -> HeadConfig:
    cfg = encoder.config
    return HeadConfig(
        kind=config.head_kind,
        embed_dim=cfg.embed_dim,
        out_dim=task.out_dim,
        hidden_dim=config.hidden_dim,
        num_heads=max(h for h in (1, 2, 4, 8) if cfg.embed_dim % h == 0),
        dropout=config.dropout,
        grid=tuple(cfg.grid),
        num_frames=cfg.num_frames,
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
    )


class TaskBatches:
    """Model inputs, targets and valid-frame flags for index batches of a TaskData.

    With a cache (frozen encoder) the input is the cached encoder output; otherwise the uint8
    clips are normalised on the fly.
    """

    def __init__(self, data: TaskData, inputs: InputSpec, cache: torch.Tensor | None, device: torch.device) -> None:
        self.data, self.inputs, self.cache, self.device = data, inputs, cache, device
        self.targets = torch.from_numpy(np.array(data.targets))
        self.valid = torch.from_numpy(data.valid) if data.valid is not None else None

    def get(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.cache is not None:
            x = self.cache[idx]
        else:
            x = to_model_input(self.data.clips[idx], self.inputs)
        valid = self.valid[idx].to(self.device) if self.valid is not None else None
        return x.to(self.device), self.targets[idx].to(self.device), valid


@torch.no_grad()
def encode_clips(model: DownstreamModel, clips: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """Encoder outputs for every clip (what the head consumes), on CPU: `[N, D]` or `[N, 1 + L, D]`."""
    model.encoder.eval()
    out = []
    for start in range(0, len(clips), batch_size):
        video = to_model_input(clips[start : start + batch_size], model.inputs).to(device)
        out.append(model.encode(video).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def evaluate_split(forward: Any, batches: TaskBatches, idx: np.ndarray, task: TaskSpec, batch_size: int) -> tuple[float, dict[str, float]]:
    """Mean loss and metrics on `idx` (empty dict and NaN loss for an empty split)."""
    if len(idx) == 0:
        return float("nan"), {}
    losses, preds = [], []
    for start in range(0, len(idx), batch_size):
        x, y, valid = batches.get(idx[start : start + batch_size])
        output = forward(x)
        losses.append(task.loss(output, y, valid).item() * len(x))
        preds.append(task.decode(output))
    data = batches.data
    valid_all = data.valid[idx] if data.valid is not None else None
    return sum(losses) / len(idx), task.score(np.concatenate(preds), data.targets[idx], valid_all)


def arm_parameter_groups(config: FinetuneOptions, encoder: Any, head: torch.nn.Module) -> list[dict]:
    """AdamW groups of one arm: `head`'s parameters alone on a frozen encoder, else the encoder's
    and the head's with layer-wise decay (`layer_decay_groups`)."""
    if config.frozen:
        return [{"params": list(head.parameters()), "lr": config.base_lr, "lr_scale": 1.0,
                 "weight_decay": config.weight_decay}]
    return layer_decay_groups(encoder, head, lr=config.base_lr, weight_decay=config.weight_decay,
                              layer_decay=config.layer_decay)


def make_optimizer(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    fused = fused_adamw_ok(p for group in groups for p in group["params"]) or None
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def fit_epochs(
    label: str,
    *,
    config: FinetuneOptions,
    encoder: Any,
    trainable: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_idx: np.ndarray,
    step: Callable[[np.ndarray], float],
    validate: Callable[[], tuple[float, dict[str, float]]],
    has_val: bool,
) -> tuple[list[dict[str, float]], int]:
    """The epochs of one arm, single-task or joint: cosine learning rate, progressive
    unfreezing, the training clips in a seeded order, and the epoch of lowest validation loss
    kept in `trainable` (the last one when there is no val set).

    step: one optimiser step on the clip indices given, returning its loss times their number.
    validate: the validation loss and the epoch's record entries. Returns the per-epoch
    history and the kept epoch.
    """
    if len(train_idx) == 0:
        raise FinetuneConfigError("the split left no training clip; add patients or lower the fractions")
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, float]] = []
    best_state, best_loss, best_epoch = None, math.inf, 0
    for epoch in range(config.epochs):
        if config.strategy == "progressive":
            set_trainable_layers(encoder, epoch // config.unfreeze_every)
        scale = 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
        for group in optimizer.param_groups:
            group["lr"] = config.base_lr * group["lr_scale"] * scale
        trainable.train()
        if config.frozen:
            encoder.eval()
        order = rng.permutation(train_idx)
        total = sum(step(order[start : start + config.batch_size]) for start in range(0, len(order), config.batch_size))
        trainable.eval()
        val_loss, entries = validate()
        record = {"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss, **entries}
        history.append(record)
        log.info("%s epoch %d: train loss %.4f, val loss %.4f", label, epoch, record["train_loss"], val_loss)
        if not has_val or val_loss <= best_loss:
            best_loss, best_epoch = (val_loss if has_val else math.inf), epoch
            best_state = copy.deepcopy(trainable.state_dict())
    trainable.load_state_dict(best_state)
    trainable.eval()
    return history, best_epoch


def train_arm(
    name: str,
    encoder: Any,
    data: TaskData,
    task: TaskSpec,
    inputs: InputSpec,
    config: FinetuneConfig,
    device: torch.device,
    cache: torch.Tensor | None = None,
) -> tuple[DownstreamModel, ArmResult]:
    """One arm: a fresh head (and, unless frozen, the encoder) trained on `data`'s training
    split (`fit_epochs`). cache: a frozen encoder's outputs for `data.clips`, when the caller
    has them (computed here otherwise)."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    head = build_head(head_config(config, encoder, task))
    model = DownstreamModel(encoder, head, task, inputs).to(device)
    if config.frozen:
        model.encoder.requires_grad_(False)
        if cache is None:
            cache = encode_clips(model, data.clips, config.batch_size, device)
        trainable: torch.nn.Module = head
        forward = head
    else:
        cache = None
        trainable, forward = model, model
    optimizer = make_optimizer(arm_parameter_groups(config, encoder, head), config.base_lr)
    batches = TaskBatches(data, inputs, cache, device)
    val_idx = data.indices("val")

    def step(idx: np.ndarray) -> float:
        x, y, valid = batches.get(idx)
        loss = task.loss(forward(x), y, valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item() * len(x)

    def validate() -> tuple[float, dict[str, float]]:
        val_loss, val_metrics = evaluate_split(forward, batches, val_idx, task, config.batch_size)
        return val_loss, {f"val_{k}": v for k, v in val_metrics.items()}

    history, best_epoch = fit_epochs(f"{name} {config.task}", config=config, encoder=encoder, trainable=trainable,
                                     optimizer=optimizer, train_idx=data.indices("train"), step=step,
                                     validate=validate, has_val=len(val_idx) > 0)
    metrics = {}
    for split in ("val", "test"):
        _, scores = evaluate_split(forward, batches, data.indices(split), task, config.batch_size)
        metrics[split] = scores
    model.requires_grad_(True)
    result = ArmResult(metrics=metrics, history=history, best_epoch=best_epoch,
                       seconds=time.perf_counter() - started,
                       trainable_parameters=parameter_count(trainable))
    return model.cpu().eval(), result


def input_spec_for(loaded: LoadedEncoder, shards: Path, manifest: str | Path | pd.DataFrame | None) -> InputSpec:
    """The encoder's input contract, with the normalisation its pretraining used.

    Taken from the checkpoint's `normalization` entry when present, else recomputed the way the
    pretraining loader computes it (`ClipNormalization`, cached beside the manifest).
    """
    from echofm.data.loader import ClipNormalization

    stats = loaded.extra.get("normalization") or loaded.extra.get("normalisation")
    if stats is not None:
        norm = ClipNormalization.from_dict(stats)
    elif isinstance(manifest, (str, Path)):
        norm = ClipNormalization.from_manifest(manifest, shards)
    else:
        norm = ClipNormalization.for_shards(shards)
    cfg = loaded.model.config
    return InputSpec(num_frames=cfg.num_frames, img_size=cfg.img_size, in_chans=cfg.in_chans,
                     mean=tuple(norm.mean), std=tuple(norm.std))


def finetune(
    config: FinetuneConfig,
    *,
    encoder: str | Path | LoadedEncoder,
    shards: str | Path,
    labels: str | Path | pd.DataFrame,
    manifest: str | Path | pd.DataFrame | None = None,
    out_dir: str | Path | None = None,
    mask_root: str | Path | None = None,
    tracking_uri: str | None = None,
    secret: bytes | None = None,
) -> FinetuneResult:
    """Fine-tune `encoder` on `config.task` and compare with `config.compare` (see module doc).

    encoder: anything `echofm.model.load_pretrained` reads (a checkpoint file, a pretraining run
    directory, an export folder, `models:/echofm-encoder@champion` resolved against
    `tracking_uri`, a published checkpoint), or an already loaded encoder. manifest: default
    `<shards>/../manifest.parquet`. out_dir: when given, the fine-tuned model is saved there as
    `model.pt` with `result.json` beside it. secret: the de-identification secret ingestion used,
    needed only when the labels name files by path.
    """
    from echofm.data.loader import file_digest

    shards = storage.location(shards)
    manifest = manifest if manifest is not None else manifest_path_for(shards)
    loaded = encoder if isinstance(encoder, LoadedEncoder) else load_encoder(encoder, tracking_uri=tracking_uri)
    inputs = input_spec_for(loaded, shards, manifest)
    data = build_task_data(task=config.task, manifest=manifest, labels=labels, shards_dir=shards,
                           spec=inputs, split_config=config.split, mask_root=mask_root, secret=secret)
    counts = data.counts()
    log.info("%s: %s clips by split", config.task, {k: v["clips"] for k, v in counts.items()})
    task = fit_task_spec(config.task, data.targets[data.indices("train")], data.classes)
    device = resolve_device(config.device)

    # Every baseline is loaded before any arm trains, so a bad --compare entry fails at once.
    arm_encoders = [(baseline, *baseline_encoder(baseline, loaded.model, seed=config.seed,
                                                 tracking_uri=tracking_uri))
                    for baseline in config.baselines]
    pretrained_encoder = copy.deepcopy(loaded.model)
    model, pretrained = train_arm(PRETRAINED_ARM, pretrained_encoder, data, task, inputs, config, device)
    baselines = {}
    for baseline, arm_encoder, report in arm_encoders:
        _, arm = train_arm(baseline.name, arm_encoder, data, task, inputs, config, device)
        if report is not None:
            arm.source = baseline.source
            arm.load = {"format": report.format, "counts": report.counts(), "summary": report.summary()}
        baselines[baseline.name] = arm
    digest = file_digest(manifest) if isinstance(manifest, (str, Path)) and storage.exists(manifest) else None
    result = FinetuneResult(
        config=config, task=task, inputs=inputs, pretrained=pretrained, baselines=baselines,
        counts=counts, encoder_source=loaded.source, parent_run_id=loaded.parent_run_id,
        manifest_digest=digest, model=model,
        data_notes={"split_rule": data.split_rule, "still_clips": data.still_clips},
    )
    if out_dir is not None:
        out = Path(out_dir)
        meta = {k: v for k, v in result.summary().items() if k != "checkpoint"}
        result.checkpoint = save_downstream(out / CHECKPOINT_NAME, model, meta=meta)
        (out / RESULT_NAME).write_text(json.dumps(result.summary(), indent=2, default=float))
    return result
