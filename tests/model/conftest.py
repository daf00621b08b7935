"""Fixtures of the model tests (kept tiny so the suite runs in seconds on CPU)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from echofm.model import ModelConfig, preset_config

from .helpers import MICRO


@pytest.fixture(autouse=True)
def one_intra_op_thread() -> Iterator[None]:
    # These tensors are tiny: a second OpenMP thread only adds barrier waits, which on a shared,
    # oversubscribed 2-core machine cost more than the arithmetic (observed 5-10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def micro_config() -> ModelConfig:
    return preset_config("tiny", **MICRO)
