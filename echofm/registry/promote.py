"""Alias-based promotion: `champion` moves to the `challenger` only when it earns it.

A downstream model's challenger becomes champion when it beats the current champion on the same
evaluation set by its task's threshold (`Task.promotion`, collected in `PROMOTION_RULES`), or
when there is no champion. Promotion compares the metrics recorded at registration only when
both versions carry the same `eval.set` tag; otherwise it re-evaluates both on the evaluation
set it is given, and refuses to guess when it has none. An encoder is judged by the models
fine-tuned from it (`promote_encoder`). Every decision is recorded on the version as the tag
`promotion`.

A multi-task model (`echofm-multitask-<tasks>`) is judged per task by the same rules
(`promote_multitask`): against the champion of each of its tasks (the single-task champion, and
the multi-task champion's head) it must not be worse on any task by that task's threshold, and
must be better by it on at least one (a task without a champion counts as better).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from echofm.downstream.evaluate import evaluate
from echofm.downstream.multitask.config import is_multitask_model
from echofm.downstream.splits import SplitConfig
from echofm.downstream.task import PromotionRule, TaskError
from echofm.downstream.tasks import TASKS
from echofm.errors import RegistryError
from echofm.representation.gate import REPORT_TAG, check_representation
from echofm.representation.report import RepresentationReport
from echofm.store import CHALLENGER, CHAMPION, version_uri

log = logging.getLogger(__name__)

# Thresholds as code, one per task: what counts as a real improvement rather than noise on a test set.
PROMOTION_RULES: dict[str, PromotionRule] = TASKS.promotion_rules()


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of one promotion step; `promoted` tells whether `champion` moved."""

    name: str
    challenger_version: str
    champion_version: str | None  # the champion before this step
    promoted: bool
    metric: str
    challenger_value: float | None
    champion_value: float | None
    min_improvement: float | None
    reason: str
    per_task: tuple[dict[str, Any], ...] = ()  # a multi-task model's verdict per task (`promote_multitask`)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _alias_version(client: MlflowClient, name: str, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _recorded(version: Any, metric: str, task: str | None = None) -> tuple[str | None, float | None]:
    """The evaluation set and recorded test `metric` of a version (of its head `task` for a
    multi-task model)."""
    tags = version.tags or {}
    prefix = "eval" if task is None else f"eval.{task}"
    value = tags.get(f"{prefix}.{metric}")
    return tags.get(f"{prefix}.set"), (float(value) if value is not None else None)


def _challenger(client: MlflowClient, name: str, expected: str | None) -> Any:
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no '{CHALLENGER}' version to promote")
    if expected is not None and str(challenger.version) != str(expected):
        raise RegistryError(f"{name}@{CHALLENGER} is version {challenger.version}, not {expected}")
    return challenger


def promote(
    name: str,
    *,
    tracking_uri: str | None = None,
    evaluation: dict[str, Any] | None = None,
    rules: dict[str, PromotionRule] = PROMOTION_RULES,
    expected_challenger: str | None = None,
) -> PromotionDecision:
    """Make the `challenger` of `name` its `champion` if it earns it (see module doc).

    evaluation: keyword arguments for `echofm.downstream.evaluate.evaluate` (shards, labels,
    manifest, split, split_config (default `SplitConfig()`), ...) naming the evaluation set both
    versions are scored on; without it the metrics recorded at registration are compared, which
    requires both to carry the same `eval.set`.
    expected_challenger: the version a pipeline just registered; when the alias has moved to
    another version since, nothing is promoted (RegistryError).
    Raises RegistryError when there is no challenger or the versions are not comparable.
    A multi-task model is judged by `promote_multitask`.
    """
    client = MlflowClient(tracking_uri)
    if is_multitask_model(name):
        return promote_multitask(name, client=client, tracking_uri=tracking_uri, evaluation=evaluation, rules=rules,
                                 expected_challenger=expected_challenger)
    try:
        rule = rules[TASKS.by_model_name(name).name]
    except TaskError as exc:
        raise RegistryError(str(exc)) from None
    challenger = _challenger(client, name, expected_challenger)
    champion = _alias_version(client, name, CHAMPION)

    def decide(promoted: bool, reason: str, new: float | None = None, old: float | None = None) -> PromotionDecision:
        decision = PromotionDecision(
            name=name, challenger_version=str(challenger.version),
            champion_version=str(champion.version) if champion is not None else None,
            promoted=promoted, metric=rule.metric, challenger_value=new, champion_value=old,
            min_improvement=rule.min_improvement, reason=reason,
        )
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, str(challenger.version))
        client.set_model_version_tag(name, str(challenger.version), "promotion", json.dumps(decision.to_dict()))
        log.info("promotion of %s v%s: %s", name, challenger.version, reason)
        return decision

    if champion is None:
        return decide(True, "no champion yet", _recorded(challenger, rule.metric)[1])
    if str(champion.version) == str(challenger.version):
        value = _recorded(challenger, rule.metric)[1]
        return decide(False, "challenger is already the champion", value, value)
    if evaluation is not None:
        # One split for both, whatever each was trained with: the same clips must score both.
        evaluation = {"split_config": SplitConfig(), "tracking_uri": tracking_uri, **evaluation}
        new = evaluate(version_uri(name, challenger.version), **evaluation)[rule.metric]
        old = evaluate(version_uri(name, champion.version), **evaluation)[rule.metric]
    else:
        (new_set, new), (old_set, old) = _recorded(challenger, rule.metric), _recorded(champion, rule.metric)
        if new is None or old is None or new_set is None or new_set != old_set:
            raise RegistryError(
                f"{name} v{challenger.version} and v{champion.version} were not evaluated on the same "
                "set; pass an evaluation set to score both"
            )
    if not (np.isfinite(new) and np.isfinite(old)):
        return decide(False, f"{rule.metric} is undefined on this evaluation set", new, old)
    gain = (new - old) if rule.higher_is_better else (old - new)
    if gain >= rule.min_improvement:
        return decide(True, f"{rule.metric} {new:.4g} vs {old:.4g}: better by {gain:.4g} >= {rule.min_improvement}", new, old)
    return decide(False, f"{rule.metric} {new:.4g} vs {old:.4g}: gain {gain:.4g} < {rule.min_improvement}", new, old)


def _task_verdict(task: str, rule: PromotionRule, new: float | None, references: list[tuple[str, float | None]]) -> dict[str, Any]:
    """One task of a multi-task challenger against its champions (`references`: label, value):
    "new" (no champion), "better" (gain >= threshold over the best champion), "worse" (the best
    champion leads by >= the threshold), "same" (within it) or "undefined" (a metric missing)."""
    verdict: dict[str, Any] = {"task": task, "metric": rule.metric, "min_improvement": rule.min_improvement,
                               "challenger_value": new, "champion": None, "champion_value": None, "gain": None}
    if not references:
        return {**verdict, "verdict": "new"}
    values = [v for _, v in references]
    if new is None or not np.isfinite(new) or any(v is None or not np.isfinite(v) for v in values):
        return {**verdict, "verdict": "undefined"}
    best_label, best = (max if rule.higher_is_better else min)(references, key=lambda ref: ref[1])
    gain = (new - best) if rule.higher_is_better else (best - new)
    kind = "better" if gain >= rule.min_improvement else "worse" if -gain >= rule.min_improvement else "same"
    return {**verdict, "champion": best_label, "champion_value": best, "gain": gain, "verdict": kind}


def promote_multitask(
    name: str,
    *,
    client: MlflowClient,
    tracking_uri: str | None = None,
    evaluation: dict[str, Any] | None = None,
    rules: dict[str, PromotionRule] = PROMOTION_RULES,
    expected_challenger: str | None = None,
) -> PromotionDecision:
    """Make the `challenger` of multi-task model `name` its `champion` if it earns it, task by task.

    The rule, kept here with the single-task thresholds it reuses (`rules`): for each of its tasks
    the challenger's head is compared with that task's single-task champion and with the current
    multi-task champion's head (the better of them); it is promoted only when no task is worse
    by the task's threshold (nor undefined) and at least one is better by it or has no champion.
    Metrics are those recorded at registration when the evaluation sets match, else both are
    re-scored on `evaluation` (as `promote`). The decision is recorded as the tag `promotion` and
    appended to the version's model card.
    """
    challenger = _challenger(client, name, expected_challenger)
    champion = _alias_version(client, name, CHAMPION)
    tasks = str((challenger.tags or {}).get("tasks", "")).split(",")
    if not all(task in TASKS for task in tasks):
        raise RegistryError(f"{name} v{challenger.version} does not record its tasks")
    champion_tasks = str((champion.tags or {}).get("tasks", "")).split(",") if champion is not None else []
    if evaluation is not None:
        evaluation = {"split_config": SplitConfig(), "tracking_uri": tracking_uri, **evaluation}
    if champion is not None and str(champion.version) == str(challenger.version):
        return PromotionDecision(name=name, challenger_version=str(challenger.version),
                                 champion_version=str(champion.version), promoted=False, metric="", challenger_value=None,
                                 champion_value=None, min_improvement=None, reason="challenger is already the champion")
    verdicts = []
    for task in tasks:
        rule = rules[task]
        # (model name, version, head): the task's single-task champion, the multi-task champion's head.
        champions = [(TASKS[task].model_name, v, None) for v in [_alias_version(client, TASKS[task].model_name, CHAMPION)] if v]
        if champion is not None and task in champion_tasks:
            champions.append((name, champion, task))
        references = []
        if evaluation is not None:
            new = evaluate(version_uri(name, challenger.version), task=task, **evaluation)[rule.metric]
            for model, version, head in champions:
                old = evaluate(version_uri(model, version.version), task=head, **evaluation)[rule.metric]
                references.append((f"{model} v{version.version}", old))
        else:
            new_set, new = _recorded(challenger, rule.metric, task)
            for model, version, head in champions:
                old_set, old = _recorded(version, rule.metric, head)
                if old_set is None or old_set != new_set:
                    raise RegistryError(f"{name} v{challenger.version} ({task}) and {model} v{version.version} were not "
                                        "evaluated on the same set; pass an evaluation set to score both")
                references.append((f"{model} v{version.version}", old))
        verdicts.append(_task_verdict(task, rule, new, references))
    blocking = [v for v in verdicts if v["verdict"] in ("worse", "undefined")]
    winning = [v for v in verdicts if v["verdict"] in ("better", "new")]
    promoted = not blocking and bool(winning)
    reason = _multitask_reason(verdicts, promoted, blocking, winning)
    decision = PromotionDecision(
        name=name, challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion is not None else None, promoted=promoted,
        metric=",".join(v["metric"] for v in verdicts), challenger_value=None, champion_value=None,
        min_improvement=None, reason=reason, per_task=tuple(verdicts),
    )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(challenger.version))
    client.set_model_version_tag(name, str(challenger.version), "promotion", json.dumps(decision.to_dict()))
    card = client.get_model_version(name, str(challenger.version)).description or ""
    client.update_model_version(name, str(challenger.version), description=card + _decision_section(decision))
    log.info("promotion of %s v%s: %s", name, challenger.version, reason)
    return decision


def _multitask_reason(verdicts: list[dict[str, Any]], promoted: bool, blocking: list[dict[str, Any]],
                      winning: list[dict[str, Any]]) -> str:
    def say(v: dict[str, Any]) -> str:
        if v["verdict"] == "new":
            return f"{v['task']} (no champion)"
        if v["verdict"] == "undefined":
            return f"{v['task']} ({v['metric']} undefined)"
        return f"{v['task']} ({v['metric']} {v['challenger_value']:.4g} vs {v['champion_value']:.4g} of {v['champion']})"

    if promoted:
        return "better on " + ", ".join(map(say, winning)) + "; worse on none"
    if blocking:
        return "worse on " + ", ".join(map(say, blocking))
    return "better on no task by its threshold: " + ", ".join(map(say, verdicts))


def _decision_section(decision: PromotionDecision) -> str:
    rows = "\n".join(
        f"| {v['task']} | {v['metric']} | {_cell(v['challenger_value'])} | {_cell(v['champion_value'])} "
        f"| {v['champion'] or '-'} | {v['min_improvement']:g} | {v['verdict']} |" for v in decision.per_task)
    outcome = "promoted to champion" if decision.promoted else "not promoted"
    return (f"\n\n## Promotion decision (v{decision.challenger_version}: {outcome})\n{decision.reason}.\n\n"
            "| task | metric | this version | best champion | champion | threshold | verdict |\n"
            f"|---|---|---|---|---|---|---|\n{rows}\n")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def registered_versions(name: str, *, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Versions of `name` with their aliases, newest first (for summaries and the CLI)."""
    client = MlflowClient(tracking_uri)
    # Search results do not carry aliases on every store; each version is fetched for them.
    found = client.search_model_versions(f"name = '{name}'")
    versions = [client.get_model_version(name, str(v.version)) for v in found]
    return [
        {"version": str(v.version), "aliases": sorted(getattr(v, "aliases", []) or []), "run_id": v.run_id}
        for v in sorted(versions, key=lambda v: int(v.version), reverse=True)
    ]


def promote_encoder(
    name: str,
    version: str,
    downstream: list[dict[str, Any]],
    *,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Make encoder `name` version `version` the `champion` when it earned it.

    The rules, kept here and in `echofm.representation.gate`: the encoder's representation
    report (its `representation` tag, recorded at registration) must pass the representation
    gate (not collapsed; frozen probes at least as good as a random encoder's), and it is judged
    by the models fine-tuned from it: at least one was, and every one of them was promoted to
    champion (each beat its own champion by `PROMOTION_RULES`, or had none). So a new encoder
    replaces the champion only if it is not collapsed and improves every task it was tried on.
    A failed gate is logged as a warning and leaves `champion` where it was.
    downstream: the promotion decisions (`PromotionDecision.to_dict()`) of those models.
    Returns `{name, version, promoted, reason, representation_gate}`.
    """
    client = MlflowClient(tracking_uri)
    recorded = (client.get_model_version(name, str(version)).tags or {}).get(REPORT_TAG)
    report_data = json.loads(recorded) if recorded else None
    gate = check_representation(RepresentationReport.from_dict(report_data) if report_data else None)
    if not downstream:
        downstream_ok, reason = False, "no downstream model was fine-tuned from it"
    else:
        beaten = [d["name"] for d in downstream if d.get("promoted")]
        kept = sorted({d["name"] for d in downstream} - set(beaten))
        downstream_ok = not kept
        reason = ("every downstream model fine-tuned from it was promoted" if downstream_ok
                  else f"downstream champions kept: {', '.join(kept)}")
    promoted = downstream_ok and gate.passed
    if not gate.passed:
        reason = f"{gate.reason}; {reason}"
        log.warning("%s v%s stays off champion: %s", name, version, gate.reason)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "promotion", json.dumps({"promoted": promoted, "reason": reason}))
    log.info("promotion of %s v%s: %s", name, version, reason)
    return {"name": name, "version": str(version), "promoted": promoted, "reason": reason,
            "representation_gate": gate.to_dict()}
