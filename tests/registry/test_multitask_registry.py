"""A multi-task model in a real MLflow registry (SQLite store): one pyfunc for every task, per-task promotion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from echofm.bench.predict import load_model
from echofm.data.loader import file_digest
from echofm.downstream.config import FinetuneConfig
from echofm.downstream.finetune import finetune
from echofm.downstream.multitask.config import multitask_model_name
from echofm.downstream.splits import SplitConfig
from echofm.registry.promote import PROMOTION_RULES, promote
from echofm.registry.pyfunc import predict_clips
from echofm.registry.register import log_and_register
from echofm.store import CHALLENGER, CHAMPION, tracking_uri_scope
from tests.factories.downstream import MULTITASK_TASKS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
NAME = multitask_model_name(MULTITASK_TASKS)


@pytest.fixture(scope="module")
def registry(multitask_run, downstream_archive, tmp_path_factory):
    """A store holding single-task champions for ef and view (trained on the same partial labels
    and split as the multi-task run) and the multi-task model as challenger."""
    result, labels = multitask_run
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    digest = file_digest(labels)
    singles = {}
    for task in ("ef", "view"):
        single = finetune(FinetuneConfig(task=task, epochs=2, split=SplitConfig(seed=1), compare="none"),
                          encoder=downstream_archive.encoder_path, shards=downstream_archive.shards, labels=labels,
                          manifest=downstream_archive.manifest_path, out_dir=tmp_path_factory.mktemp(task))
        log_and_register(single, tracking_uri=uri, labels_digest=digest)
        assert promote(single_name(task), tracking_uri=uri).promoted
        singles[task] = single
    registered = log_and_register(result, tracking_uri=uri, labels_digest=digest)
    return uri, registered, singles


def single_name(task: str) -> str:
    from echofm.downstream.tasks import TASKS

    return TASKS[task].model_name


def test_registered_multitask_model_answers_every_task_for_raw_clips(registry, multitask_run) -> None:
    import mlflow
    from mlflow import MlflowClient

    uri, registered, _ = registry
    result, _ = multitask_run
    assert registered.name == NAME and registered.model_uri == f"models:/{NAME}/1"
    with tracking_uri_scope(uri):
        version = MlflowClient().get_model_version(NAME, registered.version)
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHALLENGER}")
        rng = np.random.default_rng(3)
        clips = np.empty(2, dtype=object)  # clips of different lengths and sizes, grey and colour
        clips[0] = rng.integers(0, 255, size=(18, 44, 60), dtype=np.uint8)
        clips[1] = rng.integers(0, 255, size=(30, 50, 50, 3), dtype=np.uint8)
        out = model.predict(clips)
        run = MlflowClient().get_run(registered.run_id)
    assert version.tags["tasks"] == ",".join(MULTITASK_TASKS)
    for task in MULTITASK_TASKS:
        assert f"eval.{task}.set" in version.tags and f"eval.single_task.{task}.{result.tasks[task].primary_metric[0]}" in version.tags
        metric = result.tasks[task].primary_metric[0]
        # MLflow takes finite metrics only (AUROC is undefined on a one-class test split).
        assert (f"multitask/{task}/test_{metric}" in run.data.metrics) == bool(np.isfinite(result.test_metrics[task][metric]))
    card = version.description
    assert "single-task" in card and "random-init" in card and "## Promotion" in card
    assert all(f"| {task} |" in card for task in MULTITASK_TASKS)
    expected = predict_clips(result.model, list(clips))
    assert list(out) == list(expected)
    np.testing.assert_allclose(out["ef.value"], expected["ef.value"], rtol=1e-5)
    assert list(out["view.class"]) == list(expected["view.class"])
    assert [m.shape for m in out["segmentation.masks"]] == [(8, 44, 60), (8, 50, 50)]  # each at its clip's size
    np.testing.assert_array_equal(out["reduced_ef.positive"], expected["reduced_ef.positive"])


def test_multitask_column_groups_have_the_single_task_schemas(registry, multitask_run) -> None:
    """Each task's column group of the multi-task pyfunc has the names, order and dtypes of the
    registered single-task pyfunc's answer (and of its signature), so a scorer can use either."""
    import mlflow

    uri, _, _ = registry
    clips = np.random.default_rng(4).integers(0, 255, size=(3, 20, 40, 40), dtype=np.uint8)
    with tracking_uri_scope(uri):
        joint = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHALLENGER}")
        joint_names = joint.metadata.get_output_schema().input_names()
        out = joint.predict(clips)
        for task in ("ef", "view"):
            single = mlflow.pyfunc.load_model(f"models:/{single_name(task)}@{CHAMPION}")
            alone = single.predict(clips)
            names = single.metadata.get_output_schema().input_names()
            assert list(alone.columns) == names, task
            start = joint_names.index(names[0])
            assert joint_names[start:start + len(names)] == names, task
            for name in names:
                column = np.asarray(out[name])
                assert column.shape == (len(clips),) and column.dtype.kind == alone[name].to_numpy().dtype.kind, name
    assert set(out) == set(joint_names)
    # `echofm bench predict` reads the registered pyfunc's model itself.
    assert load_model(f"models:/{NAME}@{CHALLENGER}", uri).tasks == MULTITASK_TASKS


def test_multitask_model_worse_on_one_task_is_refused(registry, multitask_run) -> None:
    from mlflow import MlflowClient

    uri, registered, singles = registry
    result, _ = multitask_run
    # Make EF a task the challenger loses on, by the rule's own arithmetic: the direction in which
    # its recorded MAE trails the single-task champion's, at a threshold it cannot meet.
    new, old = result.test_metrics["ef"]["mae"], singles["ef"].test_metrics["mae"]
    assert new != old
    lenient = {task: replace(rule, min_improvement=-1e6) for task, rule in PROMOTION_RULES.items()}
    worse_on_ef = {**lenient, "ef": replace(PROMOTION_RULES["ef"], higher_is_better=new < old, min_improvement=1e-9)}
    refused = promote(NAME, tracking_uri=uri, rules=worse_on_ef)
    assert not refused.promoted and refused.reason.startswith("worse on ef")
    verdicts = {v["task"]: v for v in refused.per_task}
    assert verdicts["ef"]["verdict"] == "worse" and verdicts["ef"]["champion"] == f"{single_name('ef')} v1"
    assert verdicts["ef"]["champion_value"] == pytest.approx(old) and verdicts["ef"]["challenger_value"] == pytest.approx(new)
    assert verdicts["segmentation"]["verdict"] == "new"  # no segmentation champion
    with tracking_uri_scope(uri):
        client = MlflowClient()
        assert not any(CHAMPION in (v.aliases or []) for v in client.search_model_versions(f"name = '{NAME}'"))

    # The code's thresholds: promoted exactly when no task is worse by its threshold (and one is
    # better, or new: segmentation has no champion).
    decided = promote(NAME, tracking_uri=uri)
    worse = [v["task"] for v in decided.per_task if v["verdict"] in ("worse", "undefined")]
    assert decided.promoted == (not worse)
    for v in decided.per_task:
        if v["verdict"] in ("better", "worse", "same"):
            rule = PROMOTION_RULES[v["task"]]
            gain = (v["challenger_value"] - v["champion_value"]) * (1 if rule.higher_is_better else -1)
            assert (v["verdict"] == "worse") == (gain < 0 and -gain >= rule.min_improvement)
    if not decided.promoted:
        decided = promote(NAME, tracking_uri=uri, rules=lenient)
    assert decided.promoted
    with tracking_uri_scope(uri):
        champion = MlflowClient().get_model_version_by_alias(NAME, CHAMPION)
    assert str(champion.version) == registered.version and "## Promotion decision" in champion.description
    assert promote(NAME, tracking_uri=uri).reason == "challenger is already the champion"
