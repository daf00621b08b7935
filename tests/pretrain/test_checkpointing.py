from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from echofm.pretrain.checkpointing import (
    NoCheckpoint,
    ResumeMismatch,
    capture_rng_state,
    list_checkpoints,
    restore_rng_state,
    rotate_checkpoints,
)
from echofm.pretrain.config import LaunchSpec, PretrainConfig
from echofm.pretrain.launch import launch_pretraining
from echofm.pretrain.loop import pretrain
from echofm.pretrain.train_loop import NonFiniteLoss
from tests.factories.shards import write_test_shards


def small_config(**overrides) -> PretrainConfig:
    """A few CPU-seconds per step: tiny preset on 16 frames of 32 x 32 (4 time slices, so the
    triplet loss is active), two micro-batches per step, augmentation on."""
    args = dict(
        preset="tiny",
        img_size=32,
        num_frames=16,
        steps=2,
        batch_size=2,
        accum_steps=2,
        base_lr=0.1,  # peak lr 1.6e-3: large enough that a wrong resume shows in the weights
        num_workers=0,
        ckpt_every=1,
        keep_last=2,
        eval_every=0,
        holdout_clips=2,
        precision="fp32",
        tracking=False,
        register_model=False,
    )
    args.update(overrides)
    return PretrainConfig(**args)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "shards"
    write_test_shards(out, [5, 4, 5], side=32)  # 14 clips: 12 train (3 steps per epoch), 2 held out
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_rotation_keeps_the_newest_and_ignores_partial_files(tmp_path):
    for step in (1, 2, 3, 4):
        (tmp_path / f"step-{step:08d}.pt").write_bytes(b"x")
    (tmp_path / "step-00000005.pt.tmp").write_bytes(b"half")
    deleted = rotate_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in deleted] == ["step-00000001.pt", "step-00000002.pt"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert (tmp_path / "step-00000005.pt.tmp").exists()
    rotate_checkpoints(tmp_path, keep_last=0)  # never below one: the last good checkpoint stays
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(shards, tmp_path):
    whole = pretrain(small_config(steps=2), shards, tmp_path / "whole")
    # The same 2-step schedule, stopped after step 1 (mid-epoch) and resumed.
    first = pretrain(small_config(steps=1, schedule_steps=2), shards, tmp_path / "pieces")
    assert first.step == 1
    resumed = pretrain(small_config(steps=2), shards, tmp_path / "pieces", resume=True)

    final_whole, final_resumed = _weights(whole.checkpoint), _weights(resumed.checkpoint)
    after_one = _weights(first.checkpoint)
    moved = max((final_whole[k] - after_one[k]).abs().max().item() for k in final_whole)
    assert moved > 1e-4  # the second step changed the weights noticeably...
    for key in final_whole:  # ...and identically in both runs
        torch.testing.assert_close(final_resumed[key], final_whole[key], rtol=1e-5, atol=1e-6)
    ckpt = torch.load(resumed.checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["pretrain_config"]["batch_size"] == 2
    assert {"optimizer", "scheduler", "scaler", "rng", "config"} <= set(ckpt)
    assert [s for s, _ in list_checkpoints(tmp_path / "pieces" / "checkpoints")] == [1, 2]

    # NaN weights at step 1: step 2 stops with the step named; nothing is deleted or added.
    poisoned = tmp_path / "poisoned"
    shutil.copytree(tmp_path / "pieces", poisoned)
    (poisoned / "checkpoints" / "step-00000002.pt").unlink()
    last = poisoned / "checkpoints" / "step-00000001.pt"
    bad = torch.load(last, map_location="cpu", weights_only=True)
    bad["model"]["decoder_pred.weight"][0, 0] = float("nan")
    torch.save(bad, last)
    with pytest.raises(NonFiniteLoss, match="step 2") as caught:
        pretrain(small_config(steps=2), shards, poisoned, resume=True)
    assert caught.value.step == 2 and caught.value.last_checkpoint == last
    assert [s for s, _ in list_checkpoints(poisoned / "checkpoints")] == [1]


def test_resume_refuses_a_different_run(shards, tmp_path):
    with pytest.raises(NoCheckpoint):
        pretrain(small_config(steps=1), shards, tmp_path / "empty", resume=True)
    pretrain(small_config(steps=1, accum_steps=1), shards, tmp_path / "run")
    with pytest.raises(ResumeMismatch, match="batch_size"):
        pretrain(small_config(steps=2, accum_steps=1, batch_size=3), shards, tmp_path / "run", resume=True)


def test_a_resume_that_cannot_work_is_refused_before_torchrun_starts(shards, tmp_path, capsys):
    from echofm.cli import pretrain as command

    run_dir = tmp_path / "run"
    pretrain(small_config(steps=1, accum_steps=1), shards, run_dir)
    lines: list[str] = []
    two_ranks = LaunchSpec(nproc_per_node=2)
    with pytest.raises(ResumeMismatch, match="written by 1 ranks, resuming with 2"):
        launch_pretraining(small_config(steps=2, accum_steps=1), shards, run_dir, spec=two_ranks, resume=True,
                           on_line=lines.append)
    with pytest.raises(ResumeMismatch, match="batch_size"):
        launch_pretraining(small_config(steps=2, accum_steps=1, batch_size=3), shards, run_dir,
                           spec=LaunchSpec(nproc_per_node=1), resume=True, on_line=lines.append)
    with pytest.raises(NoCheckpoint):
        launch_pretraining(small_config(steps=2), shards, tmp_path / "empty", spec=two_ranks, resume=True,
                           on_line=lines.append)
    assert lines == []  # no job was launched

    # The command says why in one line, and does not suggest the --resume it was given.
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["pretrain", "--shards", str(shards), "--steps", "2", "--img-size", "32",
                              "--num-frames", "16", "--num-workers", "0", "--holdout-clips", "2", "--out", str(run_dir),
                              "--resume", "--nproc-per-node", "2"])
    assert command.run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "written by 1 ranks" in err and "--resume" not in err
