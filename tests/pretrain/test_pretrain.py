from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from echofm.data.loader import ClipNormalization, file_digest
from echofm.model import build_model, load_checkpoint
from echofm.device import resolve_precision
from echofm.pretrain.config import PretrainConfig, PretrainConfigError
from echofm.pretrain.loop import pretrain
from echofm.pretrain.plan import plan_run
from echofm.pretrain.figures import collapse_warning, reconstruction_figure
from echofm.representation.report import EncoderMeasures, RepresentationReport
from echofm.store import resolve_tracking_uri, tracking_uri_scope
from tests.factories.shards import write_test_shards


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One short bf16 run with MLflow on the run directory's default SQLite store."""
    root = tmp_path_factory.mktemp("tracked")
    shards = root / "out" / "shards"
    write_test_shards(shards, [4, 4], side=32, manifest=True)
    config = PretrainConfig(
        preset="tiny",
        img_size=32,
        num_frames=16,
        steps=2,
        batch_size=2,
        num_workers=1,
        eval_every=1,
        holdout_clips=3,
        precision="bf16",
        experiment_name="test-pretrain",
    )
    import mlflow

    before = mlflow.get_tracking_uri()
    result = pretrain(config, shards, root / "run")
    # The run kept its records in its own store without redirecting this process's MLflow.
    assert mlflow.get_tracking_uri() == before and "MLFLOW_TRACKING_URI" not in os.environ
    return result, shards, root / "run"


def test_run_is_recorded_in_mlflow_and_the_encoder_registered(tracked_run):
    import mlflow
    from mlflow import MlflowClient

    result, shards, run_dir = tracked_run
    assert (run_dir / "mlflow.db").exists() and (run_dir / "mlartifacts").is_dir()
    client = MlflowClient(tracking_uri=resolve_tracking_uri(run_dir))
    run = client.get_run(result.run_id)
    assert run.data.params["preset"] == "tiny" and run.data.params["precision_used"] == "bf16"
    assert run.data.params["plan.peak_lr"] == str(1.5e-4 * 2 / 256)
    for metric in ("loss", "recon_loss", "triplet_loss", "lr", "clips_per_s", "data_wait_fraction"):
        history = client.get_metric_history(result.run_id, metric)
        assert [m.step for m in history] == [1, 2], metric
    for metric in ("repr/mean_cosine", "repr/rankme", "repr/view_gap", "repr/slice_contrast"):
        assert [m.step for m in client.get_metric_history(result.run_id, metric)] == [1, 2], metric
    # The random baseline is measured once, on the weights the run started from.
    assert {m.value for m in client.get_metric_history(result.run_id, "repr/random/mean_cosine")} == {
        result.representation["random"]["mean_cosine"]}
    tables = [a.path for a in client.list_artifacts(result.run_id, "representation")]
    assert tables == ["representation/report-step-00000001.json", "representation/report-step-00000002.json"]

    digest = file_digest(shards.parent / "manifest.parquet")
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == digest[:32]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "pretraining"

    figures = [a.path for a in client.list_artifacts(result.run_id, "figures")]
    assert figures == ["figures/reconstruction-step-00000001.png", "figures/reconstruction-step-00000002.png"]

    version = client.get_model_version_by_alias("echofm-encoder", "challenger")
    assert str(version.version) == result.registered.version and version.run_id == result.run_id
    assert version.tags["manifest_digest"] == digest
    assert version.tags["preset"] == "tiny" and version.tags["code_version"]
    recorded = RepresentationReport.from_dict(json.loads(version.tags["representation"]))
    assert recorded.step == 2 and recorded.n_clips == 8 and recorded.random is not None
    assert recorded.pretrained.mean_cosine == pytest.approx(result.representation["pretrained"]["mean_cosine"])
    assert "## Representation report" in version.description and "| mean_cosine |" in version.description

    with tracking_uri_scope(resolve_tracking_uri(run_dir)):
        encoder = mlflow.pytorch.load_model("models:/echofm-encoder@challenger")
    trained, ckpt = load_checkpoint(run_dir / "encoder.pt")
    assert ckpt["normalization"]["mean"] and ckpt["mlflow_run_id"] == result.run_id
    video = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        embedding = encoder(video)
        assert embedding.shape == (2, trained.config.embed_dim)
        torch.testing.assert_close(embedding, trained.eval().forward_features(video))


def test_collapse_warning_names_the_failed_measures(caplog):
    def report(cosine: float, rank: float, step: int) -> RepresentationReport:
        measures = EncoderMeasures(mean_cosine=cosine, rankme=rank)
        return RepresentationReport(n_clips=64, width=192, pretrained=measures, random=measures, step=step)

    with caplog.at_level(logging.WARNING, logger="echofm.pretrain.figures"):
        assert collapse_warning(report(0.99, 2.0, 7))
        assert not collapse_warning(report(0.5, 30.0, 8))
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "step 7" in message and "mean cosine 0.990 > 0.9" in message and "RankMe 2.0 < 6.4" in message


def test_reconstruction_figure_rows_show_original_masked_and_reconstruction():
    torch.manual_seed(0)
    model = build_model("tiny", img_size=32, num_frames=16).eval()
    norm = ClipNormalization(mean=(0.5,) * 3, std=(0.25,) * 3)
    video = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        out = model(video, 0.5)
    png = reconstruction_figure(model, video, out.pred, out.mask, norm, max_frames=4)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    scale = 128 // 32
    assert image.shape == ((6 * 32 + 5 * 2) * scale, (4 * 32 + 3 * 2) * scale)
    tile = lambda row, col: image[row * 34 * scale : (row * 34 + 32) * scale, col * 34 * scale : (col * 34 + 32) * scale]  # noqa: E731
    original, masked, reconstructed = tile(0, 0), tile(1, 0), tile(2, 0)
    hidden = masked == 128
    assert 0.3 < hidden.mean() < 0.7  # about half the patches are masked at ratio 0.5
    assert np.array_equal(reconstructed[~hidden], original[~hidden])  # visible patches pasted back
    assert not np.array_equal(reconstructed[hidden], original[hidden])


def test_plan_follows_the_scaling_rule_and_epochs():
    config = PretrainConfig(epochs=3, batch_size=4, accum_steps=2, base_lr=1e-3)
    plan = plan_run(config, n_clips=100, world_size=2)
    assert plan.effective_batch == 16 and plan.peak_lr == pytest.approx(1e-3 * 16 / 256)
    assert plan.steps_per_epoch == 7 and plan.total_steps == 21 and plan.warmup_steps == 1
    with pytest.raises(PretrainConfigError):
        PretrainConfig(steps=2, epochs=2)
    with pytest.raises(PretrainConfigError):
        PretrainConfig(steps=2, precision="fp8")
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"


def test_cli_options_become_the_config_and_bad_ones_exit_2(tmp_path, capsys):
    import argparse

    from echofm.cli import pretrain as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["pretrain", "--shards", str(tmp_path), "--epochs", "3", "--preset", "base", "--batch-size", "4",
         "--precision", "bf16", "--no-augment", "--img-size", "112"]
    )
    config = command.config_from_args(args)
    assert (config.epochs, config.steps, config.preset, config.batch_size) == (3, None, "base", 4)
    assert config.precision == "bf16" and config.augment is None and config.model_kwargs() == {"img_size": 112}
    bad = parser.parse_args(["pretrain", "--shards", str(tmp_path), "--steps", "0"])
    assert command.run(bad) == 2
    assert "invalid options" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--shards", str(tmp_path), "--steps", "1", "--epochs", "1"])


def test_a_run_resumed_from_its_last_checkpoint_registers_the_encoder_with_its_report(tmp_path):
    """Killed after its final checkpoint (before registration), the run resumes with no step
    left to train: it still measures the final weights, so the gate gets a report to read."""
    from mlflow import MlflowClient

    shards = tmp_path / "out" / "shards"
    write_test_shards(shards, [4, 4], side=32, manifest=True)
    config = PretrainConfig(
        preset="tiny", img_size=32, num_frames=16, steps=1, batch_size=2, num_workers=0, eval_every=1,
        holdout_clips=3, precision="fp32", experiment_name="test-resume-report",
    )
    first = pretrain(config, shards, tmp_path / "run")
    resumed = pretrain(config, shards, tmp_path / "run", resume=True)
    assert resumed.run_id == first.run_id and resumed.representation is not None
    assert resumed.representation["step"] == 1
    assert resumed.representation["pretrained"] == first.representation["pretrained"]  # the same weights
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tmp_path / "run"))
    version = client.get_model_version(resumed.registered.name, resumed.registered.version)
    assert RepresentationReport.from_dict(json.loads(version.tags["representation"])).step == 1
