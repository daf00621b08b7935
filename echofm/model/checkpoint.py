"""Checkpoints that embed their config, so a model is rebuilt from the file alone.

File layout (a `torch.save` dict): `{"config": asdict(ModelConfig), "model": state_dict,
"format": 1, ...state, ...extra}`. A file without `config` (the seed's `{"model": state_dict}`,
in this model's names or the published EchoFM ones) is read by the weights loader
(`echofm.model.weights`) with its values as stored (no channel conversion): the config comes from
an explicit `preset`/`config` argument or from the tensor shapes (`infer_config`), separate
`q`/`k`/`v` projections are fused, the published slice-projector names are mapped, and any
encoder tensor it lacks is an error. A file without a slice projector (it is used only by the
pretraining loss) loads with a freshly initialised one and a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from echofm.model.config import ModelConfig, ModelConfigError
from echofm.model.mae import MaskedAutoencoderViT
from echofm.model.presets import preset_config
from echofm.model.weights.errors import CheckpointError
from echofm.model.weights.files import WeightsFile, torch_container
from echofm.model.weights.layouts import ReadOptions, read_echofm
from echofm.model.weights.load import build_from_file
from echofm.model.weights.sizes import source_config

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# State-dict prefix of the pretraining-only module a checkpoint may lack.
_PROJECTOR = "slice_projector."
_RESERVED = frozenset({"config", "model", "format"})


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MaskedAutoencoderViT,
    *,
    extra: dict[str, Any] | None = None,
    **state: Any,
) -> Path:
    """Write `{"config", "model", "format", **state, **extra}` to `path` atomically.

    `state` holds named training state (e.g. `optimizer=opt.state_dict(), epoch=3`); `extra`
    holds anything else. Keep values to tensors, containers and plain scalars so the file loads
    with `weights_only=True`. The file is written to `path.tmp` and renamed, so a reader never
    sees half a checkpoint.
    """
    path = Path(path)
    payload: dict[str, Any] = {}
    for source in (state, extra or {}):
        clash = _RESERVED & set(source)
        if clash:
            raise ValueError(f"checkpoint keys {sorted(clash)} are reserved")
        payload.update(source)
    payload["config"] = dataclasses.asdict(model.config)
    payload["model"] = model.state_dict()
    payload["format"] = CHECKPOINT_FORMAT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    preset: str | None = None,
    config: ModelConfig | None = None,
    trusted: bool = False,
) -> tuple[MaskedAutoencoderViT, dict[str, Any]]:
    """Rebuild the model stored in `path`; returns `(model, checkpoint_dict)`.

    The config comes from, in order: `config`, `preset`, the file's own `"config"`, or
    `infer_config` on the state dict (seed format). `trusted=True` allows pickled objects
    (`weights_only=False`); only use it for files you produced.

    Raises:
        CheckpointError: unreadable file, no `"model"` entry, or weights that do not fit.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trusted)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(path, f"cannot read checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(path, "not a model checkpoint: no 'model' entry")
    if "config" not in ckpt:
        model = _from_seed(path, ckpt, config if config is not None else preset)
        return model.to(map_location), ckpt
    try:
        if config is None:
            config = preset_config(preset) if preset is not None else ModelConfig(**ckpt["config"])
    except (ModelConfigError, TypeError, KeyError) as err:
        raise CheckpointError(path, f"cannot determine the model config ({err})") from err
    model = MaskedAutoencoderViT(config)
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as err:
        raise CheckpointError(path, f"weights do not fit {config}: {err}") from err
    absent = [key for key in missing if not key.startswith(_PROJECTOR)]
    if absent or unexpected:
        raise CheckpointError(path, f"weights do not fit {config}: missing {absent}, "
                                    f"unexpected {list(unexpected)}")
    if missing:
        log.warning("%s has no slice projector (pretraining-only); it starts from initialisation",
                    path)
    return model.to(map_location), ckpt


def _from_seed(
    path: str | os.PathLike[str], ckpt: dict[str, Any], preset: str | ModelConfig | None
) -> MaskedAutoencoderViT:
    """A config-less (seed or published) file through the weights loader, values as stored."""
    model = build_from_file(torch_container(path, ckpt), preset=preset, bgr_to_rgb=False)
    if model.load_report.records("initialised", "projector"):
        log.warning("%s has no slice projector (pretraining-only); it starts from initialisation",
                    path)
    return model


def infer_config(state_dict: dict[str, torch.Tensor]) -> ModelConfig:
    """Model config from the tensor shapes of a `MaskedAutoencoderViT` state dict.

    Widths, depths, patch sizes, channels, frames and (square) image size come from the shapes;
    the head counts, which shapes do not reveal, from the registered preset of the same width
    (see `echofm.model.weights.sizes`).

    Raises:
        CheckpointError: a required tensor is missing or no rule gives the head counts.
    """
    file = WeightsFile(path=Path("<state dict>"), state=state_dict,
                       original={k: k for k in state_dict})
    return source_config(read_echofm(file, ReadOptions()), file.path)[0]
