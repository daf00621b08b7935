"""Weights containers: suffixes, where the state dict sits, prefixes, and no unpickling."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from echofm.model.weights import UnreadableWeights
from echofm.model.weights.files import read_weights, strip_prefixes
from tests.factories.weights import training_args

STATE = {"patch_embed.proj.weight": torch.ones(2, 3, 1, 2, 2), "norm.weight": torch.arange(2.0)}


class TouchOnLoad:
    """Unpickling this calls `Path.touch(target)`: what an arbitrary pickled object can do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return pathlib.Path.touch, (self.target,)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".pyth", ".bin", ".ckpt"])
@pytest.mark.parametrize("key", ["model", "model_state", "module", "state_dict", None])
def test_torch_containers(tmp_path: Path, suffix: str, key: str | None) -> None:
    path = tmp_path / f"weights{suffix}"
    torch.save(STATE if key is None else {key: STATE, "epoch": 3}, path)
    file = read_weights(path)
    assert file.container == "torch" and set(file.state) == set(STATE)
    assert torch.equal(file.state["norm.weight"], STATE["norm.weight"])
    assert file.meta == ({} if key is None else {"epoch": 3})


def test_safetensors_file(tmp_path: Path) -> None:
    save_file(STATE, tmp_path / "model.safetensors", metadata={"format": "pt"})
    file = read_weights(tmp_path / "model.safetensors")
    assert file.container == "safetensors" and set(file.state) == set(STATE)
    assert file.meta["safetensors_metadata"] == {"format": "pt"}


def test_training_arguments_and_numpy_scalars_are_plain_values(tmp_path: Path) -> None:
    import numpy as np

    args = training_args(num_frames=16, model="mae_vit_large_patch16", lr=np.float64(1e-3))
    torch.save({"model": STATE, "args": args, "optimizer": {"state": {}}, "scaler": {}},
               tmp_path / "checkpoint-00003.pth")
    file = read_weights(tmp_path / "checkpoint-00003.pth")
    assert file.meta == {"args": {"num_frames": 16, "model": "mae_vit_large_patch16", "lr": 1e-3}}


def test_pickled_objects_are_refused_and_never_run(tmp_path: Path) -> None:
    sentinel = tmp_path / "was-unpickled"
    torch.save({"model": STATE, "hook": TouchOnLoad(sentinel)}, tmp_path / "evil.pth")
    with pytest.raises(UnreadableWeights, match="pickled objects .*Path") as info:
        read_weights(tmp_path / "evil.pth")
    assert info.value.path == tmp_path / "evil.pth"
    assert not sentinel.exists()


def test_prefixes_are_stripped_and_remembered() -> None:
    state, original = strip_prefixes({f"module.backbone.{k}": v for k, v in STATE.items()})
    assert set(state) == set(STATE)
    assert original["norm.weight"] == "module.backbone.norm.weight"
    # VideoMAE: `encoder.` wherever it appears, `decoder.` kept.
    state, _ = strip_prefixes({"encoder.norm.weight": torch.ones(1), "decoder.norm.weight": torch.ones(1),
                               "encoder_to_decoder.weight": torch.ones(1)})
    assert set(state) == {"norm.weight", "decoder.norm.weight", "encoder_to_decoder.weight"}
    # No stripping that would make two keys one.
    state, _ = strip_prefixes({"encoder.norm.weight": torch.ones(1), "norm.weight": torch.ones(1)})
    assert set(state) == {"encoder.norm.weight", "norm.weight"}


def test_directories_use_their_newest_or_preferred_checkpoint(tmp_path: Path) -> None:
    torch.save({"model": {"a": torch.ones(1)}}, tmp_path / "checkpoints-step-1.pt")
    torch.save({"model": STATE}, tmp_path / "encoder.pt")
    assert set(read_weights(tmp_path).state) == set(STATE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableWeights, match="no weights file"):
        read_weights(tmp_path / "empty")


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    for path, message in [(garbage, "not a readable torch file"),
                          (tmp_path / "missing.pth", "no such file"),
                          (tmp_path / "notes.txt", "unknown weights suffix")]:
        if path.suffix == ".txt":
            path.write_text("weights")
        with pytest.raises(UnreadableWeights, match=message) as info:
            read_weights(path)
        assert info.value.path == path
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(UnreadableWeights, match="no state dict"):
        read_weights(tmp_path / "odd.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UnreadableWeights, match="safetensors"):
        read_weights(tmp_path / "bad.safetensors")
