from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from echofm.pretrain.config import LaunchSpec, PretrainConfig
from echofm.pretrain.launch import (
    FAILURE_FILE,
    TrainingDiverged,
    TrainingJobFailed,
    TrainingJobRejected,
    job_failure,
    launch_pretraining,
    torchrun_command,
    write_run_config,
)
from tests.factories.shards import write_test_shards


def test_single_node_command_uses_standalone_rendezvous():
    cmd = torchrun_command(LaunchSpec(nproc_per_node=2), ["--config", "c.json"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--rdzv-endpoint" not in cmd
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2"
    assert cmd[-4:] == ["-m", "echofm.pretrain.worker", "--config", "c.json"]


def test_multi_node_command_passes_the_rendezvous_through():
    spec = LaunchSpec(nproc_per_node=8, nnodes=4, node_rank=2, rdzv_endpoint="head:29400", rdzv_id="job7")
    cmd = torchrun_command(spec, [])
    flags = dict(zip(cmd[3:-2:2], cmd[4:-2:2]))
    assert flags == {
        "--nproc-per-node": "8",
        "--nnodes": "4",
        "--max-restarts": "0",
        "--node-rank": "2",
        "--rdzv-backend": "c10d",
        "--rdzv-endpoint": "head:29400",
        "--rdzv-id": "job7",
    }
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        LaunchSpec(nnodes=2)


@pytest.mark.slow
def test_two_cpu_ranks_train_identical_weights_on_different_clips(tmp_path):
    shards = tmp_path / "out" / "shards"
    write_test_shards(shards, [3, 2, 3, 2], side=32)  # uneven shards, 10 clips, 2 held out
    config = PretrainConfig(
        preset="tiny",
        img_size=32,
        num_frames=16,
        steps=2,
        steps_per_epoch=2,  # one epoch: within an epoch the ranks' clips are disjoint
        batch_size=2,
        accum_steps=2,
        num_workers=0,
        ckpt_every=2,
        eval_every=0,
        holdout_clips=2,
        precision="fp32",
        tracking=False,
        register_model=False,
        record_samples=True,
    )
    lines: list[str] = []
    result = launch_pretraining(config, shards, tmp_path / "run", spec=LaunchSpec(nproc_per_node=2), on_line=lines.append)

    assert result["step"] == 2
    assert any("[rank 1]" in line for line in lines)  # both ranks' output came through the callback
    digests = [(tmp_path / "run" / f"weights-rank-{r}.sha256").read_text() for r in range(2)]
    assert digests[0] == digests[1]
    seen = []
    for rank in range(2):
        rows = (tmp_path / "run" / "samples" / f"rank-{rank}.txt").read_text().splitlines()
        assert [row.split()[0] for row in rows] == ["1", "1", "2", "2"]  # 2 steps x 2 micro-batches
        seen.append({key for row in rows for key in row.split()[1:]})
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    ckpt = torch.load(Path(result["checkpoint"]), map_location="cpu", weights_only=True)
    assert len(ckpt["rng"]) == 2  # every rank's RNG state, for an exact resume


def test_a_worker_reports_a_user_error_in_one_line_and_the_launcher_names_it(tmp_path):
    run_dir, empty = tmp_path / "run", tmp_path / "no-shards"
    empty.mkdir()
    config = write_run_config(PretrainConfig(steps=1, tracking=False, register_model=False), run_dir)
    done = subprocess.run([sys.executable, "-m", "echofm.pretrain.worker", "--config", str(config), "--shards",
                           str(empty), "--out", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count(" ERROR ") == 1 and "no *.tar shards" in done.stderr
    rejected = job_failure(done.returncode, run_dir, [])
    assert isinstance(rejected, TrainingJobRejected) and not rejected.infrastructure
    assert "no *.tar shards" in str(rejected) and "\n" not in str(rejected)

    (run_dir / FAILURE_FILE).write_text(json.dumps({"kind": "non_finite_loss", "step": 3, "message": "nan"}))
    assert isinstance(job_failure(3, run_dir, []), TrainingDiverged)
    (run_dir / FAILURE_FILE).unlink()
    killed = job_failure(-9, run_dir, ["Killed"])
    assert type(killed) is TrainingJobFailed and killed.infrastructure  # the one kind a flow retries
