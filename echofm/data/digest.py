"""Content digests of files: how the manifest, labels and sources are identified by content."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex SHA-256 of a file or object-store URL, streamed in chunks so a multi-GB cine never
    sits in memory."""
    from echofm.data.storage import open_binary

    digest = hashlib.sha256()
    with open_binary(path) as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
