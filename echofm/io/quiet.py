"""Keep what third-party readers say about a file out of logs, warnings and stderr.

pydicom reports odd values by quoting them (`Invalid value for VR UI: '1.2.826.0.1.<MRN>...'`,
unknown character sets by name) through both `warnings` and its logger `pydicom`; OpenCV names
the file it failed to open in its log (`can't find starting number (in the name of file): ...`)
and FFmpeg prints container problems to stderr. Readers and workers call `silence_readers()`
(idempotent) before they parse a file; the readers' own errors carry text this project writes.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_done = False


def silence_readers() -> None:
    """Silence pydicom (value validation off, logger detached, its warnings ignored) and
    OpenCV/FFmpeg logging, for the whole process."""
    global _done
    if _done:
        return
    # FFmpeg through OpenCV reads this when it opens its first capture: -8 is AV_LOG_QUIET.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    import cv2
    from pydicom import config

    # Values are not checked while reading, so nothing is reported about them (this project
    # validates what it uses itself); writing still validates.
    config.settings.reading_validation_mode = config.IGNORE
    pydicom_logger = logging.getLogger("pydicom")
    pydicom_logger.handlers[:] = [logging.NullHandler()]
    pydicom_logger.propagate = False
    pydicom_logger.setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    _done = True


@contextmanager
def no_warnings() -> Iterator[None]:
    """Ignore every warning inside the block: pydicom attributes some warnings to the caller's
    frame, which the module filter of `silence_readers` does not catch. Not for threads
    (`warnings.catch_warnings` is process-wide)."""
    silence_readers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
