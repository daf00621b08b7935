"""MLflow registration of a multi-task checkpoint: one run, one pyfunc, one model card.

The model is registered as `echofm-multitask-<tasks>` (`multitask_model_name`) with alias
`challenger`. Its pyfunc answers every task at once, one column group per task with the schema
of that task's own model (`echofm.registry.pyfunc`). The run holds each arm's metrics per task
(`multitask/<task>/test_mae`, `single_task/<task>/...`, `<baseline>/<task>/...` for each `--compare`
arm, e.g. `random/ef/test_mae`) and per-epoch losses; the version is tagged, per task, with the evaluation set and the test metrics in the
form promotion compares with the single-task champions (`eval.<task>.set`, `eval.<task>.<metric>`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from echofm.downstream.baselines import RANDOM, summary_arms
from echofm.downstream.multitask.config import multitask_model_name
from echofm.downstream.multitask.model import MultiTaskModel
from echofm.downstream.tasks import TASKS
from echofm.registry.pyfunc import log_pyfunc
from echofm.registry.runs import (
    RegisteredVersion,
    evaluation_set_digest,
    experiment_id,
    log_arm,
    provenance_tags,
    run_params,
)
from echofm.store import CHALLENGER, version_uri

log = logging.getLogger(__name__)

MULTITASK_ARM, SINGLE_TASK_ARM = "multitask", "single_task"
TASKS_TAG = "tasks"


def joint_arms(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The joint arms of a multi-task run summary: the pretrained one first, then each baseline
    (a summary made before `baselines` existed gives its `random_init` arm as `random`)."""
    return summary_arms(summary, first=MULTITASK_ARM)


def _arm_title(arm: str) -> str:
    if arm == MULTITASK_ARM:
        return "multi-task"
    if arm == SINGLE_TASK_ARM:
        return "single-task"
    return "multi-task, random-init encoder" if arm == RANDOM else f"multi-task, {arm} encoder"


def arm_test(summary: dict[str, Any], arm: str, task: str) -> dict[str, float]:
    """Test metrics of `task` in one arm of a multi-task run summary ({} when the arm is absent)."""
    record = (summary.get(SINGLE_TASK_ARM) or {}) if arm == SINGLE_TASK_ARM else joint_arms(summary).get(arm)
    if not record:
        return {}
    if arm == SINGLE_TASK_ARM:
        record = record.get(task) or {}
        return dict((record.get("metrics") or {}).get("test") or {})
    return dict(((record.get("metrics") or {}).get(task) or {}).get("test") or {})


def promotion_rule_text(tasks: list[str]) -> str:
    rules = "; ".join(f"{task}: {TASKS[task].primary_metric} by {TASKS[task].promotion.min_improvement:g}"
                      for task in tasks)
    return (f"This model becomes champion only when, on the same evaluation set, it is not worse than the "
            f"champion of any of its tasks (each task's single-task champion, and the current multi-task "
            f"champion) by that task's threshold, and better than it by the threshold on at least one task "
            f"(a task without a champion counts as better). Thresholds, kept in `echofm.downstream.tasks`: {rules}.")


def multitask_model_card(summary: dict[str, Any], name: str) -> str:
    """Markdown description of a multi-task version from its run summary (`MultitaskResult.summary()`)."""
    cfg, counts = summary["config"], summary["counts"]
    tasks = list(cfg["tasks"])
    arms = list(joint_arms(summary))
    present = [arms[0]] + ([SINGLE_TASK_ARM] if summary.get(SINGLE_TASK_ARM) else []) + arms[1:]
    header = "| task | metric | " + " | ".join(_arm_title(arm) for arm in present) + " |"
    rows = [header, "|" + "---|" * (len(present) + 2)]
    for task in tasks:
        values = {arm: arm_test(summary, arm, task) for arm in present}
        for metric in sorted(values[MULTITASK_ARM]):
            cells = " | ".join(f"{values[arm][metric]:.4g}" if metric in values[arm] else "-" for arm in present)
            rows.append(f"| {task} | {metric} | {cells} |")
    weights = summary["multitask"].get("loss_weights", {})
    count_lines = "\n".join(
        f"- {task} ({TASKS[task].title}): train {c['train']['clips']}, val {c['val']['clips']}, test {c['test']['clips']} clips"
        for task, c in counts.items())
    table = "\n".join(rows)
    return f"""# {name}

EchoFM multi-task model: **{', '.join(tasks)}** from one encoder pass ({cfg['strategy']} strategy; one head
per task on the shared features, segmentation's decoder on the patch tokens). Loss balance
`{cfg['loss_balance']}`; final loss factor per task: {', '.join(f'{t} {w:.3g}' for t, w in weights.items())}.

## Data
Encoder: `{summary['encoder_source']}` (pretraining run `{summary['parent_run_id']}`). Manifest digest
`{summary['manifest_digest']}`. {summary['clips']} clips labelled for at least one task; labelled clips per task
and split, split by patient (seed {cfg['split']['seed']}), the split each task's single-task model uses:
{count_lines}

## Metrics (test split)
Every column on the same clips, strategy, seed and epochs: the multi-task model, one single-task model per
task, and the multi-task model on each baseline encoder (`--compare`; by default a randomly initialised one).

{table}

## Promotion
{promotion_rule_text(tasks)}

## Output
One column group per task, each with the schema of that task's own registered model
({', '.join(TASKS[t].model_name for t in tasks)}); with segmentation the answer is a dict of arrays, one per
column, else one table.

## Intended use
Research on echocardiography representation learning and as a pipeline component: scoring an archive
for several questions with one encoder pass per clip. Input: raw uint8 clips, grey `[N, T, H, W]` or
`[N, T, H, W, C]` (C = 1 or 3), or a 1-D object array of clips of different sizes; T >= 16, about one cardiac
cycle; resampling, resize-pad and normalisation happen inside.

## Limits
Not a medical device; not validated for clinical decisions. Trained on the archive named above (possibly
synthetic); performance on other scanners, views or populations is unknown. Frames are sampled evenly over
the whole input clip, which carries no frame rate: pass one cycle.
"""


def log_and_register_multitask(path: Path, model: MultiTaskModel, summary: dict[str, Any], *, experiment: str,
                               name: str | None, labels_digest: str | None) -> RegisteredVersion:
    """Log the run and register the pyfunc (module doc); called inside the tracking-URI scope."""
    import mlflow
    from mlflow import MlflowClient

    uri = mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    cfg = summary["config"]
    tasks = list(cfg["tasks"])
    name = name or multitask_model_name(tasks)
    provenance = {**provenance_tags(summary, ",".join(tasks)), TASKS_TAG: ",".join(tasks)}
    with mlflow.start_run(experiment_id=experiment_id(client, experiment, uri), run_name=f"{name}-{cfg['strategy']}") as run:
        mlflow.log_params(run_params({k: v for k, v in cfg.items() if k != "tasks"} | {"tasks": ",".join(tasks)}))
        for arm, record in joint_arms(summary).items():
            if record:
                for task in tasks:
                    log_arm(mlflow, f"{arm}/{task}", record["metrics"][task], [])
                log_arm(mlflow, arm, {}, record["history"])
        for task, record in (summary.get(SINGLE_TASK_ARM) or {}).items():
            log_arm(mlflow, f"{SINGLE_TASK_ARM}/{task}", record["metrics"], record["history"])
        mlflow.set_tags(provenance)
        mlflow.log_dict(summary, "result.json")
        info = log_pyfunc(model, path, registered_model_name=name)
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.update_model_version(name, version, description=multitask_model_card(summary, name))
    tags = dict(provenance)
    for task in tasks:
        tags[f"eval.{task}.set"] = evaluation_set_digest(summary["manifest_digest"], labels_digest, cfg["split"], task)
        for arm in [SINGLE_TASK_ARM, *joint_arms(summary)]:
            prefix = f"eval.{task}" if arm == MULTITASK_ARM else f"eval.{arm}.{task}"
            tags.update({f"{prefix}.{k}": repr(float(v)) for k, v in arm_test(summary, arm, task).items()})
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    log.info("registered %s version %s (alias %s)", name, version, CHALLENGER)
    return RegisteredVersion(name=name, version=version, run_id=run_id, model_uri=version_uri(name, version))
