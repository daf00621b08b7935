"""Multi-task fine-tuning on the generated archive with partial labels: data, gradients, report, outputs."""

from __future__ import annotations

import argparse
import copy
import json
import typing

import numpy as np
import pandas as pd
import pytest
import torch

from echofm.downstream.config import FinetuneConfig, FinetuneConfigError
from echofm.downstream.dataset import build_task_data
from echofm.downstream.encoder import load_encoder
from echofm.downstream.evaluate import EvaluationError, evaluate, evaluate_tasks
from echofm.downstream.finetune import finetune, fit_task_spec, head_config, input_spec_for
from echofm.downstream.multitask.balancing import BALANCERS, make_balancer
from echofm.downstream.multitask.config import LossBalance, MultitaskConfig, multitask_model_name, parse_tasks
from echofm.downstream.multitask.data import build_joint_data
from echofm.downstream.multitask.model import MultiTaskModel, load_fine_tuned
from echofm.downstream.multitask.train import JointBatches, joint_losses
from echofm.downstream.objectives import joined_columns
from echofm.downstream.splits import SplitConfig
from echofm.downstream.task import TaskError
from echofm.model.heads import build_head
from echofm.preprocess.clips import to_model_input
from echofm.registry.pyfunc import predict_clips, signature_for
from tests.factories.downstream import ENCODER_OVERRIDES, MULTITASK_TASKS, partial_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPLIT = SplitConfig(seed=1)


def test_task_lists_names_and_weights_are_checked() -> None:
    assert parse_tasks("ef, view") == ("ef", "view")
    for bad in ("ef,ejection", "ef,,view", "ef,ef"):
        with pytest.raises(TaskError):
            parse_tasks(bad)
    # One registered model per set of tasks, whatever order they were given in.
    assert multitask_model_name(("reduced_ef", "ef")) == multitask_model_name(("ef", "reduced_ef")) == "echofm-multitask-ef-reduced-ef"
    assert set(typing.get_args(LossBalance)) == set(BALANCERS)
    config = MultitaskConfig(tasks=("view", "ef"), loss_weights=(2.0, 0.5))
    assert config.weights == {"view": 2.0, "ef": 0.5}
    for bad in ({"tasks": ("ef",)}, {"tasks": ("ef", "view"), "loss_weights": (1.0,)},
                {"tasks": ("ef", "view"), "loss_weights": (0.0, 0.0)}, {"tasks": ("ef", "view"), "head": "segmentation"}):
        with pytest.raises(FinetuneConfigError):
            MultitaskConfig(**bad)


def test_balancers_weigh_each_task_loss() -> None:
    losses = {"ef": torch.tensor(4.0), "view": torch.tensor(0.5)}
    assert float(make_balancer("fixed", {"ef": 1.0, "view": 2.0})(losses)) == pytest.approx(5.0)
    initial = make_balancer("initial", {"ef": 1.0, "view": 1.0})
    initial.start({"ef": 8.0, "view": 0.25})
    assert float(initial(losses)) == pytest.approx(0.5 + 2.0)
    # A batch without a view label: only EF's term.
    assert float(initial({"ef": torch.tensor(4.0)})) == pytest.approx(0.5)
    uncertainty = make_balancer("uncertainty", {"ef": 1.0, "view": 1.0})
    total = uncertainty(losses)
    total.backward()
    # d/ds (exp(-s) L + s) at s = 0 is 1 - L: a large loss pushes its weight down.
    assert float(uncertainty.log_vars["ef"].grad) == pytest.approx(1 - 4.0)
    assert float(uncertainty.log_vars["view"].grad) == pytest.approx(1 - 0.5)
    with pytest.raises(FinetuneConfigError):
        initial.start({"ef": 0.0})


def _joint_data(archive, tasks=MULTITASK_TASKS):
    loaded = load_encoder(archive.encoder_path)
    inputs = input_spec_for(loaded, archive.shards, archive.manifest_path)
    data = build_joint_data(tasks=tasks, manifest=archive.manifest_path, labels=partial_labels(archive),
                            shards_dir=archive.shards, spec=inputs, split_config=SPLIT)
    return loaded, inputs, data


def test_joint_data_reads_each_clip_once_with_each_tasks_split(downstream_archive) -> None:
    _, inputs, data = _joint_data(downstream_archive)
    labels = pd.read_csv(partial_labels(downstream_archive))
    assert len(data.clip_ids) == len(set(data.clip_ids)) == len(labels)  # every clip has a view label
    assert len(data.labels["ef"].rows) == int(labels["ef"].notna().sum())
    assert len(data.labels["segmentation"].rows) == int(labels["mask_file"].notna().sum()) < len(labels) / 3
    for task in ("ef", "segmentation"):
        alone = build_task_data(task=task, manifest=downstream_archive.manifest_path, labels=partial_labels(downstream_archive),
                                shards_dir=downstream_archive.shards, spec=inputs, split_config=SPLIT)
        joint = data.task_data(task)
        # The rows, split and targets a single-task run of the task uses.
        assert joint.clip_ids == alone.clip_ids and list(joint.split) == list(alone.split)
        np.testing.assert_array_equal(joint.targets, alone.targets)
        np.testing.assert_array_equal(joint.clips, alone.clips)
    train = data.lookup("train")
    # A clip without an EF label is used for the other tasks only.
    missing_ef = [i for i, c in enumerate(data.clip_ids) if c not in set(data.task_data("ef").clip_ids)]
    assert missing_ef and (train["ef"][missing_ef] == -1).all()


def test_each_head_gets_gradient_only_from_clips_labelled_for_its_task(downstream_archive) -> None:
    """Full fine-tuning path: encoder pass with gradient, every head on its labelled clips."""
    loaded, inputs, data = _joint_data(downstream_archive)
    config = MultitaskConfig(tasks=MULTITASK_TASKS, strategy="full", split=SPLIT)
    specs = {task: fit_task_spec(task, labels.targets, labels.classes) for task, labels in data.labels.items()}
    torch.manual_seed(0)
    heads = {task: build_head(head_config(config.for_task(task), loaded.model, spec)) for task, spec in specs.items()}
    model = MultiTaskModel(copy.deepcopy(loaded.model), heads, specs, inputs)
    everything = {}  # every labelled clip, whatever its split
    for task, labels in data.labels.items():
        everything[task] = np.full(len(data.clip_ids), -1, dtype=np.int64)
        everything[task][labels.rows] = np.arange(len(labels.rows))
    batches = JointBatches(data, inputs, None, torch.device("cpu"))
    seg_rows = data.labels["segmentation"].rows
    ef_rows = set(data.labels["ef"].rows.tolist())
    without = [i for i in range(len(data.clip_ids)) if i not in ef_rows and i not in set(seg_rows)]
    idx = np.array([*sorted(ef_rows - set(seg_rows))[:4], *seg_rows[:2], *without[:4]])
    assert len(idx) == 10 and len(set(idx)) == 10

    def head_grads(video: torch.Tensor, batch: np.ndarray) -> tuple[dict, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        losses, _, used = joint_losses(model, model.encode(video), batch, everything, batches)
        sum(losses.values()).backward()
        grads = {task: torch.cat([p.grad.flatten() for p in head.parameters()]) if any(p.grad is not None for p in head.parameters()) else None
                 for task, head in model.heads.items()}
        return used, grads

    video = to_model_input(data.clips[idx], inputs)
    used, grads = head_grads(video, idx)
    assert {task: len(rows) for task, rows in used.items()} == {
        task: int(np.isin(idx, labels.rows).sum()) for task, labels in data.labels.items()}
    assert model.encoder.patch_embed.proj.weight.grad is not None
    # Replace every clip that has no EF label (and no mask) with noise: the EF and segmentation
    # heads' gradients do not move; the view head's, which those clips are labelled for, does.
    unlabelled = torch.from_numpy(~np.isin(idx, list(ef_rows)) & ~np.isin(idx, seg_rows))
    noisy = video.clone()
    noisy[unlabelled] = torch.randn_like(noisy[unlabelled])
    _, noisy_grads = head_grads(noisy, idx)
    for task in ("ef", "reduced_ef", "segmentation"):
        torch.testing.assert_close(noisy_grads[task], grads[task])
    assert not torch.allclose(noisy_grads["view"], grads["view"])
    # A batch where no clip has a mask: the segmentation head runs on nothing and gets no gradient.
    no_masks = np.array([i for i in range(len(data.clip_ids)) if i not in set(seg_rows)][:6])
    used, grads = head_grads(to_model_input(data.clips[no_masks], inputs), no_masks)
    assert "segmentation" not in used and grads["segmentation"] is None and grads["view"] is not None


def test_report_has_every_task_for_every_arm(multitask_run, downstream_archive) -> None:
    result, labels = multitask_run
    summary = json.loads((result.checkpoint.parent / "result.json").read_text())
    for task in MULTITASK_TASKS:
        metric = result.tasks[task].primary_metric[0]
        assert set(summary["multitask"]["metrics"][task]) == {"val", "test"}
        assert metric in summary["single_task"][task]["metrics"]["test"]
        assert metric in summary["random_init"]["metrics"][task]["test"]
        assert summary["baselines"]["random"] == summary["random_init"]
        row = summary["comparison"][task]
        assert row["metric"] == metric and row["multitask"] == pytest.approx(result.test_metrics[task][metric], nan_ok=True)
    history = summary["multitask"]["history"]
    assert len(history) == 2 and {f"train_loss_{t}" for t in MULTITASK_TASKS} <= set(history[0])
    assert summary["config"]["loss_balance"] == "uncertainty" and set(summary["multitask"]["loss_weights"]) == set(MULTITASK_TASKS)
    assert summary["counts"]["segmentation"]["train"]["clips"] < summary["counts"]["view"]["train"]["clips"]
    # The single-task comparison is the model `echofm finetune --task ef` fits with these options.
    alone = finetune(FinetuneConfig(task="ef", epochs=2, split=SPLIT, compare="none"),
                     encoder=downstream_archive.encoder_path, shards=downstream_archive.shards, labels=labels,
                     manifest=downstream_archive.manifest_path)
    for key, value in alone.test_metrics.items():
        assert summary["single_task"]["ef"]["metrics"]["test"][key] == pytest.approx(value, rel=1e-4)


def test_saved_model_scores_and_answers_every_task(multitask_run, downstream_archive) -> None:
    result, labels = multitask_run
    loaded = load_fine_tuned(result.checkpoint).model
    assert isinstance(loaded, MultiTaskModel) and loaded.tasks == MULTITASK_TASKS
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 255, size=(3, 20, 40, 56, 1), dtype=np.uint8)
    out = predict_clips(loaded, clips)
    # One column group per task, with the schema each task's own model answers in.
    expected = joined_columns(loaded.task_specs)
    assert list(out) == [name for name, *_ in expected]
    for task in MULTITASK_TASKS:
        alone = predict_clips(loaded.head_model(task), clips)
        names = [column.name for column in signature_for(loaded.head_model(task)).outputs.inputs]
        for name in names:
            got, want = np.asarray(out[name]), np.asarray(alone[name])
            if want.dtype == object:
                assert list(got) == list(want)
            else:
                np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-5)
    assert out["segmentation.masks"].shape == (3, ENCODER_OVERRIDES["num_frames"], 40, 56)
    assert set(out["view.class"]) <= set(result.tasks["view"].classes)

    inputs = dict(shards=downstream_archive.shards, labels=labels, manifest=downstream_archive.manifest_path)
    scored = evaluate_tasks(result.checkpoint, **inputs)
    for task in MULTITASK_TASKS:
        for key, value in result.test_metrics[task].items():
            assert scored[task][key] == pytest.approx(value, rel=1e-4, nan_ok=True)
    assert evaluate(result.checkpoint, task="view", **inputs)["accuracy"] == pytest.approx(scored["view"]["accuracy"])
    with pytest.raises(EvaluationError):
        evaluate(result.checkpoint, **inputs)


def test_cli_trains_a_multitask_model_and_refuses_joint_flags_for_one_task(downstream_archive, tmp_path, capsys) -> None:
    from echofm.cli import finetune as finetune_command

    parser = argparse.ArgumentParser()
    finetune_command.add_parser(parser.add_subparsers()).set_defaults(_run=finetune_command.run)
    common = ["--shards", str(downstream_archive.shards), "--manifest", str(downstream_archive.manifest_path),
              "--labels", str(partial_labels(downstream_archive)), "--encoder", str(downstream_archive.encoder_path),
              "--epochs", "1", "--seed", "1", "--compare", "none"]
    args = parser.parse_args(["finetune", "--task", "ef,reduced_ef", *common, "--loss-balance", "uncertainty",
                              "--loss-weights", "1", "2", "--no-single-task-baseline", "--out", str(tmp_path / "joint")])
    assert args._run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"] == ["ef", "reduced_ef"] and report["loss_balance"] == "uncertainty"
    assert set(report["comparison"]) == {"ef", "reduced_ef"} and report["single_task"] == {}
    assert "mae" in report["multitask"]["ef"]["test"]
    # The log-variances learn at the balancer's own rate: after one epoch the weights have moved.
    moved = {task: report["loss_weights"][task] / w for task, w in (("ef", 1.0), ("reduced_ef", 2.0))}
    assert all(abs(ratio - 1.0) > 0.01 for ratio in moved.values()), moved
    one = parser.parse_args(["finetune", "--task", "ef", *common, "--loss-balance", "fixed", "--out", str(tmp_path / "one")])
    assert one._run(one) == 2
