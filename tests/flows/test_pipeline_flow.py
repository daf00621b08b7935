"""The whole pipeline as one flow run, and the demo's output-folder rule.

Runs `echofm-pipeline` (ingest -> pretrain under torchrun -> fine-tune -> evaluate -> register ->
promote) on a small synthetic archive against the session's real Prefect API, with MLflow in the
run directory, then checks what each stage left behind and the summary a user reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from echofm.cli.demo import DEMO_MARKER, DemoOutputNotOurs, demo_secret_file, prepare_output
from echofm.report import pipeline_report

pytestmark = pytest.mark.slow


def test_pipeline_runs_every_stage_and_gates_the_encoder(prefect_harness, tmp_path: Path, monkeypatch) -> None:
    from echofm.synth.archive import SMALL_ARCHIVE_OPTIONS, generate_archive
    from echofm.downstream.config import FinetuneOptions
    from echofm.downstream.splits import SplitConfig
    from echofm.ingest.config import IngestOptions
    from echofm.pretrain.config import PretrainOptions
    from flows.pipeline import echo_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    archive = generate_archive(tmp_path / "synth", 12, seed=1, faults=True, **SMALL_ARCHIVE_OPTIONS)
    from pydantic import SecretStr

    result = echo_pipeline(
        source=SecretStr(str(archive.archive_dir)),
        output=str(tmp_path / "ingest"),
        runs=str(tmp_path / "runs"),
        labels=str(archive.labels_csv),
        tasks=["ef"],
        ingest=IngestOptions(batch_size=8, workers=1),
        pretraining=PretrainOptions(steps=4, batch_size=2, img_size=32, num_frames=8, num_workers=0,
                                    holdout_clips=2, eval_every=4, ckpt_every=4, retries=0),
        finetuning=FinetuneOptions(epochs=2, split=SplitConfig(val_fraction=0.2, test_fraction=0.2)),
    )

    assert result["ingest"]["by_status"]["accepted"] >= 10
    assert set(result["ingest"]["by_status"]) == {"accepted", "rejected", "failed"}
    assert result["pretrain"]["step"] == 4
    assert result["tracking_uri"] == f"sqlite:///{(tmp_path / 'runs' / 'pretrain' / 'mlflow.db').resolve()}"
    assert result["downstream"]["ef"]["model_uri"].startswith("models:/echofm-ef/")
    # First models in an empty registry: each becomes champion; the encoder too, when four steps
    # of pretraining passed its representation gate (the labels' probes are measured).
    assert result["downstream"]["ef"]["promotion"]["promoted"]
    report = result["pretrain"]["representation"]
    assert report["step"] == 4 and report["n_labelled"]["ef"] == report["n_clips"] >= 10
    gate = result["encoder_promotion"]["representation_gate"]
    assert result["encoder_promotion"]["promoted"] == gate["passed"]
    encoder_aliases = result["registry"]["echofm-encoder"][0]["aliases"]
    assert ("champion" in encoder_aliases) == gate["passed"]
    assert [step for step, _ in result["losses"]["loss"]] == [1, 2, 3, 4]
    summary = result["summary"]
    assert "files by status" in summary and "echofm-ef: v1 @challenger/@champion" in summary
    assert "Representation (frozen encoder at step 4" in summary and "knn_view_accuracy" in summary
    assert gate["reason"] in summary


def test_report_puts_every_arm_side_by_side() -> None:
    text = pipeline_report(
        ingest={"files": 3, "clips": 2, "by_status": {"accepted": 2, "failed": 1}, "by_reason": {"not_dicom": 1}},
        pretrain={"step": 10, "final_loss": 0.5, "clips_per_s": 4.0},
        downstream={"ef": {"pretrained": {"test": {"mae": 5.5}}, "random_init": {"test": {"mae": 7.25}},
                           "baselines": {"random": {"test": {"mae": 7.25}}, "imagenet": {"test": {"mae": 6.0}}},
                           "promotion": {"promoted": False, "reason": "champion kept"}},
                    "view": {"pretrained": {"test": {"accuracy": 0.5}}, "random_init": {"test": {"accuracy": 0.75}},
                             "counts": {"test": {"clips": 12, "patients": 5}}, "promotion": {"promoted": True}}},
        losses={"loss": [(1, 1.5), (10, 0.5)]},
        registry={"echofm-ef": [{"version": "2", "aliases": ["challenger"]}, {"version": "1", "aliases": ["champion"]}]},
        ui_commands=["mlflow ui"],
    )
    assert "accepted 2, failed 1" in text and "not_dicom 1" in text
    assert "step 1: 1.5000  ->  step 10: 0.5000" in text
    header = next(line for line in text.splitlines() if line.strip().startswith("task"))
    assert header.split()[2:6] == ["pretrained", "random", "init", "imagenet"]
    ef_line = next(line for line in text.splitlines() if line.strip().startswith("ef"))
    assert ef_line.split()[1:6] == ["mae", "5.5", "7.25", "6", "champion"]
    assert ("view: the pretrained encoder does not beat random init (accuracy 0.5 vs 0.75 on 12 test clips of 5 patients;"
            in text)
    assert "Representation: no report" in text
    assert "echofm-ef: v2 @challenger, v1 @champion" in text


def test_report_prints_the_representation_report_beside_random_init() -> None:
    from echofm.representation.report import EncoderMeasures, RepresentationReport

    report = RepresentationReport(n_clips=96, width=192, step=300, n_labelled={"view": 96},
                                  pretrained=EncoderMeasures(mean_cosine=0.97, rankme=6.1, knn_view_accuracy=0.57),
                                  random=EncoderMeasures(mean_cosine=0.92, rankme=19.3, knn_view_accuracy=0.69))
    text = pipeline_report(ingest={}, pretrain={"step": 300, "representation": report.to_dict()}, downstream={},
                           losses={}, registry={}, encoder_promotion={"promoted": False, "reason": "gate failed"})
    assert "Representation (frozen encoder at step 300, 96 clips, labelled: view 96):" in text
    cosine = next(line for line in text.splitlines() if line.strip().startswith("mean_cosine"))
    assert cosine.split() == ["mean_cosine", "0.970", "0.920", "lower"]
    assert "representation gate failed: mean cosine 0.970 > 0.9" in text
    assert "encoder: not promoted (gate failed)" in text


def test_demo_replaces_only_its_own_output(tmp_path: Path) -> None:
    ours = tmp_path / "demo"
    prepare_output(ours)
    (ours / "leftover").write_text("from the last demo")
    prepare_output(ours)
    assert (ours / DEMO_MARKER).exists() and not (ours / "leftover").exists()

    theirs = tmp_path / "data"
    theirs.mkdir()
    (theirs / "precious.dcm").write_bytes(b"DICM")
    with pytest.raises(DemoOutputNotOurs):
        prepare_output(theirs)
    assert (theirs / "precious.dcm").exists()


def test_demo_keeps_its_secret_beside_its_output_and_reuses_it(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    prepare_output(out)
    key = demo_secret_file(out)
    assert key.parent == tmp_path and not key.resolve().is_relative_to(out.resolve())
    first = key.read_text()
    prepare_output(out)  # the next demo replaces the output, never the key
    assert demo_secret_file(out) == key and key.read_text() == first
