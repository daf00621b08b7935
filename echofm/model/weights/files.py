"""Reading weights containers: which file, which dict inside it, which key prefixes.

Containers: torch files (`.pth`, `.pt`, `.pyth`, `.bin`, `.ckpt`), `.safetensors`, this project's
export folders (`config.json` + `model.safetensors`) and run directories (their newest
checkpoint). Inside a torch file the state dict may sit under `model`, `model_state`, `module` or
`state_dict`, or be the file itself. Key prefixes added by wrappers (`module.` from DDP,
`backbone.`, `encoder.` from VideoMAE's pretraining model) are stripped; the original names are
kept for the load report.

Torch files load with `weights_only=True`: tensors and plain values only. Training scripts of the
published projects also store their `argparse.Namespace` and numpy scalars beside the weights;
those few attribute/array containers are allow-listed, nothing else (anything else is named in
the error, never unpickled).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echofm.model.weights.errors import UnreadableWeights

TORCH_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".pyth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
# Where a container keeps its state dict, most specific first.
STATE_KEYS: tuple[str, ...] = ("model", "model_state", "module", "state_dict")
# Prefixes stripped when every key carries them (wrappers) ...
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "backbone.")
# ... and a prefix stripped wherever it appears (VideoMAE keeps `encoder.*` beside `decoder.*`).
ENCODER_PREFIX = "encoder."
# Preferred names inside a run directory or a registered model's artifacts, best first.
CHECKPOINT_NAMES: tuple[str, ...] = ("encoder.pt", "final.pt", "checkpoint-final.pt", "last.pt",
                                     "checkpoint.pt")
EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_FORMAT = "echofm-export"
# Containers' large training state: never part of the metadata a report carries.
_TRAINING_STATE = frozenset({"optimizer", "optimizer_state", "scaler", "amp_scaler", "scheduler",
                             "lr_scheduler", "rng_states"})


@dataclass
class WeightsFile:
    """The tensors of one container and what else it says.

    state: the state dict with wrapper prefixes stripped; original: stripped key -> key as stored;
    meta: the container's other plain entries (`config`, `model_args`, `args`, `normalization`,
    ...; an export folder's `config.json` under `export`); container: "torch" | "safetensors" |
    "export".
    """

    path: Path
    state: dict[str, torch.Tensor]
    original: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    container: str = "torch"


def _allowed_globals() -> list[Any]:
    """Plain containers that training scripts pickle beside their weights (see module doc)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(name)) for name in ("float16", "float32", "float64", "int32", "int64",
                                                "bool", "uint8")]
    return [argparse.Namespace, np.ndarray, np.dtype, core.multiarray._reconstruct,
            core.multiarray.scalar, *dtypes]


def _plain(value: Any) -> Any:
    if isinstance(value, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not a zip container: nothing to list
            unsafe = []
        if not unsafe:
            raise UnreadableWeights(path, f"not a readable torch file ({err})") from err
        raise UnreadableWeights(path, f"holds pickled objects ({', '.join(unsafe)}) besides "
                                      "tensors and plain values; they are not unpickled") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UnreadableWeights(path, f"not a readable torch file ({err})") from err


def _safetensors_load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UnreadableWeights(path, f"not a readable safetensors file ({err})") from err


def _is_state(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _split_container(path: Path, loaded: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, other plain entries) of a loaded torch container."""
    if _is_state(loaded):
        return dict(loaded), {}
    if isinstance(loaded, dict):
        for key in STATE_KEYS:
            if _is_state(loaded.get(key)):
                meta = {k: _plain(v) for k, v in loaded.items()
                        if k != key and k not in _TRAINING_STATE}
                return dict(loaded[key]), meta
    found = sorted(loaded)[:8] if isinstance(loaded, dict) else type(loaded).__name__
    raise UnreadableWeights(path, f"no state dict of tensors under {', '.join(STATE_KEYS)} or at "
                                  f"the top level (found {found})")


def strip_prefixes(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Remove wrapper prefixes (module doc); returns `(state, stripped -> original name)`."""
    original = {key: key for key in state}
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in original):
                original = {key[len(prefix):]: name for key, name in original.items()}
                changed = True
        renamed = {key[len(ENCODER_PREFIX):] if key.startswith(ENCODER_PREFIX) else key: name
                   for key, name in original.items()}
        if len(renamed) == len(original) and renamed.keys() != original.keys():
            original, changed = renamed, True
    return {key: state[name] for key, name in original.items()}, original


def newest_checkpoint(directory: Path) -> Path:
    """The checkpoint a run directory (or downloaded model) stands for: a preferred name
    (`CHECKPOINT_NAMES`, shallowest first), else the newest weights file."""
    suffixes = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)
    candidates = [p for p in directory.rglob("*") if p.suffix in suffixes and p.is_file()]
    if not candidates:
        raise UnreadableWeights(directory, f"no weights file ({', '.join(suffixes)}) inside")
    for name in CHECKPOINT_NAMES:
        named = [p for p in candidates if p.name == name]
        if named:
            return min(named, key=lambda p: len(p.parts))
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.name))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_export(directory: Path) -> WeightsFile:
    try:
        config = json.loads((directory / EXPORT_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UnreadableWeights(directory, f"unreadable {EXPORT_CONFIG} ({err})") from err
    expected = config.get("weights", {}).get("sha256")
    if expected and expected != sha256_file(directory / EXPORT_WEIGHTS):
        raise UnreadableWeights(directory, f"{EXPORT_WEIGHTS} does not match the sha256 in "
                                           f"{EXPORT_CONFIG} (changed or half-copied)")
    state, _ = _safetensors_load(directory / EXPORT_WEIGHTS)
    meta = {"export": config, "config": config.get("model_config"),
            "normalization": config.get("input", {}).get("normalization")}
    return WeightsFile(path=directory, state=state, original={k: k for k in state}, meta=meta,
                       container="export")


def is_export_folder(directory: Path) -> bool:
    config = directory / EXPORT_CONFIG
    if not (config.is_file() and (directory / EXPORT_WEIGHTS).is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("format") == EXPORT_FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def read_weights(path: str | os.PathLike[str]) -> WeightsFile:
    """Read the container at `path` (a file, an export folder or a run directory).

    Raises:
        UnreadableWeights: no such file, an unknown suffix, a corrupt file, pickled objects, or no
            state dict of tensors inside.
    """
    path = Path(path)
    if path.is_dir():
        if is_export_folder(path):
            return _read_export(path)
        path = newest_checkpoint(path)
    if not path.is_file():
        raise UnreadableWeights(path, "no such file or directory")
    if path.suffix == SAFETENSORS_SUFFIX:
        raw, header = _safetensors_load(path)
        meta: dict[str, Any] = {"safetensors_metadata": header}
        container = "safetensors"
    elif path.suffix in TORCH_SUFFIXES:
        return torch_container(path, _torch_load(path))
    else:
        raise UnreadableWeights(path, f"unknown weights suffix {path.suffix!r}; expected one of "
                                      f"{', '.join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))}")
    if not raw:
        raise UnreadableWeights(path, "the file holds no tensors")
    state, original = strip_prefixes(raw)
    return WeightsFile(path=path, state=state, original=original, meta=meta, container=container)


def torch_container(path: str | os.PathLike[str], loaded: Any) -> WeightsFile:
    """A `WeightsFile` from what `torch.load` returned for `path` (state dict located, plain
    entries kept as metadata, prefixes stripped)."""
    path = Path(path)
    raw, meta = _split_container(path, loaded)
    state, original = strip_prefixes(raw)
    return WeightsFile(path=path, state=state, original=original, meta=meta)

