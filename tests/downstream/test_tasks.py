"""The task registry: every registered task is consistent with its kind, and a new task is one
definition (the recipe of docs/architecture.md, exercised end to end on the small archive)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from echofm.downstream.dataset import build_task_data
from echofm.downstream.finetune import FinetuneConfig, finetune
from echofm.downstream.objectives import OBJECTIVES, TaskSpec
from echofm.downstream.splits import SplitConfig
from echofm.downstream.task import KINDS, PromotionRule, Task, TaskError, TaskRegistry
from echofm.downstream.tasks import TASKS
from echofm.model.heads import HeadConfig, build_head
from echofm.preprocess.clips import InputSpec
from echofm.registry.pyfunc import predict_clips, signature_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPLIT = SplitConfig(seed=1)


def _random_outputs(spec: TaskSpec, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
    """Raw head outputs and matching targets of `n` clips for a task of any kind."""
    kind = spec.definition.kind
    if kind == "segmentation":
        output = torch.from_numpy(rng.normal(size=(n, 4, 8, 8)).astype(np.float32))
        targets = (rng.random((n, 4, 8, 8)) > 0.5).astype(np.uint8)
        return output, targets, np.ones((n, 4), dtype=bool)
    output = torch.from_numpy(rng.normal(size=(n, spec.out_dim)).astype(np.float32))
    if kind == "regression":
        return output, rng.normal(50, 10, size=(n, spec.out_dim)).astype(np.float32), None
    if kind == "binary":
        return output, np.arange(n) % 2, None
    return output, np.arange(n) % spec.out_dim, None


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_scores_what_its_kind_promises_and_is_judged_by_one_of_them(name: str) -> None:
    task = TASKS[name]
    spec = TaskSpec(task=name, classes=("a", "b", "c") if task.kind == "multiclass" else ())
    output, targets, valid = _random_outputs(spec, 6, np.random.default_rng(0))
    loss = spec.loss(output, torch.as_tensor(targets), None if valid is None else torch.from_numpy(valid))
    assert loss.ndim == 0 and torch.isfinite(loss)
    scores = spec.score(spec.decode(output), targets, valid)
    promised = set(KINDS[task.kind].metrics)
    if len(task.outputs) > 1:  # several measurements: the mean of each metric, and each one by name
        promised |= {f"{output}_{metric}" for output in task.outputs for metric in KINDS[task.kind].metrics}
    assert set(scores) == promised
    assert task.primary_metric in scores
    assert TASKS.by_model_name(task.model_name) is task
    assert set(OBJECTIVES) == set(KINDS)


def test_definitions_that_contradict_their_kind_are_refused() -> None:
    rule = PromotionRule("accuracy", higher_is_better=True, min_improvement=0.01)
    with pytest.raises(TaskError, match="report"):
        Task(name="x", title="x", kind="regression", label_columns=("x",), promotion=rule)
    with pytest.raises(TaskError, match="kind"):
        Task(name="x", title="x", kind="ordinal", label_columns=("x",), promotion=rule)
    with pytest.raises(TaskError, match="two or more"):
        Task(name="x", title="x", kind="multiclass", label_columns=("x",), classes=("only",), promotion=rule)
    registry = TaskRegistry()
    registry.register(Task(name="x", title="x", kind="multiclass", label_columns=("x",), promotion=rule))
    with pytest.raises(TaskError, match="twice"):
        registry.register(Task(name="x", title="x", kind="multiclass", label_columns=("y",), promotion=rule))
    with pytest.raises(TaskError, match="unknown task"):
        registry["y"]


def ef_severity(columns) -> pd.Series:  # noqa: ANN001 - a LabelColumns
    """Three classes from the EF column, the way aortic stenosis grades come from one column."""
    ef = columns("ef").astype(float)
    return pd.cut(ef, [0, 35, 50, 100], labels=["severe", "moderate", "normal"]).astype(object).where(ef.notna())


@pytest.fixture
def severity_task() -> Iterator[Task]:
    """A new three-class task registered the way `echofm/downstream/tasks.py` registers one."""
    task = TASKS.register(Task(
        name="ef_severity", title="EF grade", kind="multiclass", label_columns=("ef",), target=ef_severity,
        classes=("normal", "moderate", "severe"),
        promotion=PromotionRule("accuracy", higher_is_better=True, min_improvement=0.01),
    ))
    yield task
    TASKS.remove(task.name)


def test_a_new_task_is_one_definition(severity_task: Task, downstream_archive, tmp_path) -> None:
    config = FinetuneConfig(task=severity_task.name, epochs=1, split=SPLIT, compare="none")
    result = finetune(config, encoder=downstream_archive.encoder_path, shards=downstream_archive.shards,
                      labels=downstream_archive.labels_path, manifest=downstream_archive.manifest_path,
                      out_dir=tmp_path / "severity")
    assert result.task.classes == severity_task.classes  # the definition's order, not the data's
    assert set(result.test_metrics) == {"accuracy", "macro_f1", "macro_auroc"}
    clips = np.random.default_rng(0).integers(0, 255, size=(2, 20, 40, 56, 1), dtype=np.uint8)
    frame = predict_clips(result.model, clips)
    assert list(frame.columns) == ["ef_severity.class", "ef_severity.confidence", "ef_severity.prob_normal",
                                   "ef_severity.prob_moderate", "ef_severity.prob_severe"]
    assert set(frame["ef_severity.class"]) <= set(severity_task.classes)
    assert signature_for(result.model).outputs.input_names() == list(frame.columns)
    assert severity_task.model_name == "echofm-ef-severity"


@pytest.fixture
def two_output_task() -> Iterator[Task]:
    """A regression of two measurements at once (as LV wall thicknesses would be)."""
    task = TASKS.register(Task(
        name="ef_and_rate", title="EF and heart rate", kind="regression", label_columns=("ef", "heart_rate_bpm"),
        outputs=("ef", "heart_rate_bpm"), promotion=PromotionRule("mae", higher_is_better=False, min_improvement=0.5),
    ))
    yield task
    TASKS.remove(task.name)


def test_regression_of_several_outputs(two_output_task: Task, downstream_archive, tmp_path) -> None:
    spec = InputSpec(num_frames=8, img_size=32)
    data = build_task_data(task=two_output_task.name, manifest=downstream_archive.manifest_path,
                           labels=downstream_archive.labels_path, shards_dir=downstream_archive.shards,
                           spec=spec, split_config=SPLIT)
    assert data.targets.shape == (len(data.clip_ids), 2)
    np.testing.assert_allclose(data.targets[:, 1], 60.0)
    config = FinetuneConfig(task=two_output_task.name, epochs=1, split=SPLIT, compare="none")
    result = finetune(config, encoder=downstream_archive.encoder_path, shards=downstream_archive.shards,
                      labels=downstream_archive.labels_path, manifest=downstream_archive.manifest_path)
    assert {"mae", "ef_mae", "heart_rate_bpm_mae"} <= set(result.test_metrics)
    assert result.task.target_std[1] == 1.0  # a constant target is not scaled by zero
    frame = predict_clips(result.model, np.zeros((1, 16, 30, 40), dtype=np.uint8))
    assert list(frame.columns) == ["ef_and_rate.ef", "ef_and_rate.heart_rate_bpm"]


def test_segmentation_of_several_structures() -> None:
    spec = TaskSpec(task="segmentation", classes=("lv_endo", "lv_myo", "la"))
    assert spec.out_dim == 4  # background + three structures
    head = build_head(HeadConfig(kind="segmentation", embed_dim=16, out_dim=spec.out_dim, grid=(2, 2, 2),
                                 num_frames=4, img_size=8, patch_size=4))
    output = head(torch.randn(2, 1 + 8, 16))
    assert output.shape == (2, 4, 4, 8, 8)
    target = torch.randint(0, 4, (2, 4, 8, 8))
    valid = torch.tensor([[True, False, True, False]] * 2)
    loss = spec.loss(output, target, valid)
    assert loss.ndim == 0 and torch.isfinite(loss)
    predictions = spec.decode(output)
    scores = spec.score(predictions, target.numpy(), valid.numpy())
    assert {"dice", "dice_lv_endo", "dice_lv_myo", "dice_la"} == set(scores)
    # A perfect prediction scores 1 on every structure.
    perfect = torch.nn.functional.one_hot(target, 4).permute(0, 4, 1, 2, 3).float() * 20
    assert spec.score(spec.decode(perfect), target.numpy(), valid.numpy())["dice"] == pytest.approx(1.0)
    answer = spec.objective.outputs(spec, spec.decode(perfect), [np.zeros((4, 6, 8, 1), np.uint8)] * 2,
                                    np.zeros((2, 4), np.int64), 0.5)
    assert answer["segmentation.masks"].shape == (2, 4, 6, 8) and answer["segmentation.masks"].max() <= 3


def test_the_new_public_dataset_tasks_are_registered() -> None:
    lvh, stenosis = TASKS["lvh"], TASKS["aortic_stenosis"]
    assert lvh.kind == "regression" and lvh.outputs == ("ivs_mm", "lvid_mm", "lvpw_mm")
    assert stenosis.classes == ("none", "non_significant", "significant")
    assert (lvh.model_name, stenosis.model_name) == ("echofm-lvh", "echofm-aortic-stenosis")
