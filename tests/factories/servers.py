"""Real services on localhost for tests: a Prefect server and its process worker.

Each starts as a subprocess with its own home under a temporary folder, is waited for until it
answers, and is stopped (whole process group) when the `with` block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the process group, SIGKILL it after `grace_s`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def background(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None,
               grace_s: float = 30) -> Iterator[subprocess.Popen]:
    """`cmd` in its own process group, output to `log`; the whole group is stopped on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process, grace_s)


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        COLUMNS="250",  # the CLI's tables truncate names on a narrow terminal
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:
        env.pop("PREFECT_API_URL", None)
    return env


@contextlib.contextmanager
def prefect_server(home: Path, startup_timeout_s: float = 240) -> Iterator[str]:
    """A `prefect server start` on a free localhost port; yields its API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = home / "server.log"
    with background(cmd, prefect_env(home), log) as process:
        wait_for_http(f"{api_url}/health", startup_timeout_s, process, log)
        yield api_url


@contextlib.contextmanager
def mlflow_server_process(root: Path, artifacts: str | None = None) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """`mlflow server` (SQLite backend; artifacts under `root/artifacts`, or at the `artifacts`
    URL such as `s3://bucket/prefix`) starting in the background on a free localhost port; yields
    (process, url, log). Not waited for: callers overlap their own set-up with its boot and then
    call `wait_for_http(url + "/health", ...)`."""
    port = free_port()
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", artifacts or str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = root / "server.log"
    # uvicorn's graceful shutdown waits for idle keep-alive clients: SIGKILL follows soon.
    with background(cmd, env, log, grace_s=5) as process:
        yield process, f"http://127.0.0.1:{port}", log


@contextlib.contextmanager
def s3_server(root: Path, startup_timeout_s: float = 120) -> Iterator[dict[str, str]]:
    """moto's standalone S3-compatible server (`moto_server`) on a free localhost port; yields the
    AWS environment (endpoint, test credentials, region) that s3fs, boto3 and MLflow read."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "moto.log"
    with background([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], dict(os.environ), log, grace_s=5) as process:
        wait_for_http(f"{url}/moto-api/", startup_timeout_s, process, log)
        yield {
            "AWS_ENDPOINT_URL": url,
            "MLFLOW_S3_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "echofm-test",
            "AWS_SECRET_ACCESS_KEY": "echofm-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


_HOLD_LOCK = (
    "import sys\nfrom echofm.ingest.lock import exclusive_output\n"
    "with exclusive_output(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n"
)


@contextlib.contextmanager
def output_lock_holder(output: Path) -> Iterator[subprocess.Popen]:
    """Another process holding OUTPUT's ingestion lock until the block ends (or it is killed)."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(output)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        yield process
    finally:
        if process.poll() is None:
            process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=30)


@contextlib.contextmanager
def mlflow_model_server(model_uri: str, tracking_uri: str, log: Path, startup_timeout_s: float = 240) -> Iterator[str]:
    """`mlflow models serve -m MODEL_URI` (this environment, no new one) on a free localhost port,
    the registry at `tracking_uri`; yields its URL once /ping answers."""
    port = free_port()
    # The server execs uvicorn by name: this environment's bin comes first on PATH.
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with background(cmd, env, log, grace_s=10) as process:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/ping", startup_timeout_s, process, log)
        yield url
