"""The forms the ingestion flow's `source` parameter takes, and the one it refuses."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from flows.ingest import SourceNotABlock, resolve_source

PATIENT_ROOT = "/exports/DOE^JOHN_12345678"


def test_a_plain_path_is_refused_with_a_message_that_does_not_repeat_it() -> None:
    with pytest.raises(SourceNotABlock) as caught:
        resolve_source(PATIENT_ROOT)
    assert "DOE" not in str(caught.value) and "block:NAME" in str(caught.value)
    assert caught.value.reason == "source_not_a_block"


def test_a_secret_str_gives_the_path_and_persists_masked() -> None:
    source = SecretStr(PATIENT_ROOT)
    assert resolve_source(source) == PATIENT_ROOT
    # Prefect persists a SecretStr parameter as its masked form; tests/test_redteam.py searches
    # the database of a real run for the path.
    assert "DOE" not in source.__repr__() and "DOE" not in str(source)


def test_prefect_parameter_validation_keeps_a_block_name_a_string() -> None:
    from flows.ingest import ingest_archive

    checked = ingest_archive.validate_parameters({"source": "block:archive", "output": "/out"})
    assert checked["source"] == "block:archive"
    masked = ingest_archive.validate_parameters({"source": SecretStr(PATIENT_ROOT), "output": "/out"})
    assert isinstance(masked["source"], SecretStr)
    with pytest.raises(SourceNotABlock):
        resolve_source(ingest_archive.validate_parameters({"source": PATIENT_ROOT, "output": "/out"})["source"])
