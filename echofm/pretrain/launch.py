"""Start a pretraining job under torchrun and follow its output.

The CLI (`echofm pretrain --nproc-per-node N ...`) and the Prefect flow both go through here, so
a job looks the same whoever starts it:

    python -m torch.distributed.run --nproc-per-node N --nnodes M \\
        --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id RUN \\
        -m echofm.pretrain.worker --config RUN_DIR/pretrain_config.json --shards SHARDS --out RUN_DIR

One node without an endpoint uses `--standalone` (torchrun picks a free local port). On a
cluster, run the same command on every node with the same endpoint and id; torchrun assigns
ranks. The config travels as a JSON file in the run directory, which a resumed job reads again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echofm.pretrain.config import PretrainConfig
from echofm.errors import TrainingError

CONFIG_FILE = "pretrain_config.json"
FAILURE_FILE = "failure.json"
RESULT_FILE = "result.json"


class TrainingJobFailed(TrainingError, RuntimeError):
    """torchrun exited non-zero: a worker crashed, was killed, or a node was lost.

    `tail` holds the last lines of the job's output. Resuming from the last checkpoint is the
    remedy for infrastructure failures.
    """

    def __init__(self, returncode: int, out_dir: Path, tail: Sequence[str]) -> None:
        lines = "\n".join(tail)
        super().__init__(f"pretraining job in {out_dir} exited with {returncode}; last output:\n{lines}")
        self.returncode = returncode
        self.path = out_dir
        self.tail = list(tail)


class TrainingDiverged(TrainingJobFailed):
    """The job stopped on a NaN/inf loss (see `failure.json`): resuming would diverge again, so
    this is not an infrastructure failure and should not be retried as one."""


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """Process layout of a job: processes per node, nodes and the rendezvous.

    rdzv_endpoint: `HOST:PORT` of the c10d rendezvous (required with nnodes > 1).
    rdzv_id: a name shared by every node of one job.
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_id: str = "echofm-pretrain"
    max_restarts: int = 0
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError("nproc_per_node and nnodes must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} outside {self.nnodes} nodes")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("a multi-node job needs rdzv_endpoint HOST:PORT")


def torchrun_command(spec: LaunchSpec, worker_args: Sequence[str]) -> list[str]:
    """The torchrun command line that runs `echofm.pretrain.worker` with `worker_args`."""
    cmd = [
        spec.python,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(spec.nproc_per_node),
        "--nnodes",
        str(spec.nnodes),
        "--max-restarts",
        str(spec.max_restarts),
    ]
    if spec.rdzv_endpoint:
        cmd += [
            "--node-rank",
            str(spec.node_rank),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            spec.rdzv_endpoint,
            "--rdzv-id",
            spec.rdzv_id,
        ]
    else:
        cmd.append("--standalone")
    return [*cmd, "-m", "echofm.pretrain.worker", *worker_args]


def write_run_config(config: PretrainConfig, out_dir: Path) -> Path:
    """`out_dir/pretrain_config.json`: the config the workers read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CONFIG_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2))
    tmp.replace(path)
    return path


def worker_arguments(config_path: Path, shards_dir: Path, out_dir: Path, *, resume: bool) -> list[str]:
    args = ["--config", str(config_path), "--shards", str(shards_dir), "--out", str(out_dir)]
    return [*args, "--resume"] if resume else args


def stream_command(
    cmd: Sequence[str],
    *,
    on_line: Callable[[str], None],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    keep_tail: int = 40,
) -> tuple[int, list[str]]:
    """Run `cmd`, calling `on_line` with each line of its merged stdout/stderr as it appears.

    Returns the exit code and the last `keep_tail` lines.
    """
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=keep_tail)
    with subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=full_env,
        cwd=cwd,
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)
        returncode = process.wait()
    return returncode, list(tail)


def launch_pretraining(
    config: PretrainConfig,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    spec: LaunchSpec,
    resume: bool = False,
    on_line: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one pretraining job under torchrun on this node and wait for it.

    Returns the job's `result.json` (written by global rank 0; `{}` on the other nodes).

    Raises:
        TrainingDiverged: the loss became NaN/inf.
        TrainingJobFailed: any other non-zero exit (crash, kill, lost node).
    """
    shards_dir, out_dir = Path(shards_dir).resolve(), Path(out_dir).resolve()
    config_path = write_run_config(config, out_dir)
    failure = out_dir / FAILURE_FILE
    failure.unlink(missing_ok=True)
    cmd = torchrun_command(spec, worker_arguments(config_path, shards_dir, out_dir, resume=resume))
    on_line("launching: " + " ".join(cmd))
    returncode, tail = stream_command(cmd, on_line=on_line, env=env)
    if returncode != 0:
        if failure.exists() and json.loads(failure.read_text()).get("kind") == "non_finite_loss":
            raise TrainingDiverged(returncode, out_dir, tail)
        raise TrainingJobFailed(returncode, out_dir, tail)
    result = out_dir / RESULT_FILE
    return json.loads(result.read_text()) if result.exists() else {}
