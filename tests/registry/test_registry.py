"""Registration and promotion through a real `mlflow server` on localhost.

The server is started as a subprocess (SQLite backend, local artifact destination), used through
HTTP only, and stopped at the end of the module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from echofm.downstream.finetune import FinetuneConfig, finetune
from echofm.downstream.task import PromotionRule
from echofm.downstream.tasks import TASKS
from echofm.errors import RegistryError
from echofm.registry.promote import PROMOTION_RULES, promote, registered_versions
from echofm.registry.register import log_and_register
from echofm.registry.views import RegistryViewClassifier
from echofm.representation.report import EncoderMeasures, RepresentationReport
from echofm.store import CHALLENGER, CHAMPION, tracking_uri_scope
from echofm.downstream.splits import SplitConfig
from tests.factories.servers import mlflow_server_process, wait_for_http
from tests.factories.weights import timm_vit_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
SPLIT = SplitConfig(seed=1)


@pytest.fixture(scope="module")
def mlflow_process(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` starting in the background (SQLite backend, local artifact destination)."""
    with mlflow_server_process(tmp_path_factory.mktemp("mlflow-server")) as started:
        yield started


@pytest.fixture(scope="module")
def mlflow_server(mlflow_process, downstream_archive) -> str:
    """The server's URL once it answers /health (the archive is generated while it boots)."""
    process, url, log_path = mlflow_process
    wait_for_http(f"{url}/health", 180, process, log_path)
    return url


def _finetune(archive, out: Path, **overrides):
    config = FinetuneConfig(**{"task": "ef", "strategy": "linear", "epochs": 1, "split": SPLIT, **overrides})
    return finetune(config, encoder=archive.encoder_path, shards=archive.shards, labels=archive.labels_path,
                    manifest=archive.manifest_path, out_dir=out)


def test_rules_judge_each_task_by_its_primary_metric() -> None:
    assert set(PROMOTION_RULES) == set(TASKS.names())
    for task in TASKS:
        assert (PROMOTION_RULES[task.name].metric, PROMOTION_RULES[task.name].higher_is_better) == (
            task.primary_metric, task.higher_is_better)
    assert TASKS["reduced_ef"].model_name == "echofm-reduced-ef"
    assert TASKS.by_model_name("echofm-reduced-ef").name == "reduced_ef"


def test_register_promote_and_load_champion(mlflow_server, downstream_archive, tmp_path) -> None:
    first = _finetune(downstream_archive, tmp_path / "v1")
    v1 = log_and_register(first, tracking_uri=mlflow_server)
    decision = promote("echofm-ef", tracking_uri=mlflow_server)
    assert decision.promoted and decision.reason == "no champion yet"

    # A second version, evaluated on the same set, against a rule it cannot meet: no promotion.
    # It is also compared with an imported ImageNet-style baseline beside the random one.
    imagenet = timm_vit_file(tmp_path / "vit_tiny.safetensors")
    second = _finetune(downstream_archive, tmp_path / "v2", strategy="mlp",
                       compare=("random", f"imagenet:{imagenet}"))
    v2 = log_and_register(second, tracking_uri=mlflow_server)
    strict = {**PROMOTION_RULES, "ef": replace(PROMOTION_RULES["ef"], min_improvement=1e6)}
    kept = promote("echofm-ef", tracking_uri=mlflow_server, rules=strict)
    assert not kept.promoted and kept.champion_version == v1.version
    assert kept.challenger_value == pytest.approx(second.test_metrics["mae"])
    assert kept.champion_value == pytest.approx(first.test_metrics["mae"])

    # The code's own threshold decides: promoted exactly when MAE drops by >= 0.5 points.
    decided = promote("echofm-ef", tracking_uri=mlflow_server)
    gain = first.test_metrics["mae"] - second.test_metrics["mae"]
    assert decided.promoted == (gain >= 0.5)
    lenient = {**PROMOTION_RULES, "ef": PromotionRule("mae", higher_is_better=False, min_improvement=-1e6)}
    assert promote("echofm-ef", tracking_uri=mlflow_server, rules=lenient).promoted or decided.promoted

    versions = {v["version"]: v["aliases"] for v in registered_versions("echofm-ef", tracking_uri=mlflow_server)}
    assert CHAMPION in versions[v2.version] and CHALLENGER in versions[v2.version]
    assert versions[v1.version] == []

    import mlflow
    from mlflow import MlflowClient

    with tracking_uri_scope(mlflow_server):
        version = MlflowClient().get_model_version("echofm-ef", v2.version)
        assert version.tags["manifest_digest"] == second.manifest_digest
        assert version.tags["code_version"] and "parent_run_id" in version.tags
        assert "Intended use" in version.description and "random-init" in version.description
        # Every arm side by side: in the card's table, the version's tags and the run's metrics.
        assert f"imagenet (timm-vit: `{imagenet}`)" in version.description
        assert float(version.tags["eval.imagenet.mae"]) == pytest.approx(second.baselines["imagenet"].metrics["test"]["mae"])
        assert float(version.tags["eval.random.mae"]) == pytest.approx(second.random_init.metrics["test"]["mae"])
        assert version.tags["baseline.imagenet.source"] == str(imagenet)
        run_metrics = MlflowClient().get_run(version.run_id).data.metrics
        assert {"pretrained/test_mae", "random/test_mae", "imagenet/test_mae"} <= set(run_metrics)
        model = mlflow.pyfunc.load_model("models:/echofm-ef@champion")
        rng = np.random.default_rng(0)
        grey = rng.integers(0, 255, size=(2, 19, 45, 61, 1), dtype=np.uint8)
        colour = rng.integers(0, 255, size=(1, 40, 30, 30, 3), dtype=np.uint8)
        out_grey, out_colour = model.predict(grey), model.predict(colour)
        # Grey without a channel axis, and clips of different lengths and sizes in one call.
        out_grey_4d = model.predict(grey[..., 0])
        mixed = np.empty(3, dtype=object)  # MLflow takes clips of different sizes as a 1-D object array
        for i, clip in enumerate((grey[0], colour[0], grey[1, ..., 0])):
            mixed[i] = clip
        out_mixed = model.predict(mixed)
    assert list(out_grey.columns) == ["ef.value"] and len(out_grey) == 2 and np.isfinite(out_grey["ef.value"]).all()
    assert len(out_colour) == 1
    np.testing.assert_allclose(out_grey_4d["ef.value"], out_grey["ef.value"], rtol=1e-6)
    np.testing.assert_allclose(out_mixed["ef.value"], [out_grey["ef.value"][0], out_colour["ef.value"][0], out_grey["ef.value"][1]], rtol=1e-5)
    from echofm.registry.pyfunc import predict_clips

    np.testing.assert_allclose(out_grey["ef.value"], predict_clips(second.model, grey)["ef.value"], rtol=1e-5)
    # The tracking URI was only borrowed: nothing leaks into the environment.
    assert os.environ.get("MLFLOW_TRACKING_URI") != mlflow_server


def test_promotion_needs_a_challenger_and_comparable_evaluations(mlflow_server, downstream_archive, tmp_path) -> None:
    with pytest.raises(RegistryError):
        promote("echofm-segmentation", tracking_uri=mlflow_server)
    # echofm-ef has a champion from the previous test; this version used another patient split,
    # so its recorded test metrics are not comparable with the champion's.
    other_split = _finetune(downstream_archive, tmp_path / "v3", split=SplitConfig(seed=7))
    v3 = log_and_register(other_split, tracking_uri=mlflow_server)
    with pytest.raises(RegistryError):
        promote("echofm-ef", tracking_uri=mlflow_server)
    # Given the evaluation set, both versions are re-scored on the same clips and a decision taken.
    decision = promote("echofm-ef", tracking_uri=mlflow_server,
                       evaluation={"shards": downstream_archive.shards, "labels": downstream_archive.labels_path,
                                   "manifest": downstream_archive.manifest_path})
    assert decision.challenger_version == v3.version
    assert decision.challenger_value is not None and decision.champion_value is not None
    gain = decision.champion_value - decision.challenger_value
    assert decision.promoted == (gain >= PROMOTION_RULES["ef"].min_improvement)


def test_registry_view_classifier_for_ingestion(mlflow_server, downstream_archive, tmp_path) -> None:
    from echofm.ingest.views import CANONICAL_VIEWS, ViewClassifier, ViewPrediction

    result = _finetune(downstream_archive, tmp_path / "view", task="view", strategy="attentive")
    log_and_register(result, tracking_uri=mlflow_server)
    assert promote("echofm-view", tracking_uri=mlflow_server).promoted
    classifier = RegistryViewClassifier(tracking_uri=mlflow_server)
    assert isinstance(classifier, ViewClassifier) and classifier.needs_pixels
    frames = np.random.default_rng(1).integers(0, 255, size=(32, 64, 64, 1), dtype=np.uint8)
    view, confidence = classifier.classify_frames(frames)
    assert view in result.task.classes and 0.0 <= confidence <= 1.0
    prediction = classifier.classify({}, frames)
    assert isinstance(prediction, ViewPrediction) and prediction.view in CANONICAL_VIEWS
    assert prediction.source == "model:models:/echofm-view@champion"


def test_finetune_from_the_registered_encoder(mlflow_server, downstream_archive, tmp_path, monkeypatch) -> None:
    """`--encoder models:/echofm-encoder@challenger`: the encoder as pretraining registers it."""
    from echofm.downstream.encoder import load_encoder
    from echofm.pretrain.tracker import DatasetRecord, PretrainTracker

    encoder = load_encoder(downstream_archive.encoder_path)
    # Pretraining picks its store from MLFLOW_TRACKING_URI; monkeypatch restores it afterwards.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tracker = PretrainTracker(tmp_path / "run", experiment_name="pretrain-for-finetune-test")
    (tmp_path / "run").mkdir(exist_ok=True)
    run_id = tracker.start(params={"preset": "tiny"}, resume=False,
                           dataset=DatasetRecord(source="test", digest="0" * 64, clip_ids=[], shards=[]))
    learned = RepresentationReport(
        n_clips=64, width=192, step=10,
        pretrained=EncoderMeasures(mean_cosine=0.6, rankme=30.0, knn_view_accuracy=0.8, ef_r2=0.3),
        random=EncoderMeasures(mean_cosine=0.9, rankme=20.0, knn_view_accuracy=0.7, ef_r2=0.1),
    )
    tracker.register_encoder(encoder.model, checkpoint=downstream_archive.encoder_path, name="echofm-encoder",
                             tags={}, report=learned)
    # A collapsed encoder from the same run, version 2: it must never become champion.
    collapsed = replace(learned, pretrained=EncoderMeasures(mean_cosine=0.99, rankme=3.0,
                                                            knn_view_accuracy=0.6, ef_r2=0.0))
    tracker.register_encoder(encoder.model, checkpoint=downstream_archive.encoder_path, name="echofm-encoder",
                             tags={}, report=collapsed)
    tracker.end()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    result = finetune(FinetuneConfig(task="ef", epochs=1, split=SPLIT, compare="none"),
                      encoder="models:/echofm-encoder@challenger", shards=downstream_archive.shards,
                      labels=downstream_archive.labels_path, manifest=downstream_archive.manifest_path,
                      tracking_uri=mlflow_server)
    assert result.parent_run_id == run_id
    assert result.encoder_source == "models:/echofm-encoder@challenger"
    # The frozen encoder is exactly the checkpoint the pretraining run registered.
    tuned = result.model.encoder.state_dict()
    assert all(torch.equal(value, tuned[name]) for name, value in encoder.model.state_dict().items())


def test_encoder_becomes_champion_only_when_every_downstream_model_was_promoted(mlflow_server) -> None:
    from mlflow import MlflowClient

    from echofm.registry.promote import promote_encoder

    # The encoder registered by the previous test is version 1 of echofm-encoder.
    kept = promote_encoder("echofm-encoder", "1", [{"name": "echofm-ef", "promoted": True},
                                                   {"name": "echofm-view", "promoted": False}],
                           tracking_uri=mlflow_server)
    assert not kept["promoted"] and "echofm-view" in kept["reason"]
    assert not promote_encoder("echofm-encoder", "1", [], tracking_uri=mlflow_server)["promoted"]
    with tracking_uri_scope(mlflow_server):
        assert "champion" not in (MlflowClient().get_model_version("echofm-encoder", "1").aliases or [])

    won = promote_encoder("echofm-encoder", "1", [{"name": "echofm-ef", "promoted": True}], tracking_uri=mlflow_server)
    assert won["promoted"] and won["representation_gate"]["passed"]
    with tracking_uri_scope(mlflow_server):
        assert MlflowClient().get_model_version_by_alias("echofm-encoder", "champion").version == "1"


def test_a_collapsed_encoder_stays_off_champion_however_its_downstream_models_did(mlflow_server, caplog) -> None:
    from mlflow import MlflowClient

    from echofm.registry.promote import promote_encoder

    # Version 2 (registered above with a collapsed report); version 1 is champion.
    with tracking_uri_scope(mlflow_server):
        card = MlflowClient().get_model_version("echofm-encoder", "2").description
    assert "| mean_cosine | 0.990 | 0.900 | lower |" in card and "representation gate failed" in card
    with caplog.at_level(logging.WARNING, logger="echofm.registry.promote"):
        decision = promote_encoder("echofm-encoder", "2", [{"name": "echofm-ef", "promoted": True}],
                                   tracking_uri=mlflow_server)
    assert not decision["promoted"]
    assert "mean cosine 0.990 > 0.9" in decision["reason"] and "knn_view_accuracy 0.600 worse" in decision["reason"]
    assert any("stays off champion" in r.getMessage() for r in caplog.records)
    with tracking_uri_scope(mlflow_server):
        assert MlflowClient().get_model_version_by_alias("echofm-encoder", "champion").version == "1"


def test_export_a_registered_encoder_with_its_records(mlflow_server, downstream_archive, tmp_path) -> None:
    from mlflow import MlflowClient

    from echofm.model import load_pretrained
    from echofm.registry.export import export_encoder

    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment("export-test")
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "loss", 0.4375)
    client.log_artifact(run_id, str(downstream_archive.encoder_path), "encoder")
    name, digest = "echofm-encoder-export", "d1" * 32
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/encoder", run_id=run_id,
                                          tags={"manifest_digest": digest, "preset": "tiny"})
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    out, card = export_encoder(f"models:/{name}@{CHALLENGER}", tmp_path / "export", tracking_uri=mlflow_server)
    assert card.data == {"manifest digest": digest} and card.metrics == {"loss": 0.4375}
    readme = (out / "README.md").read_text()
    assert digest in readme and "EchoFM encoder (tiny)" in readme
    video = torch.randn(1, 3, 8, 32, 32)
    exported, original = load_pretrained(out), load_pretrained(downstream_archive.encoder_path)
    with torch.no_grad():
        assert torch.equal(exported.eval().forward_features(video), original.eval().forward_features(video))
