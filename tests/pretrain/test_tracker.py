"""Pretraining metrics reach MLflow in batches, each step's values once, none lost at the end."""

from __future__ import annotations

from mlflow import MlflowClient

from echofm.pretrain import tracker as tracker_module
from echofm.pretrain.tracker import MAX_BATCH_METRICS, PretrainTracker

METRICS = ("loss", "recon_loss", "triplet_loss", "lr", "grad_norm", "clips_per_s", "data_wait_fraction")


def _tracker(tmp_path) -> PretrainTracker:  # noqa: ANN001
    tracker = PretrainTracker(tmp_path / "run", experiment_name="test-tracker",
                              tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    return tracker


def _steps(client: MlflowClient, run_id: str, metric: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, metric)]


def test_metrics_are_held_until_a_batch_fills_and_all_are_sent_at_the_end(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(tracker_module, "FLUSH_SECONDS", 3600.0)  # only a full batch sends, however slow the machine
    tracker = _tracker(tmp_path)
    client = MlflowClient(tracker.tracking_uri)
    steps = 2 * MAX_BATCH_METRICS // len(METRICS) + 5  # two full batches and a rest
    for step in range(1, steps + 1):
        tracker.log_metrics({name: step + i / 10 for i, name in enumerate(METRICS)}, step)
        if step == 3:
            assert _steps(client, tracker.run_id, "loss") == []  # held, not one call per step
    sent = _steps(client, tracker.run_id, "loss")
    assert 0 < len(sent) < steps and sent == list(range(1, len(sent) + 1))  # full batches went, in order
    tracker.end()
    for i, name in enumerate(METRICS):
        history = client.get_metric_history(tracker.run_id, name)
        assert [m.step for m in history] == list(range(1, steps + 1)), name
        assert [m.value for m in history] == [step + i / 10 for step in range(1, steps + 1)], name
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_metrics_go_out_once_the_flush_interval_has_passed_and_a_failed_run_keeps_them(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(tracker_module, "FLUSH_SECONDS", 3600.0)
    tracker = _tracker(tmp_path)
    client = MlflowClient(tracker.tracking_uri)
    tracker.log_metrics({"loss": 1.0}, 1)
    assert _steps(client, tracker.run_id, "loss") == []
    monkeypatch.setattr(tracker_module, "FLUSH_SECONDS", 0.0)  # the interval has passed at every call
    tracker.log_metrics({"loss": 0.5}, 2)
    assert _steps(client, tracker.run_id, "loss") == [1, 2]
    monkeypatch.setattr(tracker_module, "FLUSH_SECONDS", 3600.0)
    tracker.log_metrics({"loss": 0.25}, 3)
    tracker.end(status="FAILED")
    assert _steps(client, tracker.run_id, "loss") == [1, 2, 3]
    assert client.get_run(tracker.run_id).info.status == "FAILED"
