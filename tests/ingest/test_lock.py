"""One writer per OUTPUT, between real processes: the second is refused at once, a killed holder
leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from echofm.bench.ingest import _cine, write_native_dicom
from echofm.ingest.lock import LOCK_FILENAME, OutputLocked, exclusive_output, lock_path
from tests.factories.servers import output_lock_holder

_INGEST = "import sys; from echofm.ingest.run import ingest_serially; ingest_serially(sys.argv[1], sys.argv[2])"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    write_native_dicom(root / "a.dcm", _cine(40, (240, 320), seed=4), fps=50.0)
    return root


def test_a_second_ingestion_process_is_refused_at_once_and_a_killed_holder_leaves_no_lock(
    source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "output"
    env = {**os.environ, "ECHOFM_DEID_SECRET": "lock-test-secret-of-32-bytes-long"}
    with output_lock_holder(output) as holder:
        started = time.monotonic()
        refused = subprocess.run(
            [sys.executable, "-c", _INGEST, str(source), str(output)], env=env, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode != 0
        assert "OutputLocked" in refused.stderr and "being written by another ingestion" in refused.stderr
        assert f"pid {holder.pid}" in refused.stderr
        assert time.monotonic() - started < 30  # interpreter start and imports; no waiting on the lock
        assert sorted(p.name for p in output.iterdir()) == [LOCK_FILENAME]  # nothing else written
        holder.send_signal(signal.SIGKILL)
    # The kernel released the dead holder's lock: the next run takes it (the file stays, unlocked).
    with exclusive_output(output):
        assert (output / LOCK_FILENAME).exists()


def test_the_lock_is_released_when_the_run_ends_and_names_its_holder(tmp_path: Path) -> None:
    output = tmp_path / "out"
    with exclusive_output(output) as path:
        assert path == output / LOCK_FILENAME
        assert f'"pid": {os.getpid()}' in path.read_text()
    with exclusive_output(output):
        pass  # taken again once released
    with output_lock_holder(output) as holder, pytest.raises(OutputLocked, match=f"pid {holder.pid}"), exclusive_output(output):
        pass


def test_object_store_outputs_lock_a_local_file_per_url() -> None:
    first = lock_path("s3://bucket/echo/output")
    assert first == lock_path("s3://bucket/echo/output/") != lock_path("s3://bucket/echo/other")
    assert first.suffix == ".lock" and "bucket" not in str(first)
