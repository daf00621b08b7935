"""Atomic WebDataset shard writing: `OUT/shards/<prefix>-<nnnnnn>.tar`.

A shard is written under `<name>.tar.tmp` and renamed to `<name>.tar` only once it is complete
(full, or the writer closed without error). A reader that lists `*.tar` therefore never sees half
a shard; a crash or an exception leaves at most `.tar.tmp` files, which `remove_partial_shards`
deletes before a run resumes.

Each sample is `<key>.frames.<codec ext>` (see `echofm.data.codec`) and `<key>.meta.json`, with
`key == clip_id`. WebDataset splits a member name at the first dot of its base name, so keys may
hold no dots (nor slashes, which would make directories).

Shard names are unique only per prefix: concurrent writers must use different prefixes (the
caller uses the batch id). A writer refuses to replace an existing completed shard of the same
name unless `overwrite=True`, so a prefix collision fails loudly instead of losing clips.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from echofm.data.codec import DEFAULT_CODEC, decode_clip, encode_clip, get_codec
from echofm.errors import DataError

SHARDS_DIRNAME = "shards"
SHARD_SUFFIX = ".tar"
PARTIAL_SUFFIX = ".tar.tmp"
META_MEMBER = "meta.json"
# Shards of a few hundred MB to 1 GB stream efficiently from object stores and local disks alike:
# 1000 zlib clips are 0.3-0.95 GB grey (docs/benchmarks.md, shard codec), so the byte limit bites only
# for raw npy or colour clips.
DEFAULT_MAX_COUNT = 1000
DEFAULT_MAX_BYTES = 1 << 30

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_TAR_BLOCK = 512


class ShardError(DataError):
    """Base class for shard writing and reading failures."""


class InvalidKey(ShardError, ValueError):
    """A clip id that cannot be a WebDataset key (a dot, a slash, empty...)."""


class DuplicateKey(ShardError, ValueError):
    """The same clip id written twice by one writer."""


class ShardExists(ShardError, FileExistsError):
    """A completed shard with the name this writer would produce is already there."""


class CorruptShard(ShardError):
    """A shard whose members do not form complete samples."""

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {detail}")


def validate_key(key: str) -> str:
    """Return `key` if it is a valid shard key: letters, digits, `_` and `-`, not starting with
    `_` or `-`; no dots or slashes. `InvalidKey` otherwise."""
    if not isinstance(key, str) or not _KEY_PATTERN.match(key):
        raise InvalidKey(f"invalid shard key {key!r}: use letters, digits, '_' and '-' only (no dots or slashes)")
    return key


def _member_bytes(size: int) -> int:
    return _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK


class ShardWriter:
    """Write clips into size-limited shards under `out_dir/shards/`, atomically.

    out_dir: the ingestion OUTPUT directory (shards go to `out_dir/shards/`).
    prefix: unique per concurrent writer (e.g. the batch id); same character rules as keys.
    max_count / max_bytes: a shard is completed (renamed) once it holds this many clips / about
        this many bytes; the next clip starts the next shard.
    codec: name in `echofm.data.codec.CODECS`.

    Use as a context manager: leaving the block normally completes the last shard; leaving it by
    an exception leaves that shard as `.tar.tmp` (as a crash would), for `remove_partial_shards`.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        prefix: str,
        max_count: int = DEFAULT_MAX_COUNT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        codec: str = DEFAULT_CODEC,
        overwrite: bool = False,
    ) -> None:
        validate_key(prefix)
        if max_count < 1 or max_bytes < 1:
            raise ValueError("max_count and max_bytes must be >= 1")
        get_codec(codec)
        self.shards_dir = Path(out_dir) / SHARDS_DIRNAME
        self.prefix = prefix
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.codec = codec
        self.overwrite = overwrite
        self.completed: list[str] = []
        self._index = 0
        self._file: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._bytes = 0
        self._keys: set[str] = set()

    def __enter__(self) -> ShardWriter:
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def current_name(self) -> str:
        """File name (without `.tmp`) of the shard being written, or to be written next."""
        return f"{self.prefix}-{self._index:06d}{SHARD_SUFFIX}"

    def write(self, clip_id: str, frames: np.ndarray, meta: dict[str, Any]) -> tuple[str, str]:
        """Append one clip: uint8 frames `[T, H, W, C]` and JSON-serialisable technical `meta`.

        Returns (shard file name, key): the name the shard has once complete (relative to the
        shards directory), which is what the manifest records. Raises `InvalidKey`,
        `DuplicateKey`, `ShardExists`, `CodecError`, or `TypeError` for non-JSON meta.
        """
        key = validate_key(clip_id)
        if key in self._keys:
            raise DuplicateKey(f"clip {key!r} already written by this writer")
        extension, data = encode_clip(frames, self.codec)
        meta_bytes = json.dumps(meta, sort_keys=True, allow_nan=False).encode("utf-8")
        size = _member_bytes(len(data)) + _member_bytes(len(meta_bytes))
        if self._tar is not None and self._bytes + size > self.max_bytes:
            self._complete()
        if self._tar is None:
            self._open()
        assert self._tar is not None
        _add_member(self._tar, f"{key}.{extension}", data)
        _add_member(self._tar, f"{key}.{META_MEMBER}", meta_bytes)
        self._keys.add(key)
        self._count += 1
        self._bytes += size
        name = self.current_name
        if self._count >= self.max_count:
            self._complete()
        return name, key

    def close(self) -> list[str]:
        """Complete the open shard (if it holds any clip); returns every completed shard name."""
        if self._tar is not None:
            self._complete()
        return list(self.completed)

    def abort(self) -> None:
        """Stop without completing the open shard: it stays `.tar.tmp` (never read as data)."""
        if self._tar is not None:
            assert self._file is not None
            try:
                self._tar.close()
            finally:
                self._file.close()
            self._tar = None
            self._file = None

    def _open(self) -> None:
        final = self.shards_dir / self.current_name
        if final.exists() and not self.overwrite:
            raise ShardExists(f"{final} exists; choose another prefix or pass overwrite=True")
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(final.with_name(final.name[: -len(SHARD_SUFFIX)] + PARTIAL_SUFFIX), "wb")
        # The plain tarfile module, not webdataset's writer: webdataset imports torch, which would
        # cost every ingestion worker ~600 MB and ~10 s of start-up for nothing.
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self._count = 0
        self._bytes = 0

    def _complete(self) -> None:
        assert self._tar is not None and self._file is not None
        self._tar.close()
        self._file.flush()
        # Durable before visible: a renamed shard must not turn out empty after a power loss.
        os.fsync(self._file.fileno())
        partial = Path(self._file.name)
        self._file.close()
        final = self.shards_dir / self.current_name
        os.replace(partial, final)
        self.completed.append(final.name)
        self._tar = None
        self._file = None
        self._index += 1


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One WebDataset member (`key.ext`); fixed mtime and mode, so equal content gives equal bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def remove_partial_shards(shards_dir: str | Path) -> list[Path]:
    """Delete every `*.tar.tmp` left by an interrupted writer; returns the paths removed."""
    directory = Path(shards_dir)
    if not directory.is_dir():
        return []
    removed = sorted(directory.glob(f"*{PARTIAL_SUFFIX}"))
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def remove_unlisted_shards(shards_dir: str | Path, keep: Iterable[str]) -> list[Path]:
    """Delete completed shards whose names are not in `keep` (e.g. the manifest's `shard` values).

    A run killed after a shard was renamed but before its manifest rows were written leaves a
    shard nobody references; a loader that globs `*.tar` would read its clips twice once the
    batch is redone. Returns the paths removed.
    """
    directory = Path(shards_dir)
    if not directory.is_dir():
        return []
    wanted = set(keep)
    removed = sorted(p for p in directory.glob(f"*{SHARD_SUFFIX}") if p.name not in wanted)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _sample_groups(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    with tarfile.open(path, mode="r|") as tar:
        key: str | None = None
        sample: dict[str, bytes] = {}
        for member in tar:
            if not member.isfile():
                continue
            member_key, dot, extension = member.name.partition(".")
            if not dot or "/" in member.name:
                raise CorruptShard(path, f"member {member.name!r} is not <key>.<extension>")
            if member_key != key:
                if key is not None:
                    yield key, sample
                key, sample = member_key, {}
            handle = tar.extractfile(member)
            assert handle is not None
            sample[extension] = handle.read()
        if key is not None:
            yield key, sample


def iter_shard(path: str | Path, keys: Collection[str] | None = None) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    """Yield (key, frames uint8 `[T, H, W, C]`, meta) for every sample of one shard, in order;
    with `keys`, for those samples only (the others are read past, not decoded).

    Raises `CorruptShard` for a sample without its meta or frames members.
    """
    shard = Path(path)
    for key, sample in _sample_groups(shard):
        if keys is not None and key not in keys:
            continue
        if META_MEMBER not in sample:
            raise CorruptShard(shard, f"sample {key!r} has no {META_MEMBER}")
        yield key, decode_clip(sample), json.loads(sample[META_MEMBER])


def read_shard_sample(path: str | Path, key: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The frames and meta of one sample of a shard, without decoding the others.

    Raises `KeyError` when the shard holds no sample `key`.
    """
    shard = Path(path)
    sample: dict[str, bytes] = {}
    # Random-access mode: tarfile reads headers and seeks over the data of other samples.
    with tarfile.open(shard, mode="r:") as tar:
        for member in tar:
            member_key, dot, extension = member.name.partition(".")
            if member.isfile() and dot and member_key == key:
                handle = tar.extractfile(member)
                assert handle is not None
                sample[extension] = handle.read()
    if not sample:
        raise KeyError(f"{shard}: no sample {key!r}")
    if META_MEMBER not in sample:
        raise CorruptShard(shard, f"sample {key!r} has no {META_MEMBER}")
    return decode_clip(sample), json.loads(sample[META_MEMBER])
