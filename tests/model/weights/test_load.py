"""The load report and the refusal rule: nothing random, nothing dropped, unless asked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from echofm.model.weights import IncompleteWeights, WeightsConversionError, load_pretrained
from echofm.model.weights.report import compact_names
from tests.factories.weights import VideoViT, mae_st_state


@pytest.fixture
def mae_st_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = mae_st_state(VideoViT())
    torch.save({"model": state}, tmp_path / "mae_st.pth")
    return tmp_path / "mae_st.pth", state


def test_the_report_names_every_tensor_of_file_and_model(
    mae_st_file: tuple[Path, dict[str, torch.Tensor]], caplog: pytest.LogCaptureFixture
) -> None:
    path, state = mae_st_file
    with caplog.at_level(logging.INFO, logger="echofm.model.weights.load"):
        model = load_pretrained(path)
    report = model.load_report
    assert set(report.file_tensors()) == set(state)
    assert [r.name for r in report.model_tensors] == list(model.state_dict())
    assert {r.status for r in report.model_tensors} <= {"mapped", "converted", "initialised"}
    assert report.summary() in caplog.text and "loaded " in caplog.text
    counts = report.counts()
    assert counts["encoder"]["converted"] == 2 * 2  # q/k/v weight and bias per block
    json.dumps(report.to_dict(), default=str)  # what a run stores


def test_missing_encoder_tensors_are_refused_unless_allowed(
    mae_st_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    _, state = mae_st_file
    del state["blocks.1.mlp.fc1.weight"], state["norm.bias"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(IncompleteWeights) as info:
        load_pretrained(tmp_path / "broken.pth")
    message = str(info.value)
    assert "blocks.1.mlp.fc1.weight" in message and "norm.bias" in message
    assert "allow_partial=True" in message and info.value.path == tmp_path / "broken.pth"
    assert set(info.value.missing) == {"blocks.1.mlp.fc1.weight", "norm.bias"}
    model = load_pretrained(tmp_path / "broken.pth", allow_partial=True)
    assert set(model.load_report.missing_encoder) == {"blocks.1.mlp.fc1.weight", "norm.bias"}
    assert model.load_report.initialised["norm.bias"].how == "not in the file"


def test_weights_into_a_model_of_other_widths_are_refused(
    mae_st_file: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    path, _ = mae_st_file
    with pytest.raises(IncompleteWeights) as info:
        load_pretrained(path, preset="tiny")  # 192 wide, 4 blocks; the file: 64 wide, 2 blocks
    message = str(info.value)
    assert "a 64-wide encoder of 2 blocks, the requested model is 192-wide with 4" in message
    assert "blocks.{0-1}.attn.qkv.weight (file shape [192, 64] does not fit [576, 192])" in message
    assert "blocks.{2-3}.norm1.weight" in message and "(not in the file)" in message
    model = load_pretrained(path, preset="tiny", allow_partial=True)
    ignored = {r.name: r.how for r in model.load_report.ignored}
    assert "does not fit" in ignored["blocks.0.mlp.fc1.weight"]


def test_source_encoder_parts_without_a_place_are_refused(tmp_path: Path) -> None:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32,
                            reg_tokens=2, no_embed_class=True)
    save_file(vit.state_dict(), tmp_path / "vit_reg.safetensors")
    with pytest.raises(IncompleteWeights, match="reg_token") as info:
        load_pretrained(tmp_path / "vit_reg.safetensors")
    assert info.value.dropped == ["reg_token"]
    model = load_pretrained(tmp_path / "vit_reg.safetensors", allow_partial=True)
    assert model.load_report.file_tensors()["reg_token"][0] == "ignored"
    # No position embedding on CLS in this source: exactly zeros.
    assert "zeros" in model.load_report.converted["pos_embed_class"].how


def test_bad_requests_are_named(mae_st_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, _ = mae_st_file
    with pytest.raises(WeightsConversionError, match="inflation"):
        load_pretrained(path, inflation="nearest")
    with pytest.raises(WeightsConversionError, match="unknown model preset"):
        load_pretrained(path, preset="gigantic")
    with pytest.raises(WeightsConversionError, match="img_sise"):
        load_pretrained(path, img_sise=64)


def test_compact_names() -> None:
    names = [f"blocks.{i}.norm1.weight" for i in (0, 1, 2, 5)] + ["norm.weight"]
    assert compact_names(names) == "blocks.{0-2,5}.norm1.weight, norm.weight"
