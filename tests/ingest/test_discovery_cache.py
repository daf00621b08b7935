"""The discovery cache: a re-plan of an unchanged archive reads no file, a changed stamp is read
again, `rehash` reads everything, and the cache in OUTPUT holds nothing identifying."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from echofm.ingest.config import IngestConfig
from echofm.ingest.discover import discover
from echofm.ingest.discovery_cache import CACHE_FILENAME, DiscoveryCache
from echofm.ingest.run import plan_ingest
from echofm.io.deid import Pseudonymizer
from tests.factories.media import fan_cine, write_dicom

# A file's dates can be acquisition dates: 2019-03-17 08:30:00.123456789 UTC.
DATED_NS = 1_552_811_400_123_456_789


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "DOE^JOHN_12345678").mkdir(parents=True)
    write_dicom(root / "DOE^JOHN_12345678" / "IM0001", fan_cine(16, seed=3))
    (root / "DOE^JOHN_12345678" / "STUDY_20190317.txt").write_text("report AAAA")
    (root / "empty.bin").write_bytes(b"")
    os.utime(root / "DOE^JOHN_12345678" / "STUDY_20190317.txt", ns=(DATED_NS, DATED_NS))
    return root


def _rewrite_keeping_stamps(path: Path, text: str) -> None:
    """New bytes of the same size, mtime put back: what only a full read can notice."""
    before = path.stat()
    with open(path, "r+b") as handle:  # in place: the inode stays
        handle.write(text.encode())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_an_unchanged_archive_is_not_read_again_and_a_changed_stamp_is(source: Path, tmp_path: Path) -> None:
    output, notes = tmp_path / "out", source / "DOE^JOHN_12345678" / "STUDY_20190317.txt"
    first = plan_ingest(source, output, IngestConfig())
    assert (first.n_discovered, first.n_already_recorded) == (3, 0)
    _rewrite_keeping_stamps(notes, "report BBBB")

    # Same size, mtime and inode: trusted, so the new bytes go unnoticed (rsync's quick check)...
    second = plan_ingest(source, output, IngestConfig())
    assert second.n_already_recorded == 2  # the text file and the empty file
    assert [(f.source_format, f.source_hash) for f in second.batches[0].files] == \
           [(f.source_format, f.source_hash) for f in first.batches[0].files]
    # ...until `rehash` reads every file: the text file is new content, recorded at plan.
    third = plan_ingest(source, output, IngestConfig(rehash=True))
    assert third.n_already_recorded == 1
    assert plan_ingest(source, output, IngestConfig()).n_already_recorded == 2  # the rebuilt cache holds it

    # A changed mtime alone makes the file read again.
    _rewrite_keeping_stamps(notes, "report CCCC")
    assert plan_ingest(source, output, IngestConfig()).n_already_recorded == 2
    os.utime(notes, ns=(DATED_NS + 10**9, DATED_NS + 10**9))
    assert plan_ingest(source, output, IngestConfig()).n_already_recorded == 1


def test_a_hit_reads_nothing_and_entries_of_removed_files_are_dropped(source: Path, tmp_path: Path, keyed) -> None:
    output = tmp_path / "out"
    output.mkdir()
    cold = DiscoveryCache.load(output, keyed)
    found = discover(source, keyed, cache=cold)
    cold.save(output)
    assert (cold.hits, cold.misses, len(cold)) == (0, 3, 2)  # the empty file is not cached
    warm = DiscoveryCache.load(output, keyed)
    assert discover(source, keyed, cache=warm) == found
    assert (warm.hits, warm.misses) == (2, 1)
    stored = (output / CACHE_FILENAME).stat().st_ino
    warm.save(output)
    assert (output / CACHE_FILENAME).stat().st_ino == stored  # nothing changed: not rewritten
    (source / "DOE^JOHN_12345678" / "IM0001").unlink()
    again = DiscoveryCache.load(output, keyed)
    discover(source, keyed, cache=again)
    again.save(output)
    assert pq.read_table(output / CACHE_FILENAME).num_rows == 1


def test_the_cache_holds_no_name_date_or_inode(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    plan_ingest(source, output, IngestConfig())
    cache = output / CACHE_FILENAME
    notes = (source / "DOE^JOHN_12345678" / "STUDY_20190317.txt").stat()
    table = pq.read_table(cache)
    text = repr(table.to_pylist()) + repr(table.schema.metadata)
    stored = cache.read_bytes() + text.encode()
    markers = ["DOE", "JOHN", "12345678", "STUDY", "20190317", "2019-03-17", "IM0001",
               str(DATED_NS), str(DATED_NS // 10**9), str(notes.st_ino)]
    assert [marker for marker in markers if marker.encode() in stored] == []
    assert table.column_names == ["key", "source_format", "source_hash", "size_bytes"]


def test_a_cache_written_under_another_secret_is_not_used(source: Path, tmp_path: Path, keyed) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    plan_ingest(source, theirs, IngestConfig())  # the session's secret
    ours.mkdir()
    shutil.copy(theirs / CACHE_FILENAME, ours / CACHE_FILENAME)
    other = Pseudonymizer(b"another-secret-of-another-site")
    cache = DiscoveryCache.load(ours, other)
    assert cache.n_loaded == 0
    discover(source, other, cache=cache)
    assert cache.hits == 0
    cache.save(ours)
    assert pq.read_table(ours / CACHE_FILENAME).schema.metadata[b"key_id"] == other.key_id.encode()
