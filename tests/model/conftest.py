"""Every model test runs on one intra-op thread (tests/conftest.py: `one_torch_thread`)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """These tensors are tiny: a second OpenMP thread only adds barrier waits, which on a shared,
    oversubscribed 2-core machine cost more than the arithmetic (observed 5-10x slower)."""
