"""echofm.store: where MLflow lives, borrowed without leaking, and what names mean there."""

from __future__ import annotations

import os

import pytest

from echofm.store import (
    ModelURIError,
    NoTrackingStore,
    default_tracking_uri,
    parse_alias_uri,
    parse_model_uri,
    resolve_tracking_uri,
    tracking_uri_scope,
    version_uri,
)


def test_a_borrowed_tracking_uri_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    with tracking_uri_scope(f"sqlite:///{tmp_path / 'a.db'}"):
        assert mlflow.get_tracking_uri().endswith("a.db")
    assert mlflow.get_tracking_uri() == before and "MLFLOW_TRACKING_URI" not in os.environ

    # A server named by the environment stays the environment's: after the block it is neither
    # lost nor promoted to MLflow's own setting (which would outlive the variable).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with tracking_uri_scope(f"sqlite:///{tmp_path / 'b.db'}"):
        assert mlflow.get_tracking_uri().endswith("b.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert mlflow.get_tracking_uri() == before


def test_stores_default_to_the_run_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "pretrain"
    assert resolve_tracking_uri(run) == f"sqlite:///{run.resolve() / 'mlflow.db'}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "mlflow.db").write_bytes(b"")
    # Fine-tuning records go beside the encoder they start from, else into their own output.
    assert default_tracking_uri(run / "checkpoints" / "step-00000001.pt", tmp_path / "ft") == resolve_tracking_uri(run)
    assert default_tracking_uri("models:/echofm-encoder@champion", tmp_path / "ft") == resolve_tracking_uri(tmp_path / "ft")
    with pytest.raises(NoTrackingStore):
        default_tracking_uri("models:/echofm-encoder@champion", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking_uri(None, None) == "http://mlflow:5000"


def test_model_uri_forms() -> None:
    assert parse_model_uri(version_uri("echofm-ef", 3)) == ("echofm-ef", "3")
    assert parse_alias_uri("models:/echofm-ef@champion") == ("echofm-ef", "champion")
    assert parse_alias_uri("models:/echofm-ef/3") is None
    with pytest.raises(ModelURIError):
        parse_model_uri("models:/echofm-ef@champion")
