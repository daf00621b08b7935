"""The comparison arms of fine-tuning: parsing `--compare`, building each baseline encoder, and
the side-by-side table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from echofm.downstream.baselines import (
    Baseline,
    BaselineError,
    comparison_table,
    parse_baselines,
    summary_arms,
)
from echofm.downstream.config import FinetuneConfigError, FinetuneOptions
from echofm.downstream.encoder import baseline_encoder
from echofm.model import build_model
from echofm.model.weights import WeightsError
from tests.factories.weights import timm_vit_file


def test_parse_baselines() -> None:
    parsed = parse_baselines("random, imagenet:/w/vit.safetensors,kinetics:models:/k400@champion")
    assert parsed == (Baseline("random"), Baseline("imagenet", "/w/vit.safetensors"),
                      Baseline("kinetics", "models:/k400@champion"))
    assert [b.spec for b in parsed][2] == "kinetics:models:/k400@champion"
    assert parse_baselines(["echofm-published:a.pth"]) == (Baseline("echofm-published", "a.pth"),)
    assert parse_baselines("") == parse_baselines("none") == ()
    assert parse_baselines(["random", "imagenet:a"]) == (
        Baseline("random"), Baseline("imagenet", "a"))
    for bad, message in [("imagenet", "NAME:SOURCE"), ("models:/x@y", "cannot name"),
                         ("Image Net:x", "cannot name"), ("random:x.pth", "cannot name"),
                         ("pretrained:x", "cannot name"), ("a:x,a:y", "twice")]:
        with pytest.raises(BaselineError, match=message):
            parse_baselines(bad)
    # The option: random by default, entries normalised, bad ones refused with the stage's error.
    assert FinetuneOptions().compare == ("random",)
    assert FinetuneOptions(compare=["random,imagenet:a.pth"]).compare == ("random", "imagenet:a.pth")
    with pytest.raises(FinetuneConfigError, match="compare"):
        FinetuneOptions(compare="imagenet")


def test_baseline_encoders_take_the_chosen_encoders_input(tmp_path: Path) -> None:
    chosen = build_model("tiny", img_size=32, num_frames=8, patch_size=8)
    random, report = baseline_encoder(Baseline("random"), chosen, seed=3)
    assert report is None and random.config == chosen.config
    assert not torch.equal(random.blocks[0].mlp.fc1.weight, chosen.blocks[0].mlp.fc1.weight)
    path = timm_vit_file(tmp_path / "imagenet.safetensors", depth=1, img_size=64, patch_size=16)
    imported, report = baseline_encoder(Baseline("imagenet", str(path)), chosen, seed=3)
    assert report.format == "timm-vit" and imported.config.depth == 1
    assert (imported.config.num_frames, imported.config.img_size) == (8, 32)
    assert "bicubically from 4x4 to 2x2" in report.converted["pos_embed_spatial"].how
    torch.save({"model": {"blocks.0.attn.q.weight": torch.zeros(2, 2)}}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="bad.pth: not a complete .* 'patch_embed.proj.weight'"):
        baseline_encoder(Baseline("kinetics", str(tmp_path / "bad.pth")), chosen, seed=3)


def test_comparison_table_and_older_summaries() -> None:
    arms = {"pretrained": {"test": {"mae": 4.0, "r2": 0.5}}, "random": {"test": {"mae": 7.0}}}
    assert comparison_table(arms) == {"mae": {"pretrained": 4.0, "random": 7.0}, "r2": {"pretrained": 0.5}}
    old = {"pretrained": {"metrics": {}}, "random_init": {"metrics": {"test": {"mae": 7.0}}}}
    assert list(summary_arms(old)) == ["pretrained", "random"]
    assert list(summary_arms({"pretrained": {}, "random_init": None})) == ["pretrained"]
