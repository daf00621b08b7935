"""Discovery: every file under SOURCE, its container recognised by content, its bytes hashed.

Extensions lie in real archives (DICOM files named `IM0001` or `.bin`, text files named `.dcm`),
so the format comes from the first bytes: the `DICM` magic at offset 128, a DICOM data set that
starts without the preamble, an ISO-BMFF `ftyp` box (MP4/MOV), a RIFF `AVI ` header, a NIfTI or
MetaImage header (`echofm.io.volume`) or the PNG signature (`echofm.io.still`). Nothing is
skipped silently: a file that is none of these is returned with a rejection reason.

A re-run reads only what changed: `echofm.ingest.discovery_cache` remembers each file's format
and keyed hash under its (size, mtime, inode), keyed, in OUTPUT.

SOURCE may be an object-store prefix (`s3://bucket/archive`): its objects are listed, sniffed
from their first bytes and hashed as a stream (`echofm.data.storage`); `DiscoveredFile.path` is
then the object's URL, which a batch copies to local scratch before decoding it.

Each file is named from here on by its keyed id (`echofm.io.deid.source_id` of the bytes of its
path relative to SOURCE, whatever their encoding) and identified by content by a keyed digest of
its bytes; the plain digest never leaves `inspect_file`.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from echofm.data.digest import file_sha256 as sha256_file
from echofm.errors import IngestError
from echofm.io.quiet import silence_readers
from echofm.io.still import STILL_FORMATS, sniff_still
from echofm.io.volume import MHD_DATA_SUFFIXES, VOLUME_FORMATS, is_volume_data, sniff_volume

if TYPE_CHECKING:
    from echofm.ingest.discovery_cache import DiscoveryCache
    from echofm.io.deid import Pseudonymizer

MEDIA_FORMATS: tuple[str, ...] = ("dicom", "mp4", "avi", *VOLUME_FORMATS, *STILL_FORMATS)
# ISO-BMFF top-level boxes a valid MP4/MOV may start with (`ftyp` normally comes first; old
# QuickTime files may start with the others).
_BMFF_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"})
# Bytes of an object read to sniff it: the preamble test needs 132, a header without preamble is
# parsed from these (DICOM headers of ultrasound files are a few KB).
_DATASET_HEAD_BYTES = 1 << 20
# Groups a DICOM data set without preamble starts with: file meta (0002) or identifying (0008).
_DATASET_FIRST_GROUPS = frozenset({0x0002, 0x0008})


class SourceError(IngestError, OSError):
    """SOURCE is missing, not a directory, or cannot be listed: a systemic failure of a run.

    Its message never names SOURCE: a root folder named after a patient would reach the logs."""

    reason = "source_unreadable"


@dataclass(frozen=True)
class DiscoveredFile:
    """One file found under SOURCE.

    path: absolute path or an object's URL for an object-store SOURCE (to open the file; never
    written anywhere); rel_path: POSIX path relative to SOURCE (undecodable bytes
    surrogate-escaped; the key of the path map, never written elsewhere); source_id: its keyed id
    (what the manifest and logs name the file by); source_format: one of `MEDIA_FORMATS`
    or "other"; source_hash: keyed digest of the file's bytes ("" when unreadable); reject_reason:
    `not_media` / `empty_file` / `unreadable_file` / `volume_data` (the voxels of an `.mhd`
    beside it, read with that header) when discovery already rules the file out.
    """

    path: Path | str
    rel_path: str
    source_id: str
    size_bytes: int
    source_format: str
    source_hash: str
    reject_reason: str | None = None

    @property
    def is_media(self) -> bool:
        return self.reject_reason is None


def _looks_like_dataset_without_preamble(path: Path | BinaryIO, head: bytes) -> bool:
    """A raw DICOM data set: the first tag is in group 0002/0008 and pydicom can parse a header."""
    if len(head) < 8:
        return False
    group, _element = struct.unpack("<HH", head[:4])
    if group not in _DATASET_FIRST_GROUPS:
        return False
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            # A forced parse of a non-DICOM file warns about every odd byte; the verdict is below.
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError, struct.error):
        return False
    # `force=True` parses almost anything; a real header names its SOP class or modality.
    return "SOPClassUID" in dataset or "Modality" in dataset


def sniff_format(path: Path) -> str:
    """One of `MEDIA_FORMATS` or "other", from the file's first bytes (never its extension)."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    return sniff_head(head, path)


def sniff_head(head: bytes, dataset: Path | BinaryIO) -> str:
    """`sniff_format` from the first 132 bytes; `dataset` (the file, or its first bytes as a
    stream) is parsed only when the head could be a DICOM data set without preamble."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if len(head) >= 8 and head[4:8] in _BMFF_FIRST_BOXES:
        return "mp4"
    if _looks_like_dataset_without_preamble(dataset, head):
        return "dicom"
    # A volume header may need more than the head (a gzipped NIfTI is opened to look inside), so
    # volumes are recognised in files on disk; an object is copied to scratch before that matters.
    volume = sniff_volume(dataset, head) if isinstance(dataset, Path) else None
    return sniff_still(head) or volume or "other"


def iter_source_files(source: Path) -> Iterator[Path]:
    """Regular files under `source`, recursively, in a stable (sorted) order; symlinks to files
    are followed, hidden files included (archives do not promise tidy names)."""
    if not source.is_dir():
        raise SourceError("SOURCE is not a readable directory")
    try:
        entries = sorted(os.scandir(source), key=lambda e: e.name)
    except OSError as exc:
        raise SourceError(f"a folder under SOURCE cannot be listed ({exc.strerror})") from None
    for entry in entries:
        # `source / name` parses only the name (a 300K-file tree pays for every parse).
        if entry.is_dir(follow_symlinks=False):
            yield from iter_source_files(source / entry.name)
        elif entry.is_file():
            yield source / entry.name


def _reject_reason(source_format: str, path: Path | None) -> str | None:
    """Why discovery rules a file of `source_format` out (None: media). The `volume_data` verdict
    depends on the `.mhd` beside the file, so it is asked afresh even of a cached file."""
    if source_format in MEDIA_FORMATS:
        return None
    # The suffix test on the string first: pathlib's costs more than the rest of a cache hit.
    if path is not None and str(path).lower().endswith(MHD_DATA_SUFFIXES) and is_volume_data(path):
        return "volume_data"
    return "not_media"


def inspect_file(path: Path, source: Path, pseudonymizer: Pseudonymizer, *, size: int | None = None) -> DiscoveredFile:
    """Sniff and hash one file (`size`: its size, when the caller has just stat'ed it). Unreadable
    files are recorded as `unreadable_file`, not raised."""
    rel_path = path.relative_to(source).as_posix()
    source_id = pseudonymizer.source_id(rel_path)
    try:
        size = path.stat().st_size if size is None else size
        if size == 0:
            empty = pseudonymizer.digest("source", hashlib.sha256().digest())
            return DiscoveredFile(path, rel_path, source_id, 0, "other", empty, "empty_file")
        source_format = sniff_format(path)
        digest = pseudonymizer.digest("source", sha256_file(path))
    except OSError:
        return DiscoveredFile(path, rel_path, source_id, 0, "other", "", "unreadable_file")
    return DiscoveredFile(path, rel_path, source_id, size, source_format, digest, _reject_reason(source_format, path))


def inspect_object(url: str, rel_path: str, size: int, pseudonymizer: Pseudonymizer) -> DiscoveredFile:
    """`inspect_file` for an object of an object-store SOURCE."""
    from echofm.data.storage import read_head

    source_id = pseudonymizer.source_id(rel_path)
    try:
        if size == 0:
            empty = pseudonymizer.digest("source", hashlib.sha256().digest())
            return DiscoveredFile(url, rel_path, source_id, 0, "other", empty, "empty_file")
        head = read_head(url, _DATASET_HEAD_BYTES)
        source_format = sniff_head(head[:132], io.BytesIO(head))
        digest = pseudonymizer.digest("source", sha256_file(url))
    except OSError:
        return DiscoveredFile(url, rel_path, source_id, 0, "other", "", "unreadable_file")
    return DiscoveredFile(url, rel_path, source_id, size, source_format, digest, _reject_reason(source_format, None))


# Files stat'ed and keyed per pool task: one task per file would cost more than a cache hit.
_STAT_CHUNK = 512


def _discover_objects(
    source: str, pseudonymizer: Pseudonymizer, workers: int, cache: DiscoveryCache | None
) -> list[DiscoveredFile]:
    from echofm.data.storage import join, walk_objects

    try:
        objects = list(walk_objects(source))
    except OSError as exc:
        # The URL names the bucket and prefix, which may carry identity: only the error's kind.
        raise SourceError(f"SOURCE cannot be listed ({type(exc).__name__})") from None
    if not objects:
        raise SourceError("SOURCE holds no object")
    found: list[DiscoveredFile | None] = [None] * len(objects)
    jobs: list[tuple[int, str, str, int, bytes | None]] = []
    for index, (rel, size, version) in enumerate(objects):
        url = str(join(source, rel))
        # An object whose listing gives no version stamp is read in full every run.
        key = known = None
        if cache is not None and version:
            source_id = pseudonymizer.source_id(rel)
            key = cache.key(source_id, size, version)
            known = cache.lookup(key)
        if known is not None:
            found[index] = DiscoveredFile(url, rel, source_id, known.size_bytes, known.source_format,
                                          known.source_hash, _reject_reason(known.source_format, None))
        else:
            jobs.append((index, url, rel, size, key))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        inspected = list(pool.map(lambda job: inspect_object(job[1], job[2], job[3], pseudonymizer), jobs))
    for (index, *_rest, key), item in zip(jobs, inspected, strict=True):
        found[index] = item
        if key is not None and cache is not None:
            cache.remember(key, item)
    return found  # type: ignore[return-value]


def _stat_keys(paths: list[Path], root: Path, pseudonymizer: Pseudonymizer,
               cache: DiscoveryCache) -> list[tuple[str, str, int, bytes] | None]:
    """(rel_path, source_id, size, cache key) of each path, None where it cannot be stat'ed."""
    out: list[tuple[str, str, int, bytes] | None] = []
    # `relative_to(root).as_posix()` by slicing: the paths were listed under `root` (POSIX), and
    # pathlib's version costs more than the rest of a cache hit.
    prefix = len(str(root).rstrip("/")) + 1
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            out.append(None)
            continue
        rel_path = str(path)[prefix:]
        source_id = pseudonymizer.source_id(rel_path)
        out.append((rel_path, source_id, stat.st_size, cache.key(source_id, stat.st_size, stat.st_mtime_ns, stat.st_ino)))
    return out


def _discover_cached(paths: list[Path], root: Path, pseudonymizer: Pseudonymizer, workers: int,
                     cache: DiscoveryCache) -> list[DiscoveredFile]:
    """`discover` of a local SOURCE through `cache`: stat and key every file, read only misses."""
    chunks = [paths[start : start + _STAT_CHUNK] for start in range(0, len(paths), _STAT_CHUNK)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # stat releases the GIL: on a network file system the stats are what takes time.
        stamped = [entry for chunk in pool.map(lambda c: _stat_keys(c, root, pseudonymizer, cache), chunks)
                   for entry in chunk]
        found: list[DiscoveredFile | None] = [None] * len(paths)
        misses: list[tuple[int, int | None, bytes | None]] = []
        for index, (path, entry) in enumerate(zip(paths, stamped, strict=True)):
            known = cache.lookup(entry[3]) if entry is not None else None
            if entry is not None and known is not None:
                rel_path, source_id, _size, _key = entry
                found[index] = DiscoveredFile(path, rel_path, source_id, known.size_bytes, known.source_format,
                                              known.source_hash, _reject_reason(known.source_format, path))
            else:
                misses.append((index, None if entry is None else entry[2], None if entry is None else entry[3]))
        inspected = list(pool.map(lambda miss: inspect_file(paths[miss[0]], root, pseudonymizer, size=miss[1]), misses))
    for (index, _size, key), item in zip(misses, inspected, strict=True):
        found[index] = item
        if key is not None:
            cache.remember(key, item)
    return found  # type: ignore[return-value]


def discover(
    source: str | Path, pseudonymizer: Pseudonymizer, *, workers: int = 4, cache: DiscoveryCache | None = None
) -> list[DiscoveredFile]:
    """Every file under `source` (a directory or an object-store prefix), sorted by relative path,
    named by keyed ids under `pseudonymizer`.

    Hashing reads every byte; `workers` threads overlap the reads (hashlib releases the GIL on
    large buffers). With `cache` (`echofm.ingest.discovery_cache`), a file whose size, mtime and
    inode (an object's size and ETag) match an entry is neither opened nor hashed; the rest are
    read in full and remembered in `cache`. Raises `SourceError` when `source` itself cannot be
    read.
    """
    silence_readers()  # before the threads: the sniffing parses headers with pydicom
    from echofm.data.storage import is_remote

    if is_remote(source):
        return _discover_objects(str(source), pseudonymizer, workers, cache)
    root = Path(source).resolve()
    paths = list(iter_source_files(root))
    if cache is not None:
        return _discover_cached(paths, root, pseudonymizer, workers, cache)
    if workers <= 1 or len(paths) < 2:
        return [inspect_file(path, root, pseudonymizer) for path in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: inspect_file(p, root, pseudonymizer), paths))
