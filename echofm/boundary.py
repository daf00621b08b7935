"""What crosses a task or command boundary: this project's own error text, never a library's.

An exception leaving a Prefect task is written to the Prefect database (its class, message and
traceback, chained exceptions included) and a command's error goes to stderr. Text from a third
party can quote what it read: pydicom quotes header values, `OSError` names the file
(`[Errno 2] No such file or directory: '/data/DOE^JOHN_12345678/...'`), pandas quotes cells. So
at every boundary:

- an `EchoFMError` (this project's errors, whose messages are written to name files by keyed id
  only) passes on unchanged, its chained causes cut off;
- any other, a `ValueError` raised for a caller's mistake inside this project included, becomes
  a `StageFailed` that keeps only the stage, the class name and a snake_case reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from echofm.errors import EchoFMError


class StageFailed(EchoFMError, RuntimeError):
    """A stage failed with an error from outside this project; only its class name is kept."""

    def __init__(self, stage: str, error_class: str, *, source_id: str | None = None) -> None:
        self.stage = stage
        self.error_class = error_class
        self.reason = f"{stage.replace('-', '_')}_error"
        self.source_id = source_id
        where = f" ({source_id})" if source_id else ""
        super().__init__(f"{stage}{where}: {error_class} [{self.reason}]")


def public_error(exc: BaseException, stage: str, *, source_id: str | None = None) -> BaseException:
    """The exception to let cross a boundary in place of `exc` (see the module docstring)."""
    if isinstance(exc, EchoFMError):
        exc.__cause__ = None
        exc.__suppress_context__ = True
        return exc
    return StageFailed(stage, type(exc).__name__, source_id=source_id)


def public_message(exc: BaseException) -> str:
    """One line for a user: `Class: message` for this project's errors, the class and
    `unexpected_error` for any other."""
    if isinstance(exc, EchoFMError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} [unexpected_error]"


@contextmanager
def project_errors(stage: str, *, source_id: str | None = None) -> Iterator[None]:
    """Re-raise whatever leaves the block as `public_error` would (no chained context)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the point is to catch everything at the boundary
        raise public_error(exc, stage, source_id=source_id) from None
