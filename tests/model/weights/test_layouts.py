"""Each supported layout: built in the test, saved the way its project saves it, loaded.

Every test checks the load report (what was mapped, converted, initialised, ignored) and that the
loaded values are the file's; the EchoFM and timm ones also check that the loaded encoder
computes what the source computed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from echofm.model import MaskedAutoencoderViT, ModelConfig, preset_config, save_checkpoint
from echofm.model.weights import (
    LoadReport,
    UnknownWeightsFormat,
    WeightsConversionError,
    load_pretrained,
)
from tests.factories.weights import (
    VideoViT,
    additive_joint_table,
    mae_st_state,
    published_echofm,
    published_encoder_tokens,
    training_args,
    videomae_state,
)
from tests.factories.model import make_video

# The published EchoFM layout at test size: 64 wide (one head by the width rule), 4 time slices.
ECHOFM = ModelConfig(img_size=32, num_frames=16, patch_size=8, t_patch_size=4, embed_dim=64,
                     depth=2, num_heads=1, decoder_embed_dim=64, decoder_depth=1,
                     decoder_num_heads=2)


def _report(model: MaskedAutoencoderViT) -> LoadReport:
    return model.load_report


def _statuses(report: LoadReport, part: str) -> set[str]:
    return {r.status for r in report.model_tensors if r.part == part}


def _tokens_in_slot_order(model: MaskedAutoencoderViT, video: torch.Tensor) -> torch.Tensor:
    """`encode(video, mask_ratio=0)` tokens put back in slot order: `[B, 1 + L, D]`."""
    with torch.no_grad():
        latent = model.eval().encode(video, mask_ratio=0.0)
    patches = torch.empty_like(latent.tokens[:, 1:])
    patches.scatter_(1, latent.ids_keep.unsqueeze(-1).expand_as(patches), latent.tokens[:, 1:])
    return torch.cat([latent.tokens[:, :1], patches], dim=1)


def test_this_projects_checkpoint_loads_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = MaskedAutoencoderViT(preset_config("tiny", img_size=32, num_frames=16, patch_size=8))
    path = save_checkpoint(tmp_path / "encoder.pt", source, extra={"normalization": {"mean": [0.1]}})
    loaded = load_pretrained(tmp_path)  # the run directory
    report = _report(loaded)
    assert report.format == "echofm" and loaded.config == source.config
    assert {r.status for r in report.model_tensors} == {"mapped"} and not report.ignored
    assert report.extra["normalization"] == {"mean": [0.1]} and not report.assumed
    video = make_video(source.config)
    with torch.no_grad():
        assert torch.equal(source.eval().forward_tokens(video), loaded.eval().forward_tokens(video))
    assert load_pretrained(path).config == source.config


@pytest.mark.parametrize("bgr_to_rgb", [None, False])
def test_echofm_2024_gives_the_source_encoders_tokens(tmp_path: Path, bgr_to_rgb: bool | None) -> None:
    reference, state = published_echofm(ECHOFM, release=2024)
    torch.save({"model": state}, tmp_path / "echofm_2024.pth")
    loaded = load_pretrained(tmp_path / "echofm_2024.pth", bgr_to_rgb=bgr_to_rgb)
    report = _report(loaded)
    assert report.format == "echofm-2024" and loaded.config.embed_dim == 64
    assert not report.missing_encoder and _statuses(report, "projector") <= {"mapped", "converted"}
    video = make_video(loaded.config)
    # The release was trained on BGR frames: by default the patch embedding is converted so
    # that RGB input gives what BGR input gave the source.
    source_input = video.flip(1) if bgr_to_rgb is None else video
    expected = published_encoder_tokens(reference, source_input)
    assert torch.allclose(_tokens_in_slot_order(loaded, video), expected, atol=1e-5)
    how = report.converted["patch_embed.proj.weight"].how if bgr_to_rgb is None else ""
    assert ("BGR -> RGB" in how) == (bgr_to_rgb is None)
    qkv = report.converted["blocks.0.attn.qkv.weight"]
    assert qkv.sources == tuple(f"blocks.0.attn.{p}.weight" for p in "qkv")
    assert "shared" in report.converted["slice_projector.norm.weight"].how
    # 8 predicted frames of 16 in 4-frame tubelets: one per tubelet, used for each of the 4.
    assert "nearest in time" in report.converted["decoder_pred.weight"].how
    assert report.file_tensors()["decoder_cls_token"][0] == "ignored"
    assert torch.equal(loaded.slice_projector.cls_token, state["decoder_prj_cls_token"])


def test_echofm_2024_encoder_only_file(tmp_path: Path) -> None:
    _, state = published_echofm(ECHOFM, release=2024)
    encoder = {k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "encoder_only.pth")
    report = _report(load_pretrained(tmp_path / "encoder_only.pth"))
    assert report.format == "echofm-2024" and not report.ignored
    assert _statuses(report, "encoder") == {"mapped", "converted"}
    assert _statuses(report, "projector") == _statuses(report, "decoder") == {"initialised"}
    assert set(report.file_tensors()) == set(encoder)


def test_echofm_2026_builds_the_config_from_model_args(tmp_path: Path) -> None:
    reference, state = published_echofm(ECHOFM, release=2026)
    model_args = {"num_frames": 16, "t_patch_size": 4, "pred_t_dim": 8, "sep_pos_embed": True,
                  "cls_embed": True, "norm_pix_loss": True}
    torch.save({"model": state, "model_args": model_args}, tmp_path / "echofm_vitl.pth")
    loaded = load_pretrained(tmp_path / "echofm_vitl.pth")
    report = _report(loaded)
    assert report.format == "echofm-2026" and loaded.config.norm_pix_loss
    assert report.mapped["slice_projector.norm.weight"].sources == ("prj_norm.weight",)
    assert "patch_embed.proj.weight" in report.mapped  # RGB since 2026: no channel conversion
    video = make_video(loaded.config)
    assert torch.allclose(_tokens_in_slot_order(loaded, video),
                          published_encoder_tokens(reference, video), atol=1e-5)


def test_echofm_2026_joint_position_table_is_split_additively(tmp_path: Path) -> None:
    _, state = published_echofm(ECHOFM, release=2026)
    spatial, temporal = state.pop("pos_embed_spatial"), state.pop("pos_embed_temporal")
    joint = torch.cat([state.pop("pos_embed_class"), additive_joint_table(spatial, temporal)], 1)
    state["pos_embed"] = joint
    torch.save({"model": state, "model_args": {"num_frames": 16, "sep_pos_embed": False}},
               tmp_path / "joint.pth")
    loaded = load_pretrained(tmp_path / "joint.pth")
    report = _report(loaded)
    assert "additive least-squares" in report.converted["pos_embed_spatial"].how
    assert torch.allclose(additive_joint_table(loaded.pos_embed_spatial, loaded.pos_embed_temporal),
                          joint[:, 1:], atol=1e-6)
    assert torch.equal(loaded.pos_embed_class, joint[:, :1])


def test_mae_st_training_checkpoint_at_its_own_geometry_and_converted(tmp_path: Path) -> None:
    vit = VideoViT()  # 16 frames, tubelet 2: 8 x 4 x 4
    state = mae_st_state(vit)
    args = training_args(model="mae_vit_base_patch16", num_frames=16, t_patch_size=2,
                         num_heads=1, norm_pix_loss=True)
    torch.save({"model": state, "optimizer": {"state": {}}, "epoch": 3, "scaler": {}, "args": args},
               tmp_path / "checkpoint-00003.pth")
    own = load_pretrained(tmp_path / "checkpoint-00003.pth")
    report = _report(own)
    assert report.format == "mae-st" and own.config.t_patch_size == 2 and own.config.num_frames == 16
    assert own.config.num_heads == 1 and own.config.norm_pix_loss  # from the stored args
    assert torch.equal(own.pos_embed_temporal, state["pos_embed_temporal"])
    assert torch.equal(own.decoder_blocks[0].mlp.fc1.weight, state["decoder_blocks.0.mlp.fc1.weight"])
    assert _statuses(report, "projector") == {"initialised"}
    # Into 4-frame tubelets over 32 frames: the kernel keeps its sum over time, the temporal
    # table is resampled from 8 to 8 slices over the longer clip, nothing is left random.
    converted = load_pretrained(tmp_path / "checkpoint-00003.pth", t_patch_size=4, num_frames=32)
    kernel = state["patch_embed.proj.weight"]
    assert torch.allclose(converted.patch_embed.proj.weight.sum(dim=2), kernel.sum(dim=2), atol=1e-6)
    assert not _report(converted).missing_encoder
    merged = load_pretrained(tmp_path / "checkpoint-00003.pth", t_patch_size=4)
    assert "resampled linearly from 8 to 4" in _report(merged).converted["pos_embed_temporal"].how
    with pytest.raises(WeightsConversionError, match="whole multiple"):
        load_pretrained(tmp_path / "checkpoint-00003.pth", t_patch_size=3, num_frames=18)


def test_mae_st_released_kinetics_file_without_cls_and_with_joint_table(tmp_path: Path) -> None:
    vit = VideoViT()
    state = mae_st_state(vit, sep_pos_embed=False, cls_embed=False, decoder=False, head_classes=7)
    torch.save({"model_state": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "k400.pyth")
    loaded = load_pretrained(tmp_path / "k400.pyth")
    report = _report(loaded)
    assert report.format == "mae-st" and loaded.config.num_frames == 16
    assert "derived" in report.converted["cls_token"].how
    assert torch.equal(loaded.cls_token.flatten(), state["patch_embed.proj.bias"])
    assert torch.equal(loaded.pos_embed_class, torch.zeros(1, 1, vit.dim))
    assert report.file_tensors()["module.head.weight"] == ("ignored", "classifier head: not part of the encoder")
    assert report.mapped["blocks.1.norm1.weight"].sources == ("module.blocks.1.norm1.weight",)
    assert "num_frames" in report.assumed


def test_videomae_pretraining_file(tmp_path: Path) -> None:
    vit = VideoViT(dim=64, img=224, patch=16)  # the fixed table is regenerated at 16 x 224 x 224
    state = videomae_state(vit)
    torch.save({"model": state, "args": training_args(tubelet_size=2)}, tmp_path / "videomae.pth")
    loaded = load_pretrained(tmp_path / "videomae.pth")
    report = _report(loaded)
    assert report.format == "videomae"
    assert (loaded.config.num_frames, loaded.config.img_size, loaded.config.t_patch_size) == (16, 224, 2)
    assert {"num_frames", "img_size"} <= set(report.assumed)
    bias = loaded.blocks[1].attn.qkv.bias
    q, v = state["encoder.blocks.1.attn.q_bias"], state["encoder.blocks.1.attn.v_bias"]
    assert torch.equal(bias, torch.cat([q, torch.zeros_like(q), v]))
    assert torch.equal(loaded.blocks[1].attn.qkv.weight, state["encoder.blocks.1.attn.qkv.weight"])
    assert "sin-cos" in report.converted["pos_embed_spatial"].how
    assert torch.equal(loaded.decoder_embed.weight, state["encoder_to_decoder.weight"])
    assert torch.equal(loaded.decoder_pred.weight, state["decoder.head.weight"])
    assert loaded.config.decoder_num_heads == 1  # VideoMAE decoders: 64 channels per head
    assert not report.missing_encoder and not report.ignored


def test_videomae_v2_finetuned_file_folds_layer_scale(tmp_path: Path) -> None:
    vit = VideoViT()
    state = videomae_state(vit, pretraining=False, layer_scale=True, learned_pos=True,
                           head_classes=5)
    torch.save({"module": state}, tmp_path / "vit_s_k710_dl_from_giant.pth")
    loaded = load_pretrained(tmp_path / "vit_s_k710_dl_from_giant.pth")
    report = _report(loaded)
    gamma = state["blocks.0.gamma_1"]
    assert torch.allclose(loaded.blocks[0].attn.proj.weight,
                          state["blocks.0.attn.proj.weight"] * gamma.unsqueeze(1))
    assert "layer scale" in report.converted["blocks.0.mlp.fc2.bias"].how
    assert torch.equal(loaded.norm.weight, state["fc_norm.weight"])
    assert _statuses(report, "decoder") == {"initialised"}
    assert {r.name for r in report.ignored} == {"head.weight", "head.bias"}


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pth"])
def test_timm_image_vit_inflated_to_video(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64)
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(vit.state_dict(), path)
    else:
        torch.save(vit.state_dict(), path)
    loaded = load_pretrained(path, num_frames=4)  # one time slice: tokens comparable to timm's
    report = _report(loaded)
    assert report.format == "timm-vit" and loaded.config.t_patch_size == 4
    assert loaded.config.num_heads == 3 and not report.missing_encoder
    kernel = vit.patch_embed.proj.weight
    assert torch.allclose(loaded.patch_embed.proj.weight.sum(dim=2), kernel, atol=1e-6)
    assert torch.equal(loaded.pos_embed_spatial, vit.pos_embed[:, 1:])
    assert torch.equal(loaded.pos_embed_temporal, torch.zeros_like(loaded.pos_embed_temporal))
    image = make_video(ModelConfig(img_size=64, num_frames=1, embed_dim=192, num_heads=3,
                                   t_patch_size=1))[:, :, 0]
    with torch.no_grad():
        ours = loaded.eval().forward_tokens(image.unsqueeze(2).repeat(1, 1, 4, 1, 1))
        assert torch.allclose(ours, vit.eval().forward_features(image), atol=1e-4)


def test_timm_centre_inflation_and_resampled_grid(tmp_path: Path) -> None:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=64)
    save_file(vit.state_dict(), tmp_path / "model.safetensors")
    loaded = load_pretrained(tmp_path / "model.safetensors", inflation="centre", img_size=32)
    report = _report(loaded)
    assert torch.equal(loaded.patch_embed.proj.weight[:, :, 2], vit.patch_embed.proj.weight)
    assert "centre" in report.converted["patch_embed.proj.weight"].how
    assert "bicubically from 4x4 to 2x2" in report.converted["pos_embed_spatial"].how


def test_unknown_layout_and_format_are_named(tmp_path: Path) -> None:
    torch.save({"model": {"conv1.weight": torch.ones(2, 3, 3, 3)}}, tmp_path / "resnet.pth")
    with pytest.raises(UnknownWeightsFormat, match="conv1.weight"):
        load_pretrained(tmp_path / "resnet.pth")
    _, state = published_echofm(ECHOFM)
    torch.save({"model": state}, tmp_path / "echofm.pth")
    with pytest.raises(UnknownWeightsFormat, match="not one of"):
        load_pretrained(tmp_path / "echofm.pth", format="onnx")
    as_mae_st = _report(load_pretrained(tmp_path / "echofm.pth", format="mae-st"))
    assert as_mae_st.format == "mae-st" and "patch_embed.proj.weight" in as_mae_st.mapped
