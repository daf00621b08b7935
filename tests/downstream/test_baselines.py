"""The comparison arms of fine-tuning: parsing `--compare` and building each baseline encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from echofm.model import build_model
from echofm.model.weights import WeightsError
from echofm.downstream.baselines import Baseline, BaselineError, baseline_encoder, parse_baselines


def test_parse_baselines() -> None:
    parsed = parse_baselines("random, imagenet:/w/vit.safetensors,kinetics:models:/k400@champion")
    assert parsed == (Baseline("random"), Baseline("imagenet", "/w/vit.safetensors"),
                      Baseline("kinetics", "models:/k400@champion"))
    assert [b.spec for b in parsed][2] == "kinetics:models:/k400@champion"
    assert parse_baselines(["echofm-published:a.pth"]) == (Baseline("echofm-published", "a.pth"),)
    assert parse_baselines("") == ()
    for bad, message in [("imagenet", "NAME:SOURCE"), ("models:/x@y", "cannot name"),
                         ("Image Net:x", "cannot name"), ("random:x.pth", "cannot name"),
                         ("pretrained:x", "cannot name"), ("a:x,a:y", "twice")]:
        with pytest.raises(BaselineError, match=message):
            parse_baselines(bad)


def test_baseline_encoders_take_the_chosen_encoders_input(tmp_path: Path) -> None:
    chosen = build_model("tiny", img_size=32, num_frames=8, patch_size=8)
    random, report = baseline_encoder(Baseline("random"), chosen, seed=3)
    assert report is None and random.config == chosen.config
    assert not torch.equal(random.blocks[0].mlp.fc1.weight, chosen.blocks[0].mlp.fc1.weight)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=64)
    save_file(vit.state_dict(), tmp_path / "imagenet.safetensors")
    imported, report = baseline_encoder(Baseline("imagenet", str(tmp_path / "imagenet.safetensors")),
                                        chosen, seed=3)
    assert report.format == "timm-vit" and imported.config.depth == 1
    assert (imported.config.num_frames, imported.config.img_size) == (8, 32)
    assert "bicubically from 4x4 to 2x2" in report.converted["pos_embed_spatial"].how
    torch.save({"model": {"blocks.0.attn.q.weight": torch.zeros(2, 2)}}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="bad.pth: not a complete .* 'patch_embed.proj.weight'"):
        baseline_encoder(Baseline("kinetics", str(tmp_path / "bad.pth")), chosen, seed=3)
