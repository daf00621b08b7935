"""Checkpoints: round trip, the seed's format, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from echofm.model import (
    CheckpointError,
    MaskedAutoencoderViT,
    ModelConfig,
    build_model,
    infer_config,
    load_checkpoint,
    save_checkpoint,
)

from tests.factories.model import make_video, seeded


def _same_outputs(a: MaskedAutoencoderViT, b: MaskedAutoencoderViT) -> None:
    video = make_video(a.config)
    a.eval()
    b.eval()
    with torch.no_grad():
        assert torch.equal(a.forward_tokens(video), b.forward_tokens(video))
        out_a = a(video, generator=seeded(7))
        out_b = b(video, generator=seeded(7))
    assert torch.equal(out_a.pred, out_b.pred) and torch.equal(out_a.loss, out_b.loss)


def test_round_trip(tmp_path: Path, micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(micro_config, mask_mode="tube", norm_pix_loss=True)
    optimizer = torch.optim.AdamW(model.parameters())
    model(make_video(micro_config)).loss.backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, epoch=3,
                           optimizer=optimizer.state_dict(), extra={"dataset": "synthetic"})
    assert path.exists() and not path.with_name("model.pt.tmp").exists()
    loaded, ckpt = load_checkpoint(path)
    assert loaded.config == model.config
    assert ckpt["epoch"] == 3 and ckpt["dataset"] == "synthetic"
    assert ckpt["config"]["mask_mode"] == "tube"
    assert "state" in ckpt["optimizer"]
    _same_outputs(model, loaded)


def test_reserved_keys_are_refused(tmp_path: Path, micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "m.pt", model, extra={"model": {}})


def test_seed_format_infers_the_config_from_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", img_size=32, num_frames=16, patch_size=8)
    torch.save({"model": model.state_dict()}, tmp_path / "seed.pth")
    loaded, _ = load_checkpoint(tmp_path / "seed.pth")
    assert loaded.config == model.config
    _same_outputs(model, loaded)


def test_seed_format_with_explicit_config(tmp_path: Path, micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    torch.save({"model": model.state_dict()}, tmp_path / "seed.pth")
    # Widths that match no preset cannot be inferred (head counts are not in the shapes) ...
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(tmp_path / "seed.pth")
    # ... but load with the config given explicitly.
    loaded, _ = load_checkpoint(tmp_path / "seed.pth", config=micro_config)
    _same_outputs(model, loaded)


def test_seed_format_with_split_qkv(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", img_size=32, num_frames=16, patch_size=8)
    state = {}
    for key, value in model.state_dict().items():
        if ".attn.qkv." in key:
            stem, kind = key.split(".attn.qkv.")
            for name, part in zip("qkv", value.chunk(3)):
                state[f"{stem}.attn.{name}.{kind}"] = part.clone()
        else:
            state[key] = value
    torch.save({"model": state}, tmp_path / "split.pth")
    loaded, _ = load_checkpoint(tmp_path / "split.pth")
    _same_outputs(model, loaded)


def test_published_projector_names_load_onto_the_slice_projector(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", img_size=32, num_frames=16, patch_size=8)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("slice_projector.norm."):
            continue  # the published projector reused the encoder's final norm
        key = key.replace("slice_projector.block.", "decoder_block.")
        state[key.replace("slice_projector.cls_token", "decoder_prj_cls_token")] = value
    with torch.no_grad():
        model.slice_projector.norm.load_state_dict(model.norm.state_dict())
    torch.save({"model": state}, tmp_path / "published.pth")
    loaded, _ = load_checkpoint(tmp_path / "published.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_file_without_the_slice_projector_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", img_size=32, num_frames=16, patch_size=8)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("slice_projector.")}
    torch.save({"model": state}, tmp_path / "older.pth")
    with caplog.at_level("WARNING"):
        loaded, _ = load_checkpoint(tmp_path / "older.pth")
    assert "no slice projector" in caplog.text
    video = make_video(model.config)
    with torch.no_grad():  # the encoder and the reconstruction do not use it
        assert torch.equal(model.eval().forward_tokens(video), loaded.eval().forward_tokens(video))
        assert torch.equal(model(video, generator=seeded(7)).pred,
                           loaded(video, generator=seeded(7)).pred)
    # Any other missing tensor is still an error.
    del state["blocks.0.mlp.fc1.bias"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="blocks.0.mlp.fc1.bias"):
        load_checkpoint(tmp_path / "broken.pth")


def test_large_shapes_infer_the_large_preset() -> None:
    with torch.device("meta"):
        model = build_model("large")
    assert infer_config(model.state_dict()) == model.config


def test_errors_name_the_file(tmp_path: Path, micro_config: ModelConfig) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(garbage)
    assert info.value.path == garbage
    torch.save({"weights": {}}, tmp_path / "nomodel.pt")
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_checkpoint(tmp_path / "nomodel.pt")
    save_checkpoint(tmp_path / "micro.pt", MaskedAutoencoderViT(micro_config))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "micro.pt", preset="tiny")
