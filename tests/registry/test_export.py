"""`echofm export MODEL DIR`: a run directory or a published checkpoint as a self-describing folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from echofm.cli import export as export_command
from echofm.cli import main
from echofm.model import build_model, load_pretrained, save_checkpoint
from echofm.model.weights import FORMATS
from tests.factories.weights import timm_vit_file

NORMALIZATION = {"mean": [0.21, 0.21, 0.21], "std": [0.18, 0.18, 0.18], "n_clips": 6}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A pretraining run directory as `echofm pretrain` leaves it (encoder.pt + result.json)."""
    torch.manual_seed(0)
    model = build_model("tiny", img_size=32, num_frames=16, patch_size=8)
    run = tmp_path / "run"
    save_checkpoint(run / "encoder.pt", model, extra={
        "normalization": NORMALIZATION, "mlflow_run_id": None, "step": 40,
        "pretrain_config": {"preset": "tiny", "steps": 40, "batch_size": 4, "base_lr": 1.5e-4,
                            "precision": "fp32", "model_overrides": {"img_size": 32}}})
    (run / "result.json").write_text(json.dumps({"final_loss": 0.8125, "clips_per_s": 12.5,
                                                 "checkpoint": str(run / "checkpoints" / "x.pt")}))
    return run


def test_export_a_run_directory(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "published"
    assert main(["export", str(run_dir), str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["files"] == ["README.md", "config.json", "model.safetensors"]
    assert printed["normalization"] == NORMALIZATION and printed["metrics"]["final_loss"] == 0.8125
    exported, original = load_pretrained(out), load_pretrained(run_dir)
    video = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(exported.eval().forward_features(video), original.eval().forward_features(video))
    card = (out / "README.md").read_text()
    assert "# EchoFM encoder (tiny)" in card and "| optimiser steps | 40 |" in card
    assert "| final_loss | 0.8125 |" in card and "0.21" in card
    assert str(tmp_path) not in card  # the card names no path
    # A folder holding other files is refused: exit status 2, nothing overwritten.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), str(tmp_path / "notes")]) == 2
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_export_an_imported_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vit = timm_vit_file(tmp_path / "vit_tiny.safetensors")
    assert main(["export", str(vit), str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "timm-vit encoder, imported by echofm-pipeline"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Provenance" in card and "inflated from 1 to 4 frames" in card
    assert load_pretrained(tmp_path / "out").load_report.format == "echofm"


def test_the_commands_format_choices_are_the_loaders() -> None:
    assert export_command.FORMATS == FORMATS
