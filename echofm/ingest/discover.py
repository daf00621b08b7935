"""Discovery: every file under SOURCE, its container recognised by content, its bytes hashed.

Extensions lie in real archives (DICOM files named `IM0001` or `.bin`, text files named `.dcm`),
so the format comes from the first bytes: the `DICM` magic at offset 128, a DICOM data set that
starts without the preamble, an ISO-BMFF `ftyp` box (MP4/MOV) or a RIFF `AVI ` header. Nothing is
skipped silently: a file that is none of these is returned with a rejection reason.
"""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from echofm.data.digest import file_sha256 as sha256_file
from echofm.errors import IngestError

MEDIA_FORMATS: tuple[str, ...] = ("dicom", "mp4", "avi")
# ISO-BMFF top-level boxes a valid MP4/MOV may start with (`ftyp` normally comes first; old
# QuickTime files may start with the others).
_BMFF_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"})
# Groups a DICOM data set without preamble starts with: file meta (0002) or identifying (0008).
_DATASET_FIRST_GROUPS = frozenset({0x0002, 0x0008})


class SourceError(IngestError, OSError):
    """SOURCE is missing, not a directory, or cannot be listed: a systemic failure of a run."""


@dataclass(frozen=True)
class DiscoveredFile:
    """One file found under SOURCE.

    path: absolute path; rel_path: POSIX path relative to SOURCE (what the manifest records);
    source_format: "dicom" | "mp4" | "avi" | "other"; sha256: hex digest of the file's bytes;
    reject_reason: `not_media` / `empty_file` when discovery already rules the file out.
    """

    path: Path
    rel_path: str
    size_bytes: int
    source_format: str
    sha256: str
    reject_reason: str | None = None

    @property
    def is_media(self) -> bool:
        return self.reject_reason is None


def _looks_like_dataset_without_preamble(path: Path, head: bytes) -> bool:
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
    """"dicom" | "mp4" | "avi" | "other", from the file's first bytes (never its extension)."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if len(head) >= 8 and head[4:8] in _BMFF_FIRST_BOXES:
        return "mp4"
    if _looks_like_dataset_without_preamble(path, head):
        return "dicom"
    return "other"


def iter_source_files(source: Path) -> Iterator[Path]:
    """Regular files under `source`, recursively, in a stable (sorted) order; symlinks to files
    are followed, hidden files included (archives do not promise tidy names)."""
    if not source.is_dir():
        raise SourceError(f"SOURCE {source} is not a readable directory")
    try:
        entries = sorted(os.scandir(source), key=lambda e: e.name)
    except OSError as exc:
        raise SourceError(f"cannot list SOURCE {source}: {exc.strerror}") from exc
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from iter_source_files(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


def inspect_file(path: Path, source: Path) -> DiscoveredFile:
    """Sniff and hash one file. Unreadable files are recorded as `unreadable_file`, not raised."""
    rel_path = path.relative_to(source).as_posix()
    try:
        size = path.stat().st_size
        if size == 0:
            return DiscoveredFile(path, rel_path, 0, "other", hashlib.sha256().hexdigest(), "empty_file")
        source_format = sniff_format(path)
        digest = sha256_file(path)
    except OSError:
        return DiscoveredFile(path, rel_path, 0, "other", "", "unreadable_file")
    reject = None if source_format in MEDIA_FORMATS else "not_media"
    return DiscoveredFile(path, rel_path, size, source_format, digest, reject)


def discover(source: str | Path, *, workers: int = 4) -> list[DiscoveredFile]:
    """Every file under `source`, sorted by relative path.

    Hashing reads every byte; `workers` threads overlap the reads (hashlib releases the GIL on
    large buffers). Raises `SourceError` when `source` itself cannot be read.
    """
    root = Path(source).resolve()
    paths = list(iter_source_files(root))
    if workers <= 1 or len(paths) < 2:
        return [inspect_file(path, root) for path in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: inspect_file(p, root), paths))
