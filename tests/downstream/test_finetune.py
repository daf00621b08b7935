"""Fine-tuning end to end on a small generated archive: labels, alignment, strategies, baseline."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch

from echofm.model import build_model
from echofm.model.heads import HEAD_KINDS
from echofm.preprocess.clips import InputSpec, fit_raw_clip
from echofm.downstream.dataset import build_task_data
from echofm.downstream.model import load_downstream
from echofm.downstream.encoder import layer_decay_groups, load_encoder, set_trainable_layers
from echofm.downstream.evaluate import EvaluationError, evaluate
from echofm.downstream.config import STRATEGIES, FinetuneConfig, FinetuneConfigError
from echofm.downstream.finetune import finetune
from echofm.io.deid import load_secret
from echofm.downstream.labels import LabelError, join_labels
from echofm.downstream.tasks import TASKS
from echofm.registry.pyfunc import predict_clips
from echofm.downstream.splits import SplitConfig
from tests.factories.downstream import (
    ENCODER_OVERRIDES,
    SHARD_FRAMES,
    SHARD_SIZE,
    VIEWS,
)
from tests.factories.weights import timm_vit_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPLIT = SplitConfig(seed=1)


def _run(archive, tmp_path, **overrides):
    config = FinetuneConfig(**{"task": "ef", "epochs": 2, "split": SPLIT, **overrides})
    return finetune(config, encoder=archive.encoder_path, shards=archive.shards, labels=archive.labels_path,
                    manifest=archive.manifest_path, out_dir=tmp_path / config.task)


def test_labels_join_by_keyed_path_by_source_id_and_by_clip_id(downstream_archive) -> None:
    manifest, labels = downstream_archive.manifest, downstream_archive.labels
    manifest = manifest.assign(view="unknown")  # what ingestion inferred; the label must win
    secret = load_secret()
    by_path_only = labels.drop(columns=["source_id"])
    by_path = join_labels(manifest, by_path_only, secret=secret)
    assert len(by_path) == len(labels)  # the rejected row has no label and is not accepted
    assert set(by_path["label_view"]) <= set(VIEWS)
    # Paths with folders above SOURCE, Windows separators or "./" join the same files.
    spelled = by_path_only.assign(file=["export\\archive\\" + f.replace("/", "\\") for f in labels["file"]])
    assert join_labels(manifest, spelled, secret=secret).set_index("clip_id")["ef"].equals(by_path.set_index("clip_id")["ef"])
    by_source_id = join_labels(manifest, labels)  # needs no secret
    assert set(by_source_id["clip_id"]) == set(by_path["clip_id"])
    with_ids = by_path_only.assign(clip_id=by_path["clip_id"].to_numpy())
    by_id = join_labels(manifest, with_ids)
    assert (by_id.set_index("clip_id")["ef"] == by_path.set_index("clip_id")["ef"]).all()
    with pytest.raises(LabelError, match="needs the de-identification secret"):
        join_labels(manifest, by_path_only)
    with pytest.raises(LabelError, match="no accepted clip"):
        join_labels(manifest, pd.DataFrame({"file": ["elsewhere/x.avi"], "ef": [50.0]}), secret=secret)
    # Another secret computes other ids: nothing joins.
    with pytest.raises(LabelError):
        join_labels(manifest, by_path_only, secret=b"another-secret-0123456789")
    twice = pd.concat([by_path_only.head(1), by_path_only.head(1)])
    with pytest.raises(LabelError, match="rows 0, 1 name the same file") as caught:
        join_labels(manifest, twice.reset_index(drop=True), secret=secret)
    assert labels["file"].iloc[0] not in str(caught.value)


def test_segmentation_targets_follow_the_clip_window_and_resize(downstream_archive) -> None:
    spec = InputSpec(num_frames=SHARD_FRAMES, img_size=SHARD_SIZE, mean=(0.3,), std=(0.25,))
    data = build_task_data(task="segmentation", manifest=downstream_archive.manifest_path,
                           labels=downstream_archive.labels_path, shards_dir=downstream_archive.shards,
                           spec=spec, split_config=SPLIT)
    assert data.valid.sum(axis=1).tolist() == [2] * len(data.clip_ids)  # frames 0 and 13
    assert data.valid[:, [0, 13]].all()
    # The LV is the bright disk: on labelled frames the mask must match the clip's bright pixels.
    bright = data.clips[..., 0] > 120
    agreement = (bright == (data.targets == 1))[data.valid].mean()
    assert agreement > 0.97
    shifted = (bright[:, 1:] == (data.targets[:, :-1] == 1))[data.valid[:, :-1]].mean()
    assert agreement > shifted  # a one-frame misalignment would score lower


def test_linear_probe_reports_both_arms_and_round_trips(downstream_archive, tmp_path) -> None:
    result = _run(downstream_archive, tmp_path, strategy="linear")
    counts = result.counts
    assert sum(c["clips"] for c in counts.values()) == len(downstream_archive.labels)
    assert set(result.pretrained.metrics["test"]) == {"mae", "rmse", "r2"}
    assert result.random_init is not None
    assert result.pretrained.metrics["test"] != result.random_init.metrics["test"]
    assert result.pretrained.trainable_parameters == sum(p.numel() for p in result.model.head.parameters())
    summary = json.loads((tmp_path / "ef" / "result.json").read_text())
    assert summary["random_init"]["metrics"]["test"]["mae"] == pytest.approx(result.random_init.metrics["test"]["mae"])

    loaded = load_downstream(result.checkpoint).model
    clips = np.random.default_rng(0).integers(0, 255, size=(2, 20, 40, 56, 1), dtype=np.uint8)
    expected = predict_clips(result.model, clips)["ef.value"].to_numpy()
    np.testing.assert_allclose(predict_clips(loaded, clips)["ef.value"].to_numpy(), expected, rtol=1e-5)
    scored = evaluate(result.checkpoint, shards=downstream_archive.shards, labels=downstream_archive.labels_path,
                      manifest=downstream_archive.manifest_path)
    assert scored["mae"] == pytest.approx(result.test_metrics["mae"], rel=1e-5)
    with pytest.raises(EvaluationError):
        evaluate(result.checkpoint, shards=downstream_archive.shards, labels=downstream_archive.labels_path,
                 manifest=downstream_archive.manifest_path, task="view")


def test_patients_do_not_cross_splits(downstream_archive) -> None:
    spec = InputSpec(num_frames=8, img_size=32)
    data = build_task_data(task="ef", manifest=downstream_archive.manifest_path, labels=downstream_archive.labels_path,
                           shards_dir=downstream_archive.shards, spec=spec, split_config=SPLIT)
    by_split = {s: {data.patients[i] for i in data.indices(s)} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"] or by_split["val"] & by_split["test"])
    assert all(by_split.values())


def test_view_attentive_probe(downstream_archive, tmp_path) -> None:
    result = _run(downstream_archive, tmp_path, task="view", strategy="attentive", epochs=1)
    assert result.task.classes == tuple(sorted(set(downstream_archive.labels["view"])))
    assert set(result.test_metrics) == {"accuracy", "macro_f1", "macro_auroc"}
    frame = predict_clips(result.model, np.zeros((3, 16, 30, 40, 3), dtype=np.uint8))
    assert list(frame["view.class"].isin(result.task.classes)) == [True] * 3
    probs = frame[[f"view.prob_{c}" for c in result.task.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_progressive_unfreezing_trains_top_block_only(downstream_archive, tmp_path) -> None:
    before = load_encoder(downstream_archive.encoder_path).model.state_dict()
    # No validation split: the last epoch is kept (the best-val-loss epoch could be epoch 0).
    result = _run(downstream_archive, tmp_path, task="reduced_ef", strategy="progressive", epochs=2,
                  split=SplitConfig(seed=1, val_fraction=0.0))
    after = result.model.encoder.state_dict()
    # Epoch 0 trains the head alone, epoch 1 adds the final norm and the top block (of 2).
    assert not torch.equal(before["blocks.1.mlp.fc1.weight"], after["blocks.1.mlp.fc1.weight"])
    assert torch.equal(before["blocks.0.mlp.fc1.weight"], after["blocks.0.mlp.fc1.weight"])
    assert torch.equal(before["patch_embed.proj.weight"], after["patch_embed.proj.weight"])
    assert "auroc" in result.test_metrics


def test_full_finetune_and_segmentation(downstream_archive, tmp_path) -> None:
    full = _run(downstream_archive, tmp_path, strategy="full", epochs=1)
    before = load_encoder(downstream_archive.encoder_path).model.state_dict()
    assert not torch.equal(before["patch_embed.proj.weight"], full.model.encoder.state_dict()["patch_embed.proj.weight"])
    seg = _run(downstream_archive, tmp_path, task="segmentation", strategy="linear", epochs=1,
               compare="none")
    assert 0.0 <= seg.test_metrics["dice"] <= 1.0 and seg.random_init is None
    out = predict_clips(seg.model, np.full((1, 24, 50, 70, 1), 90, dtype=np.uint8))
    assert out["segmentation.masks"].shape == (1, ENCODER_OVERRIDES["num_frames"], 50, 70)
    assert out["segmentation.frame_indices"].shape == (1, ENCODER_OVERRIDES["num_frames"])


def test_layer_decay_groups_scale_by_depth() -> None:
    model = build_model("tiny", **ENCODER_OVERRIDES)
    head = torch.nn.Linear(32, 1)
    head.config = None
    groups = layer_decay_groups(model, head, lr=1.0, weight_decay=0.1, layer_decay=0.5)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    depth = model.config.depth
    assert lr_of["head.weight"] == 1.0
    assert lr_of["encoder.norm.weight"] == 1.0
    assert lr_of["encoder.blocks.1.attn.qkv.weight"] == 0.5
    assert lr_of["encoder.blocks.0.attn.qkv.weight"] == 0.25
    assert lr_of["encoder.patch_embed.proj.weight"] == 0.5 ** (depth + 1)
    assert not any(name.startswith("encoder.decoder") or name == "encoder.mask_token" for name in lr_of)
    decay_of = {name: g["weight_decay"] for g in groups for name in g["names"]}
    assert decay_of["encoder.pos_embed_spatial"] == 0.0 and decay_of["encoder.blocks.0.attn.qkv.bias"] == 0.0
    assert decay_of["encoder.blocks.0.attn.qkv.weight"] == 0.1


def test_set_trainable_layers_counts_from_the_top() -> None:
    model = build_model("tiny", **ENCODER_OVERRIDES)
    trainable = lambda: {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")  # noqa: E731
                         for n, p in model.encoder_named_parameters() if p.requires_grad}
    set_trainable_layers(model, 0)
    assert trainable() == set()
    set_trainable_layers(model, 1)
    assert trainable() == {"norm", "blocks.1"}
    set_trainable_layers(model, 3)
    assert "patch_embed" in trainable() and "blocks.0" in trainable()


def test_raw_clip_preparation_handles_any_length_and_size() -> None:
    spec = InputSpec(num_frames=8, img_size=32)
    clip, idx = fit_raw_clip(np.zeros((17, 30, 90), dtype=np.uint8), spec)
    assert clip.shape == (8, 32, 32, 3) and idx.shape == (8,) and idx.max() < 17
    with pytest.raises(ValueError):
        fit_raw_clip(np.zeros((10, 30, 30), dtype=np.uint8), spec)


def test_config_validation_and_cli_choices() -> None:
    from echofm.cli import build_parser

    finetune_parser = _subparser(build_parser(), "finetune")
    choices = {action.dest: action.choices for action in finetune_parser._actions}
    assert tuple(choices["strategy"]) == STRATEGIES
    # --task takes any registered task, or several joined by commas (one multi-task model).
    task_help = next(action.help for action in finetune_parser._actions if action.dest == "task")
    assert all(name in task_help for name in TASKS.names())
    common = ["--shards", "s", "--labels", "l", "--encoder", "e", "--out", "o"]
    assert finetune_parser.parse_args(["--task", "ef,view", *common]).task == ("ef", "view")
    with pytest.raises(SystemExit):
        finetune_parser.parse_args(["--task", "ef,ejection", *common])
    # The head names the options offer (torch-free) are the heads the model builds.
    assert set(choices["head"]) == set(HEAD_KINDS)
    with pytest.raises(FinetuneConfigError):
        FinetuneConfig(task="ejection")
    with pytest.raises(FinetuneConfigError):
        FinetuneConfig(task="ef", strategy="linear", layer_decay=0.0)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return commands.choices[name]


def test_cli_finetune_then_evaluate(downstream_archive, tmp_path, capsys) -> None:
    from echofm.cli import evaluate as evaluate_command
    from echofm.cli import finetune as finetune_command

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for module in (finetune_command, evaluate_command):
        module.add_parser(sub).set_defaults(_run=module.run)
    out = tmp_path / "cli"
    imagenet = timm_vit_file(tmp_path / "vit_tiny.safetensors")
    args = parser.parse_args([
        "finetune", "--task", "ef", "--shards", str(downstream_archive.shards),
        "--manifest", str(downstream_archive.manifest_path), "--labels", str(downstream_archive.labels_path),
        "--encoder", str(downstream_archive.encoder_path.parent), "--epochs", "1", "--out", str(out),
        "--seed", "1", "--compare", f"random,imagenet:{imagenet}",
    ])
    assert args._run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["pretrained"]["test"]) == {"mae", "rmse", "r2"} and report["random_init"]
    # Every arm side by side: same head, split and epochs; the imported one converted for this input.
    assert set(report["comparison"]["test"]["mae"]) == {"pretrained", "random", "imagenet"}
    assert report["baselines"]["random"] == report["random_init"]
    assert report["comparison"]["test"]["mae"]["imagenet"] == report["baselines"]["imagenet"]["test"]["mae"]
    recorded = json.loads((out / "result.json").read_text())
    arm = recorded["baselines"]["imagenet"]
    assert arm["source"] == str(imagenet) and arm["load"]["format"] == "timm-vit"
    assert arm["load"]["counts"]["encoder"].get("initialised") is None
    assert arm["trainable_parameters"] == 192 + 1  # the same linear head, on the 192-wide encoder
    assert recorded["config"]["compare"] == ["random", f"imagenet:{imagenet}"]
    args = parser.parse_args(["evaluate", "--model", str(out), "--shards", str(downstream_archive.shards),
                              "--manifest", str(downstream_archive.manifest_path),
                              "--labels", str(downstream_archive.labels_path)])
    assert args._run(args) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["metrics"]["mae"] == pytest.approx(report["pretrained"]["test"]["mae"], rel=1e-5)
    bad = parser.parse_args(["finetune", "--task", "ef", "--shards", str(downstream_archive.shards),
                             "--labels", str(downstream_archive.labels_path), "--encoder", str(tmp_path / "none.pt"),
                             "--out", str(tmp_path / "bad")])
    assert bad._run(bad) == 2
