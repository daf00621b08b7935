"""MLflow registration of fine-tuned models: one run per checkpoint, the pyfunc, a model card.

A fine-tuned checkpoint (`model.pt`) carries everything registration needs (config, every arm's
metrics: the pretrained encoder and its baselines, provenance), so this step runs on its own:
`log_and_register` logs the run (params, metrics per arm, per-epoch losses, the raw-clip pyfunc
of `echofm.registry.pyfunc`), registers the task's model (`Task.model_name`, e.g. `echofm-ef`)
with alias `challenger`, writes the model card (every arm's metrics side by side) as the
version's description and tags the version with its provenance and its evaluation.

The evaluation a version is judged by is recorded on the version as tags: `eval.set` (a digest
of manifest, labels, split and task) and `eval.<metric>`; each baseline's as
`eval.<arm>.<metric>` (an imported one's source as `baseline.<arm>.source`). Promotion
(`echofm.registry.promote`) compares recorded metrics only when both versions carry the same
`eval.set`. Registry stages are not used (deprecated).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from echofm.downstream.baselines import PRETRAINED_ARM, RANDOM, comparison_table, summary_arms
from echofm.downstream.multitask.model import MultiTaskModel, load_fine_tuned
from echofm.downstream.tasks import TASKS
from echofm.errors import RegistryError
from echofm.registry.multitask_register import log_and_register_multitask
from echofm.registry.pyfunc import log_pyfunc
from echofm.registry.runs import (
    EXPERIMENT,
    RegisteredVersion,
    evaluation_set_digest,
    experiment_id,
    log_arm,
    provenance_tags,
    run_params,
)
from echofm.store import CHALLENGER, tracking_uri_scope, version_uri

log = logging.getLogger(__name__)

# Column titles of the model card's metrics table; imported arms are titled by name and layout.
ARM_TITLES = {PRETRAINED_ARM: "pretrained encoder", RANDOM: "random-init encoder"}

__all__ = ["EXPERIMENT", "RegisteredVersion", "evaluation_set_digest", "log_and_register", "model_card"]


def _arm_test(summary: dict[str, Any], arm: str) -> dict[str, float]:
    record = summary_arms(summary).get(arm) or {}
    return dict((record.get("metrics") or {}).get("test") or {})


def _arm_title(name: str, record: dict[str, Any]) -> str:
    if name in ARM_TITLES:
        return ARM_TITLES[name]
    load = record.get("load") or {}
    return f"{name} ({load.get('format', 'imported')}: `{record.get('source')}`)"


def _metrics_table(summary: dict[str, Any]) -> str:
    """Markdown table of the test metrics, one column per arm (`pretrained` first)."""
    arms = summary_arms(summary)
    table = comparison_table({n: r.get("metrics") or {} for n, r in arms.items()}, "test")
    lines = ["| metric | " + " | ".join(_arm_title(n, r) for n, r in arms.items()) + " |",
             "|---" * (len(arms) + 1) + "|"]
    for metric, values in sorted(table.items()):
        cells = [f"{values[n]:.4g}" if n in values else "-" for n in arms]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(summary: dict[str, Any], name: str, head_kind: str) -> str:
    """Markdown description of a fine-tuned version (data, metrics, intended use, limits), from
    the run summary a fine-tuned checkpoint carries (`FinetuneResult.summary()`)."""
    cfg, counts = summary["config"], summary["counts"]
    classes = summary["task"].get("classes") or []
    class_text = f" Classes: {', '.join(classes)}." if classes else ""
    data = summary.get("data") or {}
    return f"""# {name}

EchoFM downstream model for **{cfg['task']}** ({cfg['strategy']} strategy, {head_kind} head).{class_text}

## Data
Encoder: `{summary['encoder_source']}` (pretraining run `{summary['parent_run_id']}`). Manifest digest
`{summary['manifest_digest']}`. Clips (patients) per split, {_split_text(data, cfg)}:
train {counts['train']['clips']} ({counts['train']['patients']}), val {counts['val']['clips']}
({counts['val']['patients']}), test {counts['test']['clips']} ({counts['test']['patients']}).

## Metrics (test split)
Every arm trains the same head with the same strategy, split, seed and epochs; imported encoders
were converted for this input (their load reports are in the run's result.json).

{_metrics_table(summary)}

## Intended use
Research on echocardiography representation learning and as a pipeline component (e.g. view
filtering of ingested clips). Input: raw uint8 clips, grey `[N, T, H, W]` or `[N, T, H, W, C]`
(C = 1 or 3), or a 1-D object array of clips `[T, H, W(, C)]` of different sizes; T >= 16, about one cardiac
cycle; resampling, resize-pad and normalisation happen inside. Served (`mlflow models serve`), the batch
is JSON: `{{"inputs": [clip, ...]}}` with integers 0-255. Output: one column group `<task>.<field>`.

## Limits
Not a medical device; not validated for clinical decisions. Trained on the archive named above
(possibly synthetic); performance on other scanners, views or populations is unknown. Frames
are sampled evenly over the whole input clip, which carries no frame rate: pass one cycle.{_still_text(data)}
"""


def _split_text(data: dict[str, Any], cfg: dict[str, Any]) -> str:
    rule = data.get("split_rule", "patient")
    if rule == "official":
        return "the labels' official split"
    if rule.startswith("fold"):
        return f"the labels' folds ({rule} as test, the next fold as validation)"
    return f"split by patient (seed {cfg['split']['seed']})"


def _still_text(data: dict[str, Any]) -> str:
    n = int(data.get("still_clips", 0))
    if not n:
        return ""
    return (f"\n{n} of the clips were still images (one frame), each entered as a clip of its frame repeated;"
            " give a still the same way: its frame repeated T times.")


def log_and_register(
    checkpoint: str | os.PathLike[str] | Any,
    *,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    name: str | None = None,
    labels_digest: str | None = None,
) -> RegisteredVersion:
    """Log a fine-tuned checkpoint (`model.pt`, or a `FinetuneResult` that saved one) as an MLflow
    run (params, both arms' metrics, per-epoch losses, the pyfunc) and register it as `name`
    (default `echofm-<task>`) with alias `challenger`, a model-card description and provenance
    tags. Everything comes from the checkpoint file, so this step runs on its own. A multi-task
    checkpoint is registered by `log_and_register_multitask` (as `echofm-multitask-<tasks>`)."""
    path = getattr(checkpoint, "checkpoint", checkpoint)
    if path is None or not Path(path).is_file():
        raise RegistryError(f"no fine-tuned checkpoint to register at {path}")
    loaded = load_fine_tuned(path)
    with tracking_uri_scope(tracking_uri):
        if isinstance(loaded.model, MultiTaskModel):
            return log_and_register_multitask(Path(path), loaded.model, loaded.meta, experiment=experiment, name=name,
                                              labels_digest=labels_digest)
        return _log_and_register(Path(path), loaded.model, loaded.meta, experiment=experiment, name=name,
                                 labels_digest=labels_digest)


def _log_and_register(path: Path, model: Any, summary: dict[str, Any], *, experiment: str, name: str | None,
                      labels_digest: str | None) -> RegisteredVersion:
    import mlflow
    from mlflow import MlflowClient

    uri = mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    cfg = summary["config"]
    name = name or TASKS[cfg["task"]].model_name
    eval_set = evaluation_set_digest(summary["manifest_digest"], labels_digest, cfg["split"], cfg["task"])
    provenance = provenance_tags(summary, cfg["task"])
    with mlflow.start_run(experiment_id=experiment_id(client, experiment, uri), run_name=f"{name}-{cfg['strategy']}") as run:
        mlflow.log_params(run_params(cfg))
        for arm, record in summary_arms(summary).items():
            if record:
                log_arm(mlflow, arm, record["metrics"], record["history"])
        mlflow.set_tags(provenance)
        mlflow.log_dict(summary, "result.json")
        info = log_pyfunc(model, path, registered_model_name=name)
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.update_model_version(name, version, description=model_card(summary, name, model.head.config.kind))
    tags = {
        **provenance,
        "eval.set": eval_set,
        **{f"eval.{k}": repr(float(v)) for k, v in _arm_test(summary, "pretrained").items()},
    }
    for arm, record in summary_arms(summary).items():
        if arm != PRETRAINED_ARM:
            tags.update({f"eval.{arm}.{k}": repr(float(v)) for k, v in _arm_test(summary, arm).items()})
            if record.get("source"):
                tags[f"baseline.{arm}.source"] = str(record["source"])
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    log.info("registered %s version %s (alias %s)", name, version, CHALLENGER)
    return RegisteredVersion(name=name, version=version, run_id=run_id, model_uri=version_uri(name, version))
