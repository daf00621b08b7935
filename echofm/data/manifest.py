"""The Parquet manifest of an ingestion run (`OUTPUT/manifest.parquet`) and its schema.

The schema is declared in `schemas/manifest.schema.json` (columns, Arrow types, nullability,
allowed statuses, forbidden identifying column names) and enforced by `write_manifest`: a table
that would not round-trip through the schema never reaches disk. What the written file must
satisfy as data (unique ids, accepted rows with a shard...) is the GX suite
`schemas/manifest_expectations.json`, checked by `echofm.ingest.contract.validate_manifest`.

An ingestion OUTPUT's manifest is a Parquet dataset: `manifest.parquet/` is a directory of parts
(`part-<run id>.parquet`), one per run that added rows, each written atomically
(`append_manifest_part`). A nightly run of a few thousand files adds one small part instead of
rewriting 300K rows. pyarrow, pandas, DuckDB and Spark read the directory as one table, and
`read_manifest` reads either form; a single-file manifest of an older OUTPUT becomes the
directory's first part at the next append (`as_manifest_dataset`).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from echofm.errors import DataError

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_PATH = SCHEMAS_DIR / "manifest.schema.json"
MANIFEST_FILENAME = "manifest.parquet"
NO_WINDOW = -1

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
}


class ManifestError(DataError):
    """Base class of manifest failures."""


class ManifestSchemaError(ManifestError, ValueError):
    """Rows or a table that do not match `schemas/manifest.schema.json`: missing or extra columns,
    a wrong type, a null where none is allowed, an unknown status, or a repeated clip id."""


class ClipNotFound(ManifestError, LookupError):
    """No accepted clip with that id in the manifest."""


@lru_cache(maxsize=1)
def _schema_document() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def manifest_schema() -> pa.Schema:
    """The Arrow schema built from `schemas/manifest.schema.json` (column order as declared)."""
    fields = []
    for column in _schema_document()["columns"]:
        try:
            arrow_type = _ARROW_TYPES[column["type"]]
        except KeyError:
            raise ManifestSchemaError(f"{SCHEMA_PATH}: unknown type {column['type']!r} of {column['name']}") from None
        fields.append(pa.field(column["name"], arrow_type, nullable=bool(column["nullable"])))
    return pa.schema(fields)


MANIFEST_SCHEMA: pa.Schema = manifest_schema()
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
STATUS_VALUES: tuple[str, ...] = tuple(_schema_document()["status_values"])
FORBIDDEN_COLUMNS: tuple[str, ...] = tuple(_schema_document()["forbidden_columns"])
_INTEGER_COLUMNS: tuple[str, ...] = tuple(f.name for f in MANIFEST_SCHEMA if pa.types.is_integer(f.type))


def make_clip_id(source_hash: str, window_index: int) -> str:
    """Deterministic clip id: 32 lowercase hex chars from the source's keyed hash and the window index.

    Re-running on the same bytes with the same secret gives the same ids, so a re-run adds
    nothing; without the secret nobody can compute the id of a file they hold. Rows that produced
    no window use `window_index = NO_WINDOW` (-1). Hex only: no dots, so it is a valid shard key.
    """
    if not isinstance(source_hash, str) or not source_hash:
        raise ValueError("source_hash must be a non-empty string")
    if window_index < NO_WINDOW:
        raise ValueError(f"window_index must be >= {NO_WINDOW}, got {window_index}")
    return hashlib.sha256(f"echofm-clip\x00{source_hash}\x00{int(window_index)}".encode()).hexdigest()[:32]


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _check_columns(names: Sequence[str]) -> None:
    present = list(names)
    duplicated = sorted({n for n in present if present.count(n) > 1})
    if duplicated:
        raise ManifestSchemaError(f"duplicated columns {duplicated}")
    extra = [n for n in present if n not in MANIFEST_COLUMNS]
    forbidden = {_normalise(f) for f in FORBIDDEN_COLUMNS}
    identifying = [n for n in extra if _normalise(n) in forbidden]
    if identifying:
        raise ManifestSchemaError(f"identifying columns are forbidden in the manifest: {identifying}")
    missing = [n for n in MANIFEST_COLUMNS if n not in present]
    if missing or extra:
        raise ManifestSchemaError(f"manifest columns differ from the schema: missing {missing}, extra {extra}")


def _conform_column(name: str, column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    actual = column.type
    if actual == target:
        return column
    widening = (
        pa.types.is_null(actual)
        or (pa.types.is_integer(actual) and (pa.types.is_integer(target) or pa.types.is_floating(target)))
        or (pa.types.is_floating(actual) and pa.types.is_floating(target))
        or (pa.types.is_timestamp(actual) and pa.types.is_timestamp(target) and actual.tz is not None)
        or (pa.types.is_large_string(actual) and pa.types.is_string(target))
        or (pa.types.is_dictionary(actual) and pa.types.is_string(actual.value_type) and pa.types.is_string(target))
    )
    if not widening:
        raise ManifestSchemaError(f"column {name!r} has type {actual}, the schema says {target}")
    try:
        return column.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ManifestSchemaError(f"column {name!r} cannot be stored as {target}: {error}") from error


def _check_values(table: pa.Table) -> None:
    for field in MANIFEST_SCHEMA:
        if not field.nullable and table.column(field.name).null_count:
            raise ManifestSchemaError(f"column {field.name!r} has {table.column(field.name).null_count} null value(s)")
    bad_status = pc.unique(pc.filter(table["status"], pc.invert(pc.is_in(table["status"], pa.array(STATUS_VALUES)))))
    if len(bad_status):
        raise ManifestSchemaError(f"status values {bad_status.to_pylist()} not in {list(STATUS_VALUES)}")
    if pc.count_distinct(table["clip_id"]).as_py() != table.num_rows:
        counts = pc.value_counts(table["clip_id"])
        repeated = [c["values"].as_py() for c in counts if c["counts"].as_py() > 1][:5]
        raise ManifestSchemaError(f"clip_id values repeat: {repeated}")


def conform_table(table: pa.Table) -> pa.Table:
    """Check a table against the manifest schema and return it in the schema's column order and
    exact types (lossless widenings such as int32 -> int64 are applied). `ManifestSchemaError`
    for missing/extra/identifying columns, other types, nulls in required columns, unknown
    statuses and repeated clip ids."""
    _check_columns(table.column_names)
    columns = [_conform_column(f.name, table.column(f.name), f.type) for f in MANIFEST_SCHEMA]
    conformed = pa.Table.from_arrays(columns, schema=MANIFEST_SCHEMA)
    _check_values(conformed)
    return conformed


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Manifest rows (one dict per row, every schema column as a key) -> a conformed Arrow table.

    Values are converted by Arrow under the schema's types: a string where a number belongs, a
    fractional float in an integer column or a missing key raise `ManifestSchemaError`.
    """
    materialised = [dict(row) for row in rows]
    for index, row in enumerate(materialised):
        if set(row) != set(MANIFEST_COLUMNS):
            try:
                _check_columns(list(row))
            except ManifestSchemaError as error:
                raise ManifestSchemaError(f"row {index}: {error}") from None
    # Arrow truncates 1.5 to 1 when it fills an integer column from Python values; refuse instead.
    for name in _INTEGER_COLUMNS:
        for index, row in enumerate(materialised):
            value = row[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ManifestSchemaError(f"row {index}: a value does not fit the manifest schema: {name}={value!r} is not an integer")
    try:
        table = pa.Table.from_pylist(materialised, schema=MANIFEST_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ManifestSchemaError(f"a value does not fit the manifest schema: {error}") from error
    _check_values(table)
    return table


def _to_table(rows_or_table: Any) -> pa.Table:
    if isinstance(rows_or_table, pa.Table):
        return conform_table(rows_or_table)
    if hasattr(rows_or_table, "to_dict") and hasattr(rows_or_table, "columns"):
        # A pandas DataFrame: through Arrow's conversion, then the same checks as a table.
        return conform_table(pa.Table.from_pandas(rows_or_table, preserve_index=False))
    return rows_to_table(rows_or_table)


def write_manifest(rows_or_table: Any, path: str | Path) -> Path:
    """Write the manifest atomically (temporary file in the same directory, then rename).

    rows_or_table: a `pyarrow.Table`, a pandas DataFrame, or an iterable of row dicts.
    Raises `ManifestSchemaError` (nothing is written) when it does not match the schema.
    """
    from echofm.data.storage import is_remote

    return _write_atomically(_to_table(rows_or_table), path if is_remote(path) else Path(path))


def read_manifest(path: str | Path) -> pa.Table:
    """The manifest (a file, or a directory of parts) as a conformed `pyarrow.Table`; an empty
    table with the schema when it does not exist. Raises `ManifestSchemaError` when it does not
    match the schema."""
    if not manifest_parts(path):
        return MANIFEST_SCHEMA.empty_table()
    return conform_table(read_parquet(path))


def read_manifest_columns(path: str | Path, columns: Sequence[str]) -> pa.Table:
    """Only `columns` of the manifest (file or directory, local or an object-store URL; empty
    when absent), as Arrow: what a 300K-row manifest costs to consult without turning every row
    into Python objects."""
    if not manifest_parts(path):
        return MANIFEST_SCHEMA.empty_table().select(list(columns))
    return read_parquet(path, columns)


def read_parquet(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A Parquet file or directory of parts, local or on object storage, as it is (unchecked)."""
    from echofm.data.storage import filesystem, is_remote

    if is_remote(path):
        fs, inner = filesystem(path)
        return pq.read_table(inner, columns=None if columns is None else list(columns), filesystem=fs)
    return pq.read_table(path, columns=None if columns is None else list(columns))


PART_PREFIX = "part-"
_LEGACY_PART = f"{PART_PREFIX}00000000-legacy.parquet"
# Rows per Parquet row group: readers that filter (load_clip by clip id) skip whole groups.
_ROW_GROUP_ROWS = 65_536


def manifest_parts(path: str | Path) -> list[Any]:
    """The part files of a manifest directory in name order (the file itself for a single file);
    URLs for a manifest on object storage."""
    from echofm.data.storage import filesystem, glob, is_remote

    if is_remote(path):
        fs, inner = filesystem(path)
        return [str(path)] if fs.isfile(inner) else glob(path, f"{PART_PREFIX}*.parquet")
    source = Path(path)
    if source.is_file():
        return [source]
    return sorted(source.glob(f"{PART_PREFIX}*.parquet")) if source.is_dir() else []


def as_manifest_dataset(path: str | Path) -> Path:
    """Make sure the manifest at `path` is a directory of parts: a single-file manifest (an older
    OUTPUT) is moved in as its first part. Crash-safe: the file is first renamed aside, and a
    later call finishes a move that was interrupted."""
    target = Path(path)
    aside = target.with_name(f".{target.name}.legacy")
    if target.is_file():
        os.replace(target, aside)
    if aside.exists():
        target.mkdir(parents=True, exist_ok=True)
        os.replace(aside, target / _LEGACY_PART)
    target.mkdir(parents=True, exist_ok=True)
    return target


def append_manifest_part(rows_or_table: Any, path: str | Path, part_name: str) -> Path:
    """Add one part (`part-<part_name>.parquet`) to the manifest directory at `path`, atomically.

    Checked against the schema first (`ManifestSchemaError`, nothing written), and against the
    parts already there: a clip id that is already recorded raises `ManifestSchemaError` too, so
    parts never disagree about a clip. Returns the part's path.
    """
    from echofm.data.storage import is_remote, join

    table = _to_table(rows_or_table)
    # Object storage has no single-file manifests to convert (its OUTPUTs start with parts).
    directory = path if is_remote(path) else as_manifest_dataset(path)
    recorded = read_manifest_columns(directory, ["clip_id"])["clip_id"]
    if len(recorded) and pc.any(pc.is_in(table["clip_id"], value_set=recorded.combine_chunks())).as_py():
        raise ManifestSchemaError(f"part {part_name!r} repeats clip ids already recorded in {directory}")
    return _write_atomically(table, join(directory, f"{PART_PREFIX}{part_name}.parquet"))


def _write_atomically(table: pa.Table, target: Any) -> Any:
    """Temporary file in the same directory (a dot name, which dataset readers skip), then rename;
    on object storage a complete local file, then one whole-object upload."""
    from echofm.data.storage import is_remote, upload

    if is_remote(target):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="echofm-manifest-") as scratch:
            local = Path(scratch) / "part.parquet"
            pq.write_table(table, local, row_group_size=_ROW_GROUP_ROWS)
            upload(local, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_table_atomically(table, target, row_group_size=_ROW_GROUP_ROWS)


def write_table_atomically(table: pa.Table, path: Path, *, row_group_size: int | None = None) -> Path:
    """Write `table` to a temporary name beside `path`, then rename: a reader sees the old file
    or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, temporary, row_group_size=row_group_size)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def merge_manifest(existing: pa.Table, new: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows of `existing` plus `new`, one row per clip id; on a repeated id the new row wins.

    For incremental runs: a re-run that produced the same clips leaves the manifest unchanged in
    content, and a retried file's new rows replace its old ones with the same id. Row order:
    existing rows (not replaced) first, then the new rows.
    """
    old = conform_table(existing)
    fresh = _to_table(new)
    keep = pc.invert(pc.is_in(old["clip_id"], value_set=fresh["clip_id"]))
    return pa.concat_tables([old.filter(keep), fresh])


def load_clip(output_dir: str | Path, clip_id: str) -> np.ndarray:
    """The accepted clip `clip_id` of an ingestion output: uint8 `[T, H, W, C]` (`[32, 224, 224,
    C]` with the default ingestion settings).

    Looks the clip up in `output_dir/manifest.parquet` and reads its member from the shard.
    Raises `ClipNotFound` when the manifest has no accepted row with that id.
    """
    from echofm.data.shards import SHARDS_DIRNAME, read_shard_sample

    output = Path(output_dir)
    manifest = output / MANIFEST_FILENAME
    if not manifest.exists():
        raise ClipNotFound(f"{manifest} does not exist")
    rows = pq.read_table(
        manifest, columns=["clip_id", "status", "shard", "key"], filters=[("clip_id", "=", clip_id)]
    ).to_pylist()
    accepted = [row for row in rows if row["status"] == "accepted" and row["shard"] and row["key"]]
    if not accepted:
        raise ClipNotFound(f"{manifest}: no accepted clip {clip_id!r}")
    row = accepted[0]
    frames, _ = read_shard_sample(output / SHARDS_DIRNAME / row["shard"], row["key"])
    return frames
