"""What discovery learnt about each file last time, so a re-run does not read every byte again.

Discovery sniffs and hashes every file under SOURCE; on a 300K-file archive that re-reads
terabytes each night to find the few files that are new. The cache remembers, per file, its
container format and keyed content hash, and is trusted for a file whose path, size, mtime and
inode are unchanged (for an object-store SOURCE: path, size and ETag, or its last-modified time
when the store gives no ETag). A file that matches is neither opened nor hashed again; any
difference in those stamps reads the file in full.

Like rsync's quick check, this misses a file whose bytes were rewritten while its size, mtime
and inode were kept (a tool that restores mtimes after editing in place); `rehash` in the ingest
options ignores the cache for such archives (the cache is then rebuilt from the full reads).

The cache lives in OUTPUT (`.discovery-cache.parquet`) and holds nothing identifying: paths,
mtimes (file dates can be acquisition dates) and inodes never enter it. Each entry is keyed by a
keyed digest (HMAC under the de-identification secret) of (source id, size, mtime, inode) and
holds only the file's format, its keyed content hash and its size. The file records the key id of
its secret; a cache of another secret is ignored and rebuilt, never trusted. It is rewritten
whole (temporary name, then rename) by the run holding OUTPUT's one-writer lock, with the entries
of the files found this time only, so entries of files that disappeared are dropped; a run that
changes no entry leaves it as it is.

Unreadable files are not cached (they are tried again next run); empty files need no read and are
not cached either.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from echofm.data.storage import is_remote, join

if TYPE_CHECKING:
    from echofm.io.deid import Pseudonymizer


class InspectedFile(Protocol):
    """What `remember` reads of a `echofm.ingest.discover.DiscoveredFile` (a protocol, so that
    discovery can import this module without an import circle)."""

    source_format: str
    source_hash: str
    size_bytes: int
    reject_reason: str | None

logger = logging.getLogger(__name__)

CACHE_FILENAME = ".discovery-cache.parquet"
_FORMAT_VERSION = "1"
# Bytes of a keyed entry key (128 bits: no collision among billions of files).
_KEY_BYTES = 16


class KnownFile(NamedTuple):
    """What discovery found in a file: `DiscoveredFile`'s format, keyed hash and size (a tuple:
    300K of them are built at each load)."""

    source_format: str
    source_hash: str
    size_bytes: int


def _schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema([
        ("key", pa.binary(_KEY_BYTES)),
        ("source_format", pa.string()),
        ("source_hash", pa.binary(32)),
        ("size_bytes", pa.int64()),
    ])


class DiscoveryCache:
    """The entries of one OUTPUT under one secret; `lookup` during discovery, `remember` what was
    read, then `save` (from the process holding OUTPUT's lock).

    `hits` / `misses` count lookups (misses include every file looked up with `rehash`)."""

    def __init__(self, pseudonymizer: Pseudonymizer, entries: dict[bytes, KnownFile] | None = None,
                 *, rehash: bool = False) -> None:
        self._pseudonymizer = pseudonymizer
        self._old = {} if rehash else dict(entries or {})
        self._new: dict[bytes, KnownFile] = {}
        self._remembered = 0
        self._stored = False  # `_old` is what OUTPUT's cache file holds (a valid file was read)
        self.hits = 0
        self.misses = 0

    @classmethod
    def load(cls, output: str | Path, pseudonymizer: Pseudonymizer, *, rehash: bool = False) -> DiscoveryCache:
        """The cache stored in `output`; empty when there is none, when it cannot be read, when
        it was written under another secret, or with `rehash` (it is rebuilt by `save`)."""
        if rehash:
            return cls(pseudonymizer, rehash=True)
        from echofm.data.manifest import read_parquet
        from echofm.data.storage import exists

        path = join(output, CACHE_FILENAME)
        if not exists(path):
            return cls(pseudonymizer)
        try:
            table = read_parquet(path)
        except (OSError, ValueError) as exc:
            logger.warning("discovery cache unreadable (%s): every file is read again", type(exc).__name__)
            return cls(pseudonymizer)
        meta = table.schema.metadata or {}
        if meta.get(b"key_id", b"").decode() != pseudonymizer.key_id or meta.get(b"version") != _FORMAT_VERSION.encode():
            logger.warning("discovery cache written under another secret or format: ignored and rebuilt")
            return cls(pseudonymizer)
        if not table.schema.equals(_schema(), check_metadata=False):
            return cls(pseudonymizer)
        columns = [table[name].to_pylist() for name in ("key", "source_format", "source_hash", "size_bytes")]
        entries = {key: KnownFile(fmt, digest.hex(), size) for key, fmt, digest, size in zip(*columns, strict=True)}
        cache = cls(pseudonymizer, entries)
        cache._stored = True
        return cache

    def key(self, source_id: str, size: int, *stamps: object) -> bytes:
        """The keyed entry key of a file: HMAC of its source id, size and change stamps (mtime in
        ns and inode on disk; ETag or last-modified for an object)."""
        plain = "\x00".join([source_id, str(size), *map(str, stamps)]).encode("utf-8", "surrogateescape")
        return bytes.fromhex(self._pseudonymizer.digest("discovery-cache", plain)[: 2 * _KEY_BYTES])

    def lookup(self, key: bytes) -> KnownFile | None:
        """The entry of `key` (kept for the next `save`), or None when it must be read."""
        known = self._old.get(key)
        if known is None:
            self.misses += 1
        else:
            self.hits += 1
            self._new[key] = known
        return known

    def remember(self, key: bytes, item: InspectedFile) -> None:
        """Record a file just read in full; unreadable and empty files are not kept."""
        if item.reject_reason in ("unreadable_file", "empty_file") or not item.source_hash:
            return
        self._new[key] = KnownFile(item.source_format, item.source_hash, item.size_bytes)
        self._remembered += 1

    def __len__(self) -> int:
        """Entries `save` would write (looked up or remembered so far)."""
        return len(self._new)

    @property
    def n_loaded(self) -> int:
        """Entries trusted from the stored cache."""
        return len(self._old)

    def save(self, output: str | Path) -> None:
        """Write the entries looked up or remembered in this run to `output`, atomically; nothing
        when they are exactly the stored ones (an unchanged archive rewrites nothing)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Nothing remembered: the entries are a subset of the stored ones, equal when as many.
        if self._stored and self._remembered == 0 and len(self._new) == len(self._old):
            return

        keys = sorted(self._new)  # a stable file for a stable archive
        entries = [self._new[key] for key in keys]
        table = pa.Table.from_arrays(
            [
                pa.array(keys, type=pa.binary(_KEY_BYTES)),
                pa.array([e.source_format for e in entries], type=pa.string()),
                pa.array([bytes.fromhex(e.source_hash) for e in entries], type=pa.binary(32)),
                pa.array([e.size_bytes for e in entries], type=pa.int64()),
            ],
            schema=_schema().with_metadata({"key_id": self._pseudonymizer.key_id, "version": _FORMAT_VERSION}),
        )
        if is_remote(output):
            from echofm.data.storage import upload

            # An object appears whole when its upload completes: no temporary name needed.
            with tempfile.TemporaryDirectory(prefix="echofm-cache-") as scratch:
                local = Path(scratch) / CACHE_FILENAME
                pq.write_table(table, local, compression="zstd")
                upload(local, join(output, CACHE_FILENAME))
            return
        target = Path(output) / CACHE_FILENAME
        handle, temporary = tempfile.mkstemp(prefix=CACHE_FILENAME + ".", suffix=".tmp", dir=Path(output))
        os.close(handle)
        try:
            pq.write_table(table, temporary, compression="zstd")
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
