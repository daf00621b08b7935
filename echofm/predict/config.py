"""How an archive is scored: `ScoreOptions`, the `score-archive` flow's form and the source of
`echofm predict`'s scoring flags. Torch-free (the CLI reads it at start-up)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from echofm.errors import PredictError
from echofm.options import Options


class ScoreConfigError(PredictError, ValueError):
    """Scoring options that cannot run (a batch of no clip, a negative worker count)."""


class ScoreOptions(Options):
    """Where and in what steps the clips of an archive go through the models."""

    error: ClassVar[type[Exception]] = ScoreConfigError

    batch_size: int = Field(default=16, ge=1, description="clips per forward pass of a model")
    device: str = Field(default="auto", description="torch device: auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    loader_workers: int = Field(
        default=1, ge=0,
        description="processes that read and decode shards ahead of the models (0: in the scoring process)",
    )
    checkpoint_every: int = Field(
        default=1024, ge=1,
        description="clips scored between two saved parts: an interrupted run keeps what it saved",
    )
