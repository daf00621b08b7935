from __future__ import annotations

import json
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echofm.data.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    NO_WINDOW,
    SCHEMA_PATH,
    ClipNotFound,
    ManifestSchemaError,
    load_clip,
    make_clip_id,
    manifest_schema,
    merge_manifest,
    read_manifest,
    write_manifest,
)
from echofm.data.shards import ShardWriter
from tests.factories.manifest import AT, make_row

def test_schema_comes_from_the_json_file():
    document = json.loads(SCHEMA_PATH.read_text())
    assert MANIFEST_COLUMNS == tuple(c["name"] for c in document["columns"])
    assert manifest_schema() == MANIFEST_SCHEMA
    for required in ["clip_id", "source_id", "source_hash", "status", "reason", "view", "fps", "fps_source",
                     "n_frames_source", "height_source", "width_source", "mask_method", "patient_id", "study_id",
                     "shard", "key", "content_hash", "ingest_run_id", "key_id", "ingested_at", "error_class", "error_message"]:
        assert required in MANIFEST_COLUMNS
    assert MANIFEST_SCHEMA.field("ingested_at").type == pa.timestamp("us", tz="UTC")
    assert not MANIFEST_SCHEMA.field("clip_id").nullable


def test_clip_ids_are_deterministic_hex_without_dots():
    a = make_clip_id("ab" * 32, 0)
    assert a == make_clip_id("ab" * 32, 0)
    assert a != make_clip_id("ab" * 32, 1) != make_clip_id("ab" * 32, NO_WINDOW)
    assert len(a) == 32 and all(ch in "0123456789abcdef" for ch in a)
    with pytest.raises(ValueError):
        make_clip_id("", 0)
    with pytest.raises(ValueError):
        make_clip_id("ab", -2)


# pyarrow's DataFrame conversion of tz-aware timestamps trips a pandas 3.1 deprecation (not ours).
@pytest.mark.filterwarnings("ignore:Series.values returning an ndarray")
def test_write_read_round_trip_and_atomic(tmp_path):
    rows = [make_row(i) for i in range(3)] + [make_row(9, status="failed", window_index=NO_WINDOW,
                                                         error_class="CorruptPixelData", reason="corrupt_pixel_data")]
    path = write_manifest(rows, tmp_path / "out" / "manifest.parquet")
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.parquet"]  # no temporary left
    table = read_manifest(path)
    assert table.schema == MANIFEST_SCHEMA
    assert table.num_rows == 4
    assert table.column("ingested_at")[0].as_py() == AT
    # A pyarrow table and a DataFrame go through the same enforcement.
    write_manifest(table, tmp_path / "again.parquet")
    write_manifest(table.to_pandas(), tmp_path / "from_pandas.parquet")
    assert read_manifest(tmp_path / "from_pandas.parquet").equals(table)


def test_missing_manifest_reads_as_empty_table(tmp_path):
    empty = read_manifest(tmp_path / "nothing.parquet")
    assert empty.num_rows == 0 and empty.schema == MANIFEST_SCHEMA


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("shard"), "missing"),
        (lambda r: r.update(extra_column=1), "extra"),
        (lambda r: r.update(PatientName="DOE^JOHN"), "identifying"),
        (lambda r: r.update(source_path="DOE^JOHN/IMG0001.dcm"), "identifying"),
        (lambda r: r.update(source_sha256="ab" * 32), "identifying"),
        (lambda r: r.update(n_frames_source="sixty"), "does not fit"),
        (lambda r: r.update(fps="fast"), "does not fit"),
        (lambda r: r.update(window_index=1.5), "does not fit"),
        (lambda r: r.update(status="maybe"), "status"),
        (lambda r: r.update(clip_id=None), "null"),
        (lambda r: r.update(ingested_at=None), "null"),
    ],
)
def test_rows_violating_the_schema_are_refused(tmp_path, mutate, message):
    rows = [make_row(0), make_row(1)]
    mutate(rows[1])
    target = tmp_path / "manifest.parquet"
    with pytest.raises(ManifestSchemaError, match=message):
        write_manifest(rows, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_tables_violating_the_schema_are_refused(tmp_path):
    table = write_and_read(tmp_path, [make_row(0), make_row(1)])
    with pytest.raises(ManifestSchemaError, match="type"):
        write_manifest(table.set_column(table.schema.get_field_index("fps"), "fps",
                                        pa.array(["50", "50"])), tmp_path / "m.parquet")
    with pytest.raises(ManifestSchemaError, match="missing"):
        write_manifest(table.drop_columns(["key"]), tmp_path / "m.parquet")
    with pytest.raises(ManifestSchemaError, match="repeat"):
        write_manifest(pa.concat_tables([table, table]), tmp_path / "m.parquet")
    # Lossless widening is accepted: int32 frame counts become int64.
    index = table.schema.get_field_index("n_frames_source")
    narrow = table.set_column(index, "n_frames_source", pa.array([64, 64], pa.int32()))
    assert read_manifest(write_manifest(narrow, tmp_path / "ok.parquet")).equals(table)
    # A file written around write_manifest is checked on read as well.
    pq.write_table(table.append_column("PatientID", pa.array(["123", "456"])), tmp_path / "bad.parquet")
    with pytest.raises(ManifestSchemaError, match="identifying"):
        read_manifest(tmp_path / "bad.parquet")


def write_and_read(tmp_path, rows):
    return read_manifest(write_manifest(rows, tmp_path / "base.parquet"))


def test_merge_dedupes_on_clip_id_with_new_rows_winning(tmp_path):
    existing = write_and_read(tmp_path, [make_row(0), make_row(1, status="failed", window_index=NO_WINDOW)])
    retried = make_row(1, status="failed", window_index=NO_WINDOW, reason="no_pixel_data")
    merged = merge_manifest(existing, [retried, make_row(2)])
    assert merged.num_rows == 3
    by_id = {r["clip_id"]: r for r in merged.to_pylist()}
    assert by_id[retried["clip_id"]]["reason"] == "no_pixel_data"
    # Merging the same rows again changes nothing.
    assert merge_manifest(merged, merged).equals(merged)


def test_load_clip_through_manifest_and_shard(tmp_path):
    rng = np.random.default_rng(0)
    clips = {i: rng.integers(0, 256, size=(32, 224, 224, 1), dtype=np.uint8) for i in range(3)}
    rows = []
    with ShardWriter(tmp_path, prefix="run1-b00000", max_count=2) as writer:
        for i, frames in clips.items():
            row = make_row(i)
            row["shard"], row["key"] = writer.write(row["clip_id"], frames, {"clip_id": row["clip_id"]})
            rows.append(row)
    rows.append(make_row(7, status="rejected"))
    write_manifest(rows, tmp_path / "manifest.parquet")
    for i, row in enumerate(rows[:3]):
        loaded = load_clip(tmp_path, row["clip_id"])
        assert loaded.dtype == np.uint8 and loaded.shape == (32, 224, 224, 1)
        np.testing.assert_array_equal(loaded, clips[i])
    import echofm

    np.testing.assert_array_equal(echofm.load_clip(tmp_path, rows[2]["clip_id"]), clips[2])
    with pytest.raises(ClipNotFound):
        load_clip(tmp_path, rows[3]["clip_id"])  # rejected rows have no clip
    with pytest.raises(ClipNotFound):
        load_clip(tmp_path, "0" * 32)


def test_a_manifest_directory_grows_by_parts_without_rewriting_earlier_ones(tmp_path):
    from echofm.data.loader import file_digest
    from echofm.data.manifest import append_manifest_part, manifest_parts, read_manifest_columns

    manifest = tmp_path / "manifest.parquet"
    first = append_manifest_part([make_row(0), make_row(1)], manifest, "run-a")
    before = first.read_bytes()
    digest = file_digest(manifest)
    append_manifest_part([make_row(2)], manifest, "run-b")
    assert [p.name for p in manifest_parts(manifest)] == ["part-run-a.parquet", "part-run-b.parquet"]
    assert first.read_bytes() == before  # the nightly append wrote one new file, nothing else
    assert file_digest(manifest) != digest
    assert read_manifest(manifest).num_rows == 3
    assert read_manifest_columns(manifest, ["clip_id"]).column_names == ["clip_id"]
    with pytest.raises(ManifestSchemaError, match="repeats clip ids"):
        append_manifest_part([make_row(1)], manifest, "run-c")
    with pytest.raises(ManifestSchemaError):
        append_manifest_part([{**make_row(3), "status": "maybe"}], manifest, "run-d")
    assert len(manifest_parts(manifest)) == 2 and not list(manifest.glob(".*"))


def test_a_single_file_manifest_becomes_the_first_part(tmp_path):
    from echofm.data.manifest import append_manifest_part, as_manifest_dataset, manifest_parts

    manifest = write_manifest([make_row(0)], tmp_path / "manifest.parquet")
    assert manifest_parts(manifest) == [manifest]
    append_manifest_part([make_row(1)], manifest, "run-b")
    assert manifest.is_dir() and len(manifest_parts(manifest)) == 2
    assert read_manifest(manifest).num_rows == 2
    # A conversion interrupted after the file was moved aside is finished by the next call.
    other = write_manifest([make_row(5)], tmp_path / "other" / "manifest.parquet")
    aside = other.with_name(".manifest.parquet.legacy")
    other.rename(aside)
    assert read_manifest(as_manifest_dataset(other)).num_rows == 1 and not aside.exists()
