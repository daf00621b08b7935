"""MLflow registration of fine-tuned models, alias-based promotion, and the registry view classifier.

Names: `echofm-<task>` (`echofm-ef`, `echofm-view`, `echofm-reduced-ef`, `echofm-segmentation`).
Every new version gets the alias `challenger`. `promote` moves `champion` to the challenger only
when it beats the current champion on the same evaluation set by the task's threshold in
`PROMOTION_RULES` (or when there is no champion). Registry stages are not used (deprecated).

The evaluation a version is judged by is recorded on the version as tags: `eval.set` (a digest
of manifest, labels, split and task) and `eval.<metric>`. Promotion compares recorded metrics
only when both versions carry the same `eval.set`; otherwise it re-evaluates both on the
evaluation set it is given, and refuses to guess when it has none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
EXPERIMENT = "echofm-finetune"


@dataclass(frozen=True)
class PromotionRule:
    """The challenger must beat the champion's `metric` by at least `min_improvement`
    (in the metric's own units: EF MAE in percentage points, accuracy/AUROC/Dice as fractions)."""

    metric: str
    higher_is_better: bool
    min_improvement: float


# Thresholds as code: what counts as a real improvement rather than noise on a test set.
PROMOTION_RULES: dict[str, PromotionRule] = {
    "ef": PromotionRule("mae", higher_is_better=False, min_improvement=0.5),
    "view": PromotionRule("accuracy", higher_is_better=True, min_improvement=0.01),
    "reduced_ef": PromotionRule("auroc", higher_is_better=True, min_improvement=0.01),
    "segmentation": PromotionRule("dice", higher_is_better=True, min_improvement=0.01),
}


class RegistryError(RuntimeError):
    """The registry lacks what a step needs (no challenger, versions not comparable)."""


def model_name(task: str) -> str:
    """Registered model name of a task: `echofm-ef`, `echofm-reduced-ef`, ..."""
    return f"echofm-{task.replace('_', '-')}"


def parse_model_uri(uri: str) -> tuple[str, str]:
    """`models:/NAME/VERSION` -> (NAME, VERSION); RegistryError for other forms."""
    match = re.fullmatch(r"models:/([^/@]+)/(\d+)", uri)
    if not match:
        raise RegistryError(f"{uri!r} is not a models:/NAME/VERSION URI")
    return match.group(1), match.group(2)


def task_of(name: str) -> str:
    """Inverse of `model_name`."""
    match = re.fullmatch(r"echofm-(.+)", name)
    if not match:
        raise RegistryError(f"{name!r} is not an echofm-<task> model name")
    task = match.group(1).replace("-", "_")
    if task not in PROMOTION_RULES:
        raise RegistryError(f"{name!r} names no known task")
    return task


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str  # models:/NAME/VERSION


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


@contextmanager
def tracking_uri_scope(uri: str | None) -> Iterator[None]:
    """Use `uri` (when given) as MLflow's tracking URI inside the block, then restore the
    previous one. `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI to the environment,
    so setting it for good would redirect every later MLflow user in the process."""
    import mlflow
    from mlflow.tracking import is_tracking_uri_set

    if not uri:
        yield
        return
    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def resolve_tracking_uri(run_dir: str | os.PathLike[str]) -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite file in `run_dir` (created on first use)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def default_tracking_uri(encoder: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str] | None) -> str:
    """Where fine-tuning records go when not told: `MLFLOW_TRACKING_URI`; else the pretraining
    run's own store (`<RUN_DIR>/mlflow.db` beside the encoder), so the downstream models sit in
    the same registry as `echofm-encoder`; else `<out_dir>/mlflow.db`."""
    if encoder is not None and not str(encoder).startswith(("models:/", "runs:/")):
        path = Path(encoder)
        for directory in (path, path.parent, path.parent.parent):
            if (directory / "mlflow.db").is_file():
                return resolve_tracking_uri(directory)
    if out_dir is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise RegistryError("no tracking URI: set MLFLOW_TRACKING_URI or pass one")
    return resolve_tracking_uri(out_dir)


def evaluation_set_digest(manifest_digest: str | None, labels_digest: str | None, split: dict, task: str, split_name: str = "test") -> str:
    """Identity of an evaluation set: same digest = same clips, labels and split."""
    payload = json.dumps([manifest_digest, labels_digest, split, task, split_name], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _arm_test(summary: dict[str, Any], arm: str) -> dict[str, float]:
    record = summary.get(arm) or {}
    return dict((record.get("metrics") or {}).get("test") or {})


def model_card(summary: dict[str, Any], name: str, head_kind: str) -> str:
    """Markdown description of a fine-tuned version (data, metrics, intended use, limits), from
    the run summary a fine-tuned checkpoint carries (`FinetuneResult.summary()`)."""
    cfg, counts = summary["config"], summary["counts"]
    test, rand = _arm_test(summary, "pretrained"), _arm_test(summary, "random_init")
    rows = "\n".join(
        f"| {k} | {v:.4g} | {rand.get(k, float('nan')):.4g} |" for k, v in sorted(test.items())
    )
    classes = summary["task"].get("classes") or []
    class_text = f" Classes: {', '.join(classes)}." if classes else ""
    return f"""# {name}

EchoFM downstream model for **{cfg['task']}** ({cfg['strategy']} strategy, {head_kind} head).{class_text}

## Data
Encoder: `{summary['encoder_source']}` (pretraining run `{summary['parent_run_id']}`). Manifest digest
`{summary['manifest_digest']}`. Clips (patients) per split, split by patient (seed {cfg['split']['seed']}):
train {counts['train']['clips']} ({counts['train']['patients']}), val {counts['val']['clips']}
({counts['val']['patients']}), test {counts['test']['clips']} ({counts['test']['patients']}).

## Metrics (test split)
| metric | pretrained encoder | random-init encoder (same head, split, epochs) |
|---|---|---|
{rows}

## Intended use
Research on echocardiography representation learning and as a pipeline component (e.g. view
filtering of ingested clips). Input: raw uint8 clips, grey `[N, T, H, W]` or `[N, T, H, W, C]`
(C = 1 or 3), or a 1-D object array of clips `[T, H, W(, C)]` of different sizes; T >= 16, about one cardiac
cycle; resampling, resize-pad and normalisation happen inside.

## Limits
Not a medical device; not validated for clinical decisions. Trained on the archive named above
(possibly synthetic); performance on other scanners, views or populations is unknown. Frames
are sampled evenly over the whole input clip, which carries no frame rate: pass one cycle.
"""


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
    tags. Everything comes from the checkpoint file, so this step runs on its own."""
    from echofm.downstream.model import load_downstream

    path = getattr(checkpoint, "checkpoint", checkpoint)
    if path is None or not Path(path).is_file():
        raise RegistryError(f"no fine-tuned checkpoint to register at {path}")
    loaded = load_downstream(path)
    with tracking_uri_scope(tracking_uri):
        return _log_and_register(Path(path), loaded.model, loaded.meta, experiment=experiment, name=name,
                                 labels_digest=labels_digest)


def _log_and_register(path: Path, model: Any, summary: dict[str, Any], *, experiment: str, name: str | None,
                      labels_digest: str | None) -> RegisteredVersion:
    import mlflow
    from mlflow import MlflowClient

    from echofm.registry.pyfunc import log_pyfunc
    from echofm.pretrain.tracker import code_version, default_artifact_location

    uri = mlflow.get_tracking_uri()
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=default_artifact_location(uri))
    mlflow.set_experiment(experiment)
    cfg = summary["config"]
    name = name or model_name(cfg["task"])
    eval_set = evaluation_set_digest(summary["manifest_digest"], labels_digest, cfg["split"], cfg["task"])
    provenance = {
        "task": cfg["task"],
        "strategy": cfg["strategy"],
        "manifest_digest": str(summary["manifest_digest"]),
        "code_version": code_version(),
        "parent_run_id": str(summary["parent_run_id"]),
        "encoder_source": str(summary["encoder_source"]),
    }
    with mlflow.start_run(run_name=f"{name}-{cfg['strategy']}") as run:
        params = {k: str(v) for k, v in cfg.items() if k != "split"}
        params.update({f"split_{k}": str(v) for k, v in cfg["split"].items()})
        mlflow.log_params(params)
        for arm in ("pretrained", "random_init"):
            record = summary.get(arm)
            if not record:
                continue
            for split, values in record["metrics"].items():
                mlflow.log_metrics({f"{arm}/{split}_{k}": v for k, v in values.items() if np.isfinite(v)})
            for epoch in record["history"]:
                mlflow.log_metrics({f"{arm}/{k}": v for k, v in epoch.items() if k != "epoch" and np.isfinite(v)},
                                   step=int(epoch["epoch"]))
        mlflow.set_tags(provenance)
        mlflow.log_dict(summary, "result.json")
        info = log_pyfunc(model, path, registered_model_name=name)
        run_id = run.info.run_id
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.update_model_version(name, version, description=model_card(summary, name, model.head.config.kind))
    tags = {
        **provenance,
        "eval.set": eval_set,
        **{f"eval.{k}": repr(float(v)) for k, v in _arm_test(summary, "pretrained").items()},
        **{f"eval.random_init.{k}": repr(float(v)) for k, v in _arm_test(summary, "random_init").items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    log.info("registered %s version %s (alias %s)", name, version, CHALLENGER)
    return RegisteredVersion(name=name, version=version, run_id=run_id, model_uri=f"models:/{name}/{version}")


def _alias_version(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

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

    evaluation: keyword arguments for `echofm.downstream.evaluate.evaluate` (shards, labels, manifest,
    split, split_config (default `SplitConfig()`), ...) naming the evaluation set both versions
    are scored on; without it the metrics
    recorded at registration are compared, which requires both to carry the same `eval.set`.
    expected_challenger: the version a pipeline just registered; when the alias has moved to
    another version since, nothing is promoted (RegistryError).
    Raises RegistryError when there is no challenger or the versions are not comparable.
    """
    with tracking_uri_scope(tracking_uri):
        return _promote(name, evaluation=evaluation, rules=rules, expected_challenger=expected_challenger)


def _promote(name: str, *, evaluation: dict[str, Any] | None, rules: dict[str, PromotionRule],
             expected_challenger: str | None) -> PromotionDecision:
    from mlflow import MlflowClient

    client = MlflowClient()
    rule = rules[task_of(name)]
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
        from echofm.downstream.evaluate import evaluate
        from echofm.downstream.splits import SplitConfig

        # One split for both, whatever each was trained with: the same clips must score both.
        evaluation = {"split_config": SplitConfig(), **evaluation}
        new = evaluate(f"models:/{name}/{challenger.version}", **evaluation)[rule.metric]
        old = evaluate(f"models:/{name}/{champion.version}", **evaluation)[rule.metric]
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


class RegistryViewClassifier:
    """The registered view model as an ingestion `ViewClassifier` (`echofm.ingest.views`).

    `classify(meta, frames)` runs on the masked, resized first window uint8 `[T, H, W, C]`;
    `classify_frames(frames)` returns `(view, confidence)`. Views the model was not trained on
    cannot come out; a class name outside the canonical list is reported as OTHER_CARDIAC.
    Load lazily, so a worker process builds its own copy on first use.
    """

    needs_pixels = True

    def __init__(self, model_uri: str = "models:/echofm-view@champion", *, tracking_uri: str | None = None) -> None:
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from echofm.downstream.evaluate import load_model

            self._model = load_model(self.model_uri, tracking_uri=self.tracking_uri).eval()
        return self._model

    def classify_frames(self, frames: np.ndarray) -> tuple[str, float]:
        from echofm.registry.pyfunc import predict_clips

        frame = predict_clips(self._load(), np.asarray(frames)[None])
        return str(frame["view"].iloc[0]), float(frame["confidence"].iloc[0])

    def classify(self, meta: Any, frames: np.ndarray | None = None) -> Any:
        from echofm.ingest.views import CANONICAL_VIEWS, ViewPrediction

        if frames is None:
            raise RegistryError("the registry view classifier needs pixels")
        view, confidence = self.classify_frames(frames)
        view = view if view in CANONICAL_VIEWS else "OTHER_CARDIAC"
        return ViewPrediction(view, f"model:{self.model_uri}", min(max(confidence, 0.0), 1.0))


def champion_view_classifier() -> RegistryViewClassifier:
    """Factory for ingestion's "module:callable" spec:
    `echofm.registry.register:champion_view_classifier` (tracking URI from MLFLOW_TRACKING_URI)."""
    return RegistryViewClassifier()


def registered_versions(name: str, *, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Versions of `name` with their aliases, newest first (for summaries and the CLI)."""
    from mlflow import MlflowClient

    with tracking_uri_scope(tracking_uri):
        client = MlflowClient()
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
    """Make encoder `name` version `version` the `champion` when it earned it downstream.

    The rule, kept here: an encoder is judged by the models fine-tuned from it. It becomes
    champion only when at least one downstream model was fine-tuned from it and every one of them
    was promoted to champion (each beat its own champion by `PROMOTION_RULES`, or had none). So a
    new encoder replaces the champion only if it improves every task it was tried on.
    downstream: the promotion decisions (`PromotionDecision.to_dict()`) of those models.
    Returns `{name, version, promoted, reason}`.
    """
    from mlflow import MlflowClient

    if not downstream:
        promoted, reason = False, "no downstream model was fine-tuned from it"
    else:
        beaten = [d["name"] for d in downstream if d.get("promoted")]
        kept = sorted({d["name"] for d in downstream} - set(beaten))
        promoted = not kept
        reason = ("every downstream model fine-tuned from it was promoted" if promoted
                  else f"downstream champions kept: {', '.join(kept)}")
    with tracking_uri_scope(tracking_uri):
        client = MlflowClient()
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, str(version))
        client.set_model_version_tag(name, str(version), "promotion", json.dumps({"promoted": promoted, "reason": reason}))
    log.info("promotion of %s v%s: %s", name, version, reason)
    return {"name": name, "version": str(version), "promoted": promoted, "reason": reason}
