"""Where bytes live: a local path, or an object-store URL (`s3://bucket/prefix`) through fsspec.

One place knows how to list, read and write both, so that SOURCE, OUTPUT (shards, manifest, QC)
and training inputs may sit on S3-compatible storage. Credentials and the endpoint come from the
standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` for a
MinIO or other S3-compatible server), which s3fs, boto3 and MLflow all read.

Writes to object storage are whole-object PUTs from a complete local file: S3 makes an object
visible only once its upload (single or multipart) completes, so a reader never sees half a shard
or half a manifest part. That is the object-store form of the local write-then-rename.

WebDataset opens shard URLs through its `gopen_schemes` table; `register_webdataset_schemes`
adds the fsspec protocols to it, so training streams `s3://` shards like local ones.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

Location = str | Path


def location(value: Location) -> Location:
    """A local path resolved, or an object-store URL as given (without a trailing slash): what
    every command and stage takes for SOURCE, OUTPUT and shard directories."""
    return str(value).rstrip("/") if is_remote(value) else Path(value).resolve()


def is_remote(location: Location) -> bool:
    """True for a URL with a scheme other than `file` (`s3://...`); local paths are not."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def filesystem(location: Location) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL.

    Listings are never served from fsspec's cache: other processes (batch workers on other
    machines) add shards and parts between two listings of one orchestrator.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(location))
    fs.invalidate_cache()
    return fs, path


def join(location: Location, *parts: str) -> Location:
    """`location / part / ...`: a Path for a local location, a URL string for a remote one."""
    if not is_remote(location):
        return Path(location).joinpath(*parts)
    return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])


def name(location: Location) -> str:
    """The last component of a path or URL."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def parent(location: Location) -> Location:
    """The location one level up."""
    if not is_remote(location):
        return Path(location).parent
    return str(location).rstrip("/").rsplit("/", 1)[0]


def size(location: Location) -> int:
    """Bytes of a file or object."""
    if not is_remote(location):
        return Path(location).stat().st_size
    fs, path = filesystem(location)
    return int(fs.size(path))


def exists(location: Location) -> bool:
    if not is_remote(location):
        return Path(location).exists()
    fs, path = filesystem(location)
    return bool(fs.exists(path))


def is_dir(location: Location) -> bool:
    if not is_remote(location):
        return Path(location).is_dir()
    fs, path = filesystem(location)
    return bool(fs.isdir(path))


def glob(location: Location, pattern: str) -> list[Location]:
    """Entries of directory `location` matching `pattern` (one level), sorted by name."""
    if not is_remote(location):
        return sorted(Path(location).glob(pattern))
    fs, path = filesystem(location)
    protocol = str(location).split("://", 1)[0]
    return sorted(f"{protocol}://{found}" for found in fs.glob(f"{path.rstrip('/')}/{pattern}"))


def walk_files(location: Location) -> Iterator[tuple[str, int]]:
    """Every object under a remote prefix: (path relative to it, size in bytes), sorted."""
    for rel, size, _version in walk_objects(location):
        yield rel, size


def walk_objects(location: Location) -> Iterator[tuple[str, int, str]]:
    """`walk_files` with each object's version stamp from the same listing: its ETag (S3 gives
    one for every object, and a rewrite changes it), else its last-modified time, else ""
    (the store's listing tells nothing cheap about changes)."""
    fs, path = filesystem(location)
    root = path.rstrip("/") + "/"
    for found, info in sorted(fs.find(root, detail=True).items()):
        if info.get("type") == "file" and found.startswith(root):
            version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
            yield found[len(root):], int(info.get("size") or 0), str(version)


@contextmanager
def open_binary(location: Location, mode: str = "rb") -> Iterator[IO[bytes]]:
    """A binary file object for a local path or a URL."""
    if not is_remote(location):
        with open(location, mode) as handle:
            yield handle
        return
    fs, path = filesystem(location)
    with fs.open(path, mode) as handle:
        yield handle


def read_head(location: Location, n_bytes: int) -> bytes:
    """The first `n_bytes` of a file or object (fewer when it is shorter)."""
    with open_binary(location) as handle:
        return handle.read(n_bytes)


def download(location: Location, local: Path) -> Path:
    """Copy a remote object to the local file `local`; returns it."""
    fs, path = filesystem(location)
    local.parent.mkdir(parents=True, exist_ok=True)
    fs.get_file(path, str(local))
    return local


def upload(local: Path, location: Location) -> None:
    """Publish the complete local file `local` at `location` (a whole-object PUT: readers see the
    old state or the whole new object, never part of it); a local location gets a copy."""
    if not is_remote(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, location)
        return
    fs, path = filesystem(location)
    fs.put_file(str(local), path)


def upload_tree(local: Path, location: Location) -> None:
    """Publish every file under the local directory `local` below `location`."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        upload(path, join(location, *path.relative_to(local).parts))


def remove(location: Location) -> None:
    """Delete a file or object if it exists."""
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = filesystem(location)
    if fs.exists(path):
        fs.rm_file(path)


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> IO[bytes]:
    """WebDataset opener for fsspec URLs (its `gopen_schemes` signature)."""
    fs, path = filesystem(url)
    return fs.open(path, mode, block_size=max(bufsize, 1 << 22))


def register_webdataset_schemes(protocols: tuple[str, ...] = ("s3",)) -> None:
    """Let WebDataset open `s3://` shard URLs through fsspec."""
    import importlib

    # The module, not the `webdataset.gopen` function the package exports under the same name.
    table = importlib.import_module("webdataset.gopen").gopen_schemes
    for protocol in protocols:
        table.setdefault(protocol, _gopen_fsspec)
