"""Export folders: config.json + model.safetensors + README.md, no pickle, loads back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from echofm.model import MaskedAutoencoderViT, ModelConfig, load_pretrained
from echofm.model.weights import ExportError, ModelCard, UnreadableWeights, export_model
from tests.factories.model import make_video, seeded

NORMALIZATION = {"mean": [0.12, 0.12, 0.12], "std": [0.2, 0.2, 0.2], "n_clips": 8}


def _pickle_or_zip(path: Path) -> bool:
    head = path.read_bytes()[:4]
    return head[:1] == b"\x80" or head == b"PK\x03\x04"


def test_export_round_trip_is_exact_and_pickle_free(tmp_path: Path, micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(micro_config)
    card = ModelCard(data={"manifest digest": "ab12" * 16}, training={"steps": 20},
                     metrics={"ef_mae": 4.25})
    out = export_model(model, tmp_path / "export", card=card, normalization=NORMALIZATION,
                       library_version="0.1.0")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not any(_pickle_or_zip(p) for p in out.iterdir())
    described = json.loads((out / "config.json").read_text())
    assert described["format"] == "echofm-export" and described["model_config"]["embed_dim"] == 48
    assert described["input"]["normalization"] == NORMALIZATION

    loaded = load_pretrained(out)
    report = loaded.load_report
    assert loaded.config == model.config and report.format == "echofm"
    assert {r.status for r in report.model_tensors} == {"mapped"} and not report.ignored
    assert report.extra["normalization"] == NORMALIZATION
    video = make_video(micro_config)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.forward_tokens(video), loaded.forward_tokens(video))
        assert torch.equal(model(video, generator=seeded(3)).loss, loaded(video, generator=seeded(3)).loss)

    readme = (out / "README.md").read_text()
    for section in ("## Objective", "## Data", "## Metrics", "## Intended use", "## Limits"):
        assert section in readme
    assert "ab12" in readme and "ef_mae | 4.25" in readme and "75% of the tubelets" in readme


def test_export_refuses_foreign_folders_and_detects_changed_weights(
    tmp_path: Path, micro_config: ModelConfig
) -> None:
    model = MaskedAutoencoderViT(micro_config)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export folder"):
        export_model(model, tmp_path / "notes")
    out = export_model(model, tmp_path / "export")
    export_model(model, out)  # an earlier export is replaced
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(UnreadableWeights, match="sha256"):
        load_pretrained(out)
