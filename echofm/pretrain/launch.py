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
from pathlib import Path
from typing import Any, ClassVar

from echofm.data import storage
from echofm.pretrain.config import LaunchSpec, PretrainConfig
from echofm.pretrain.loop import RESULT_FILE
from echofm.pretrain.plan import check_run
from echofm.errors import TrainingError

CONFIG_FILE = "pretrain_config.json"
FAILURE_FILE = "failure.json"
# Kinds of failure a worker records in FAILURE_FILE.
NON_FINITE_LOSS = "non_finite_loss"
USER_ERROR = "user_error"


class TrainingJobFailed(TrainingError, RuntimeError):
    """torchrun exited non-zero: a worker crashed, was killed, or a node was lost.

    `tail` holds the last lines of the job's output. Resuming from the last checkpoint is the
    remedy for infrastructure failures (`infrastructure` is true for those only).
    """

    infrastructure: ClassVar[bool] = True

    def __init__(self, returncode: int, out_dir: Path, tail: Sequence[str]) -> None:
        lines = "\n".join(tail)
        super().__init__(f"pretraining job in {out_dir} exited with {returncode}; last output:\n{lines}")
        self.returncode = returncode
        self.path = out_dir
        self.tail = list(tail)


class TrainingDiverged(TrainingJobFailed):
    """The job stopped on a NaN/inf loss (see `failure.json`): resuming would diverge again, so
    this is not an infrastructure failure and should not be retried as one."""

    infrastructure = False


class TrainingJobRejected(TrainingJobFailed):
    """A worker stopped on a user error it found only once running (see `failure.json`): the
    same job would stop the same way, so it is not retried. `reason` is the error's one line."""

    infrastructure = False

    def __init__(self, returncode: int, out_dir: Path, tail: Sequence[str], reason: str) -> None:
        super().__init__(returncode, out_dir, tail)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def torchrun_command(spec: LaunchSpec, worker_args: Sequence[str]) -> list[str]:
    """The torchrun command line that runs `echofm.pretrain.worker` with `worker_args`."""
    cmd = [
        spec.python or sys.executable,
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


def job_failure(returncode: int, out_dir: Path, tail: Sequence[str]) -> TrainingJobFailed:
    """What a failed job's exit means, from what its workers recorded in `failure.json`."""
    failure = out_dir / FAILURE_FILE
    recorded = json.loads(failure.read_text()) if failure.exists() else {}
    if recorded.get("kind") == NON_FINITE_LOSS:
        return TrainingDiverged(returncode, out_dir, tail)
    if recorded.get("kind") == USER_ERROR:
        return TrainingJobRejected(returncode, out_dir, tail, recorded["message"])
    return TrainingJobFailed(returncode, out_dir, tail)


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
    Before any process starts, `check_run` refuses what every worker would stop on.

    Raises:
        EchoFMError subclasses of `check_run`: unusable options, data or checkpoint.
        TrainingDiverged: the loss became NaN/inf.
        TrainingJobRejected: a worker stopped on a user error.
        TrainingJobFailed: any other non-zero exit (crash, kill, lost node).
    """
    shards_dir, out_dir = storage.location(shards_dir), Path(out_dir).resolve()
    check_run(config, shards_dir, out_dir, world_size=spec.world_size, resume=resume)
    config_path = write_run_config(config, out_dir)
    failure = out_dir / FAILURE_FILE
    failure.unlink(missing_ok=True)
    cmd = torchrun_command(spec, worker_arguments(config_path, shards_dir, out_dir, resume=resume))
    on_line("launching: " + " ".join(cmd))
    returncode, tail = stream_command(cmd, on_line=on_line, env=env)
    if returncode != 0:
        raise job_failure(returncode, out_dir, tail)
    result = out_dir / RESULT_FILE
    return json.loads(result.read_text()) if result.exists() else {}
