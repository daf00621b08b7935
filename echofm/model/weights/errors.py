"""Why a checkpoint or weights file could not be loaded. Every error names the file (`.path`)."""

from __future__ import annotations

import os
from pathlib import Path

from echofm.errors import ModelError


class CheckpointError(ModelError, ValueError):
    """A checkpoint cannot be read or does not match the model it describes; names the file."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


class WeightsError(CheckpointError):
    """Base of the weights loader's errors (a `CheckpointError`: the file cannot become a model)."""


class UnreadableWeights(WeightsError):
    """Not a weights file this loader reads: missing, corrupt, an unknown container, or pickled
    objects other than tensors and plain values (they are never unpickled)."""


class UnknownWeightsFormat(WeightsError):
    """The tensors match no supported layout (or `format=` names none)."""


class WeightsConversionError(WeightsError):
    """The weights cannot be converted to the requested model (e.g. incompatible tubelets)."""


class IncompleteWeights(WeightsError):
    """Loading would leave encoder tensors randomly initialised, or drop file tensors the encoder
    computes with; `missing` and `dropped` name them. Pass `allow_partial=True` to accept."""

    def __init__(self, path, message: str, *, missing: list[str], dropped: list[str]) -> None:
        super().__init__(path, message)
        self.missing = missing
        self.dropped = dropped
