"""Fixtures of the model tests (kept tiny so the suite runs in seconds on CPU)."""

from __future__ import annotations

import pytest

from echofm.model import ModelConfig, preset_config

from .helpers import MICRO


@pytest.fixture
def micro_config() -> ModelConfig:
    return preset_config("tiny", **MICRO)
