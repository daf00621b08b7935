"""What crosses a task or command boundary: this project's text, never a library's."""

from __future__ import annotations

import traceback

import pytest

from echofm.boundary import StageFailed, project_errors, public_message
from echofm.ingest.discover import SourceError

LEAKY = "/data/DOE^JOHN_12345678/STUDY_20190317/IMG0001.dcm"


def _rendered(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_a_library_error_becomes_the_stage_and_its_class_only() -> None:
    with pytest.raises(StageFailed) as caught:
        with project_errors("ingest-batch", source_id="f" + "0" * 32):
            open(LEAKY)  # noqa: SIM115 - FileNotFoundError quotes the path
    assert caught.value.reason == "ingest_batch_error" and caught.value.error_class == "FileNotFoundError"
    assert str(caught.value) == "ingest-batch (f" + "0" * 32 + "): FileNotFoundError [ingest_batch_error]"
    # The traceback Prefect stores shows no chained cause either.
    assert "DOE" not in _rendered(caught.value) and "12345678" not in _rendered(caught.value)
    assert public_message(ValueError(LEAKY)) == "ValueError [unexpected_error]"


def test_a_project_error_passes_without_its_chained_causes() -> None:
    with pytest.raises(SourceError) as caught:
        with project_errors("plan-ingest"):
            try:
                open(LEAKY)  # noqa: SIM115
            except OSError as exc:
                raise SourceError("SOURCE is not a readable directory") from exc
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "DOE" not in _rendered(caught.value)
    assert public_message(caught.value) == "SourceError: SOURCE is not a readable directory"
