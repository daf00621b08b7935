"""Fine-tune one encoder on several tasks at once and compare with single-task models and a random encoder.

    result = finetune_multitask(MultitaskConfig(tasks=("ef", "view", "reduced_ef")), encoder=..., shards=..., labels=...)

One encoder (frozen, full or progressive, as `echofm.downstream.finetune`), one head per task
(the strategy's head; segmentation's decoder on the patch tokens), one encoder pass per batch.
A task's loss is taken over the clips of the batch labelled for it, its head run on those clips
only, so a head learns from its labelled clips alone and a clip without a label for a task
contributes nothing to that task's loss. The task losses become one by the run's balancer
(`echofm.downstream.multitask.balancing`); the kept epoch has the lowest balanced validation loss.

The comparison, all on the same per-task patient split, strategy, seed and epochs:
- `multitask`: the joint model on the pretrained encoder (the model that is saved);
- `single_task`: per task, the model `echofm finetune --task TASK` fits with these options;
- `baselines`: the joint model on each initialisation of `config.compare` (by default a randomly
  initialised encoder, `random_init`; also imported encoders, `echofm.downstream.baselines`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from echofm.data import storage
from echofm.data.loader import manifest_path_for
from echofm.device import resolve_device
from echofm.downstream.baselines import RANDOM
from echofm.downstream.encoder import LoadedEncoder, baseline_encoder, load_encoder, parameter_count
from echofm.downstream.finetune import (
    CHECKPOINT_NAME,
    RESULT_NAME,
    ArmResult,
    arm_parameter_groups,
    encode_clips,
    fit_epochs,
    fit_task_spec,
    head_config,
    input_spec_for,
    make_optimizer,
    train_arm,
)
from echofm.downstream.multitask.balancing import LossBalancer, make_balancer
from echofm.downstream.multitask.config import MultitaskConfig
from echofm.downstream.multitask.data import JointData, build_joint_data
from echofm.downstream.multitask.model import MultiTaskModel, save_multitask
from echofm.downstream.objectives import TaskSpec
from echofm.model.heads import build_head
from echofm.model.mae import clip_features
from echofm.preprocess.clips import InputSpec, to_model_input

log = logging.getLogger(__name__)

Lookup = dict[str, np.ndarray]  # per task, int64 [N]: a clip's row in the task's labels, -1 when not used


@dataclass
class JointArmResult:
    """One joint arm: metrics per task per split (`{task: {"val": {...}, "test": {...}}}`), the
    per-epoch record (balanced and per-task losses, per-task weights), the kept epoch and the
    balancer's final weight per task."""

    metrics: dict[str, dict[str, dict[str, float]]]
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    trainable_parameters: int
    loss_weights: dict[str, float]


@dataclass
class MultitaskResult:
    """What a joint run produced (module doc). `model` is the multi-task model on the pretrained
    encoder; `checkpoint` its file when an output directory was given."""

    config: MultitaskConfig
    tasks: dict[str, TaskSpec]
    inputs: InputSpec
    multitask: JointArmResult
    baselines: dict[str, JointArmResult]
    single_task: dict[str, ArmResult]
    counts: dict[str, dict[str, dict[str, int]]]
    clips: int
    encoder_source: str
    parent_run_id: str | None
    manifest_digest: str | None
    model: MultiTaskModel
    checkpoint: Path | None = None

    @property
    def random_init(self) -> JointArmResult | None:
        return self.baselines.get(RANDOM)

    @property
    def test_metrics(self) -> dict[str, dict[str, float]]:
        return {task: metrics.get("test", {}) for task, metrics in self.multitask.metrics.items()}

    def comparison(self, split: str = "test") -> dict[str, dict[str, Any]]:
        """Per task, its primary metric for each arm on `split` (None where an arm is absent);
        `random_init` is the random baseline, `baselines` every baseline by name."""
        out = {}
        for task, spec in self.tasks.items():
            metric, higher = spec.primary_metric
            single = self.single_task.get(task)
            out[task] = {
                "metric": metric, "higher_is_better": higher,
                "multitask": self.multitask.metrics[task].get(split, {}).get(metric),
                "single_task": single.metrics.get(split, {}).get(metric) if single else None,
                "random_init": self.random_init.metrics[task].get(split, {}).get(metric) if self.random_init else None,
                "baselines": {name: arm.metrics[task].get(split, {}).get(metric) for name, arm in self.baselines.items()},
            }
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the run (no weights)."""
        return {
            "config": self.config.to_dict(),
            "tasks": {task: spec.to_dict() for task, spec in self.tasks.items()},
            "inputs": self.inputs.to_dict(),
            "multitask": asdict(self.multitask),
            "random_init": asdict(self.random_init) if self.random_init else None,
            "baselines": {name: asdict(arm) for name, arm in self.baselines.items()},
            "single_task": {task: asdict(arm) for task, arm in self.single_task.items()},
            "comparison": self.comparison(),
            "counts": self.counts,
            "clips": self.clips,
            "encoder_source": self.encoder_source,
            "parent_run_id": self.parent_run_id,
            "manifest_digest": self.manifest_digest,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
        }


class JointBatches:
    """Shared encoder passes and per-task targets for index batches of a `JointData`.

    With a cache (frozen encoder) a batch's pass is its cached rows; otherwise its clips are
    normalised and encoded on the fly (with gradient when the encoder trains).
    """

    def __init__(self, data: JointData, inputs: InputSpec, cache: torch.Tensor | None, device: torch.device) -> None:
        self.data, self.inputs, self.cache, self.device = data, inputs, cache, device
        self.targets = {task: torch.from_numpy(np.array(labels.targets)) for task, labels in data.labels.items()}
        self.valid = {task: torch.from_numpy(labels.valid) if labels.valid is not None else None
                      for task, labels in data.labels.items()}

    def encoded(self, model: MultiTaskModel, idx: np.ndarray) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[idx].to(self.device)
        return model.encode(to_model_input(self.data.clips[idx], self.inputs).to(self.device))

    def labels(self, task: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        valid = self.valid[task]
        return self.targets[task][rows].to(self.device), valid[rows].to(self.device) if valid is not None else None


def joint_losses(model: MultiTaskModel, encoded: torch.Tensor, idx: np.ndarray, lookup: Lookup,
                 batches: JointBatches) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Each task's loss on the clips `idx` labelled for it (by `lookup`), from their shared pass
    `encoded`: `(losses, outputs, rows)` by task, only for tasks with a labelled clip among them.
    A head runs on its task's labelled clips alone, so nothing else reaches its gradient."""
    rows = {task: table[idx] for task, table in lookup.items()}
    select = {task: torch.from_numpy(r >= 0).to(encoded.device) for task, r in rows.items()}
    outputs = model.heads_forward(encoded, select)
    losses, used = {}, {}
    for task, output in outputs.items():
        used[task] = rows[task][rows[task] >= 0]
        losses[task] = model.specs[task].loss(output, *batches.labels(task, used[task]))
    return losses, outputs, used


@torch.no_grad()
def score_joint(model: MultiTaskModel, batches: JointBatches, lookup: Lookup, batch_size: int) -> dict[str, tuple[float, dict[str, float]]]:
    """Per task, mean loss and metrics over the clips `lookup` marks (NaN and {} for none),
    with one encoder pass per clip whatever the number of tasks."""
    marked = np.flatnonzero(np.any(np.stack([table >= 0 for table in lookup.values()]), axis=0))
    totals = {task: 0.0 for task in lookup}
    preds: dict[str, list[np.ndarray]] = {task: [] for task in lookup}
    rows: dict[str, list[np.ndarray]] = {task: [] for task in lookup}
    for start in range(0, len(marked), batch_size):
        idx = marked[start : start + batch_size]
        losses, outputs, used = joint_losses(model, batches.encoded(model, idx), idx, lookup, batches)
        for task, loss in losses.items():
            totals[task] += loss.item() * len(used[task])
            preds[task].append(model.specs[task].decode(outputs[task]))
            rows[task].append(used[task])
    scores = {}
    for task, spec in model.specs.items():
        if not rows[task]:
            scores[task] = (float("nan"), {})
            continue
        labels, picked = batches.data.labels[task], np.concatenate(rows[task])
        valid = labels.valid[picked] if labels.valid is not None else None
        scores[task] = (totals[task] / len(picked), spec.score(np.concatenate(preds[task]), labels.targets[picked], valid))
    return scores


def _balanced(balancer: LossBalancer, scores: dict[str, tuple[float, dict[str, float]]]) -> float:
    losses = {task: torch.tensor(loss) for task, (loss, _) in scores.items() if math.isfinite(loss)}
    with torch.no_grad():
        return float(balancer(losses)) if losses else float("nan")


def train_joint(
    name: str,
    encoder: Any,
    data: JointData,
    specs: dict[str, TaskSpec],
    inputs: InputSpec,
    config: MultitaskConfig,
    device: torch.device,
) -> tuple[MultiTaskModel, JointArmResult, torch.Tensor | None]:
    """One joint arm (module doc); also returns the frozen encoder's cached pass (None otherwise)."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    heads = {task: build_head(head_config(config.for_task(task), encoder, spec)) for task, spec in specs.items()}
    model = MultiTaskModel(encoder, heads, specs, inputs).to(device)
    balancer = make_balancer(config.loss_balance, config.weights).to(device)
    cache = None
    trainable: torch.nn.Module = model
    if config.frozen:
        model.encoder.requires_grad_(False)
        cache = encode_clips(model, data.clips, config.batch_size, device)
        trainable = model.heads
    groups = arm_parameter_groups(config, encoder, model.heads)
    balancer_scale = (balancer.learning_rate or config.base_lr) / config.base_lr
    groups.append({"params": list(balancer.parameters()), "lr": config.base_lr * balancer_scale,
                   "lr_scale": balancer_scale, "weight_decay": 0.0})
    optimizer = make_optimizer(groups, config.base_lr)
    batches = JointBatches(data, inputs, cache, device)
    train, val = data.lookup("train"), data.lookup("val")
    train_idx = np.flatnonzero(np.any(np.stack([table >= 0 for table in train.values()]), axis=0))
    if balancer.needs_initial_losses:
        model.eval()
        balancer.start({task: loss for task, (loss, _) in score_joint(model, batches, train, config.batch_size).items()})
    sums = {task: [0.0, 0] for task in specs}

    def step(idx: np.ndarray) -> float:
        losses, _, used = joint_losses(model, batches.encoded(model, idx), idx, train, batches)
        loss = balancer(losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for task, value in losses.items():
            sums[task][0] += value.item() * len(used[task])
            sums[task][1] += len(used[task])
        return loss.item() * len(idx)

    def validate() -> tuple[float, dict[str, float]]:
        scores = score_joint(model, batches, val, config.batch_size)
        entries: dict[str, float] = {}
        for task, (loss, metrics) in scores.items():
            total, count = sums[task]
            entries[f"train_loss_{task}"] = total / count if count else float("nan")
            entries[f"val_loss_{task}"] = loss
            entries.update({f"val_{task}_{k}": v for k, v in metrics.items()})
            sums[task] = [0.0, 0]
        entries.update({f"weight_{task}": w for task, w in balancer.effective_weights().items()})
        return _balanced(balancer, scores), entries

    history, best_epoch = fit_epochs(f"{name} {','.join(specs)}", config=config, encoder=encoder,
                                     trainable=torch.nn.ModuleList([trainable, balancer]), optimizer=optimizer,
                                     train_idx=train_idx, step=step, validate=validate,
                                     has_val=any((table >= 0).any() for table in val.values()))
    metrics: dict[str, dict[str, dict[str, float]]] = {task: {} for task in specs}
    for split in ("val", "test"):
        for task, (_, scores) in score_joint(model, batches, data.lookup(split), config.batch_size).items():
            metrics[task][split] = scores
    model.requires_grad_(True)
    result = JointArmResult(metrics=metrics, history=history, best_epoch=best_epoch,
                            seconds=time.perf_counter() - started, trainable_parameters=parameter_count(trainable),
                            loss_weights=balancer.effective_weights())
    return model.cpu().eval(), result, cache


def _single_cache(cache: torch.Tensor | None, rows: np.ndarray, head_input: str) -> torch.Tensor | None:
    """A single-task head's frozen-encoder cache cut from the joint one (the same pass)."""
    if cache is None:
        return None
    picked = cache[torch.from_numpy(rows)]
    return clip_features(picked) if head_input == "features" and picked.ndim == 3 else picked


def finetune_multitask(
    config: MultitaskConfig,
    *,
    encoder: str | Path | LoadedEncoder,
    shards: str | Path,
    labels: str | Path | pd.DataFrame,
    manifest: str | Path | pd.DataFrame | None = None,
    out_dir: str | Path | None = None,
    mask_root: str | Path | None = None,
    tracking_uri: str | None = None,
    secret: bytes | None = None,
) -> MultitaskResult:
    """Fine-tune `encoder` on `config.tasks` together and compare (module doc).

    The arguments are those of `echofm.downstream.finetune.finetune`; out_dir receives the
    multi-task `model.pt` and `result.json`.
    """
    from echofm.data.loader import file_digest

    shards = storage.location(shards)
    manifest = manifest if manifest is not None else manifest_path_for(shards)
    loaded = encoder if isinstance(encoder, LoadedEncoder) else load_encoder(encoder, tracking_uri=tracking_uri)
    inputs = input_spec_for(loaded, shards, manifest)
    data = build_joint_data(tasks=config.tasks, manifest=manifest, labels=labels, shards_dir=shards, spec=inputs,
                            split_config=config.split, mask_root=mask_root, secret=secret)
    counts = data.counts()
    log.info("%s: %d clips; labelled clips by task and split %s", ",".join(config.tasks), len(data.clip_ids),
             {task: {k: v["clips"] for k, v in c.items()} for task, c in counts.items()})
    specs = {task: fit_task_spec(task, labels.targets[labels.split == "train"], labels.classes)
             for task, labels in data.labels.items()}
    device = resolve_device(config.device)

    # Every baseline is loaded before any arm trains, so a bad --compare entry fails at once.
    arm_encoders = [(baseline, baseline_encoder(baseline, loaded.model, seed=config.seed, tracking_uri=tracking_uri)[0])
                    for baseline in config.baselines]
    model, joint, cache = train_joint("multitask", copy.deepcopy(loaded.model), data, specs, inputs, config, device)
    single: dict[str, ArmResult] = {}
    if config.compare_single_task:
        for task, spec in specs.items():
            task_config = config.for_task(task)
            head_input = model.heads[task].input_kind
            _, single[task] = train_arm("single-task", copy.deepcopy(loaded.model), data.task_data(task), spec, inputs,
                                        task_config, device, cache=_single_cache(cache, data.labels[task].rows, head_input))
    baselines = {baseline.name: train_joint(baseline.name, arm_encoder, data, specs, inputs, config, device)[1]
                 for baseline, arm_encoder in arm_encoders}
    digest = file_digest(manifest) if isinstance(manifest, (str, Path)) and storage.exists(manifest) else None
    result = MultitaskResult(
        config=config, tasks=specs, inputs=inputs, multitask=joint, baselines=baselines, single_task=single,
        counts=counts, clips=len(data.clip_ids), encoder_source=loaded.source, parent_run_id=loaded.parent_run_id,
        manifest_digest=digest, model=model,
    )
    if out_dir is not None:
        out = Path(out_dir)
        meta = {k: v for k, v in result.summary().items() if k != "checkpoint"}
        result.checkpoint = save_multitask(out / CHECKPOINT_NAME, model, meta=meta)
        (out / RESULT_NAME).write_text(json.dumps(result.summary(), indent=2, default=float))
    return result

