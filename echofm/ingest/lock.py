"""One writer per OUTPUT: an exclusive OS file lock held for the whole ingestion run.

Two ingestions writing the same OUTPUT would interleave shards, parts and the manifest. The run's
orchestrating process takes `flock(LOCK_EX | LOCK_NB)` on `OUTPUT/.echofm-ingest.lock` before it
touches anything else and holds it until the run ends; a second run is refused at once with
`OutputLocked`, naming the holder. The kernel releases the lock when the holding process dies,
however it dies, so a killed run leaves no stale lock (the file stays, unlocked; the next run
takes it).

An OUTPUT on object storage has no file to lock: its lock lives in the local temporary folder,
named by a digest of the URL, so it serialises the runs of one machine only (a cluster needs one
scheduler per OUTPUT; see docs/scale.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from echofm.errors import IngestError

LOCK_FILENAME = ".echofm-ingest.lock"


class OutputLocked(IngestError, OSError):
    """Another ingestion holds OUTPUT's lock: this run would interleave its writes with that one's."""


def lock_path(output: str | Path) -> Path:
    """The lock file of an OUTPUT (a local directory, or an object-store URL)."""
    text = str(output)
    if "://" in text:
        digest = hashlib.sha256(text.rstrip("/").encode()).hexdigest()[:24]
        return Path(tempfile.gettempdir()) / "echofm-locks" / f"{digest}.lock"
    return Path(output) / LOCK_FILENAME


@contextlib.contextmanager
def exclusive_output(output: str | Path) -> Iterator[Path]:
    """Hold OUTPUT's ingestion lock for the `with` block; yields the lock file's path.

    Raises `OutputLocked` immediately (no waiting) when another process holds it.
    """
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLocked(f"OUTPUT is being written by another ingestion ({_holder(fd)}); "
                               "wait for it to finish, or ingest into another OUTPUT") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the file."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
