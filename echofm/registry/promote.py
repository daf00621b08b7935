"""Alias-based promotion: `champion` moves to the `challenger` only when it earns it.

A downstream model's challenger becomes champion when it beats the current champion on the same
evaluation set by its task's threshold (`Task.promotion`, collected in `PROMOTION_RULES`), or
when there is no champion. Promotion compares the metrics recorded at registration only when
both versions carry the same `eval.set` tag; otherwise it re-evaluates both on the evaluation
set it is given, and refuses to guess when it has none. An encoder is judged by the models
fine-tuned from it (`promote_encoder`). Every decision is recorded on the version as the tag
`promotion`.
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
    min_improvement: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _alias_version(client: MlflowClient, name: str, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _recorded(version: Any, metric: str) -> tuple[str | None, float | None]:
    tags = version.tags or {}
    value = tags.get(f"eval.{metric}")
    return tags.get("eval.set"), (float(value) if value is not None else None)


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
    """
    client = MlflowClient(tracking_uri)
    try:
        rule = rules[TASKS.by_model_name(name).name]
    except TaskError as exc:
        raise RegistryError(str(exc)) from None
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no '{CHALLENGER}' version to promote")
    if expected_challenger is not None and str(challenger.version) != str(expected_challenger):
        raise RegistryError(f"{name}@{CHALLENGER} is version {challenger.version}, not {expected_challenger}")
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
