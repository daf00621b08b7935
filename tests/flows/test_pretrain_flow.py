from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.factories.shards import write_test_shards


def _kill_a_worker_after_first_checkpoint(run_dir: Path, stop: threading.Event, killed: list[int]) -> None:
    """Simulate an infrastructure failure: SIGKILL a training worker once step 1 is saved."""
    first = run_dir / "checkpoints" / "step-00000001.pt"
    while not stop.is_set():
        if first.exists():
            for proc in psutil.Process().children(recursive=True):
                try:
                    cmdline = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "echofm.pretrain.worker" in cmdline and "torch.distributed.run" not in cmdline:
                    proc.kill()
                    killed.append(proc.pid)
                    return
        time.sleep(0.02)


@pytest.mark.slow
def test_flow_survives_a_killed_worker_registers_the_encoder_and_emits_the_event(
    prefect_harness, tmp_path, monkeypatch
):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from echofm.pretrain.config import PretrainOptions
    from flows.pretrain import REGISTERED_EVENT, pretrain

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    shards = tmp_path / "out" / "shards"
    write_test_shards(shards, [4, 4], side=32, manifest=True)
    run_dir = tmp_path / "run"
    options = PretrainOptions(
        preset="tiny",
        img_size=32,
        num_frames=16,
        steps=3,
        batch_size=2,
        num_workers=0,
        holdout_clips=2,
        ckpt_every=1,
        eval_every=0,
        precision="fp32",
        nproc_per_node=1,
        retries=1,
        retry_delay_seconds=0,
        experiment_name="flow-test",
    )

    # The Prefect API is shared by the whole session: only this test's task runs and events count.
    with get_client(sync_client=True) as prefect:
        earlier = {r.id for r in prefect.read_task_runs()}
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(run_dir, stop, killed))
    killer.start()
    try:
        result = pretrain(str(shards), str(run_dir), options)
    finally:
        stop.set()
        killer.join()

    assert killed, "the worker was never killed: the retry path was not exercised"
    assert result["step"] == 3
    client = MlflowClient(tracking_uri=tracking_uri)
    version = client.get_model_version_by_alias("echofm-encoder", "challenger")
    assert str(version.version) == result["registered"]["version"]
    assert version.tags["preset"] == "tiny"
    # The retry continued the same MLflow run from its checkpoint: every step logged once or more.
    losses = client.get_metric_history(result["run_id"], "loss")
    assert {m.step for m in losses} == {1, 2, 3}

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs()
        (task_run,) = [r for r in runs if r.name.startswith("torchrun-pretrain") and r.id not in earlier]
        assert task_run.run_count == 2 and task_run.state.is_completed()
        events = []
        deadline = time.monotonic() + 60
        while not events and time.monotonic() < deadline:
            page = prefect.read_events(filter=EventFilter(event=EventNameFilter(name=[REGISTERED_EVENT])), limit=50)
            events = [e for e in page.events if e.payload.get("run_id") == result["run_id"]]
            time.sleep(0.5)
    assert events, "no echofm.encoder.registered event reached the API"
    assert events[0].payload["version"] == result["registered"]["version"]
    assert events[0].resource.id == f"mlflow.model-version.echofm-encoder.{result['registered']['version']}"
