"""The finetune-and-register flow on a real (temporary) Prefect API and a SQLite MLflow store."""

from __future__ import annotations

import pytest


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_flow_finetunes_evaluates_registers_and_promotes(prefect_harness, downstream_archive, tmp_path) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from echofm.downstream.config import FinetuneOptions
    from flows.finetune import finetune_and_register

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = finetune_and_register(
        task="view", encoder=str(downstream_archive.encoder_path), shards=str(downstream_archive.shards),
        labels=str(downstream_archive.labels_path), manifest=str(downstream_archive.manifest_path),
        out=str(tmp_path / "view"), tracking_uri=tracking_uri,
        options=FinetuneOptions(strategy="linear", epochs=1, seed=1), return_state=True,
    )
    assert state.is_completed()
    result = state.result()
    assert result["model_uri"] == "models:/echofm-view/1"
    assert result["promotion"]["promoted"] and result["promotion"]["reason"] == "no champion yet"
    # The evaluate step re-scored the saved checkpoint: same numbers as the training run's test split.
    assert result["test"]["accuracy"] == pytest.approx(result["pretrained"]["test"]["accuracy"])
    assert result["random_init"]["test"].keys() == result["pretrained"]["test"].keys()

    client = MlflowClient(tracking_uri=tracking_uri)
    assert str(client.get_model_version_by_alias("echofm-view", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("echofm-view", "challenger").version) == "1"

    with get_client(sync_client=True) as prefect:
        flow_run_id = state.state_details.flow_run_id
        runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    steps = sorted(runs, key=lambda r: r.start_time)
    assert [r.name.rsplit("-", 1)[0] for r in steps] == ["finetune", "evaluate", "register", "promote"]
    assert all(r.state.is_completed() for r in steps)
