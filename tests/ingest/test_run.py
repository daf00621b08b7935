"""Plan / resume / finalize without Prefect: idempotent re-runs, a killed run resumed, duplicates
across parallel batches."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from echofm.data.manifest import load_clip, manifest_parts, read_manifest
from echofm.ingest.batch import process_batch
from echofm.ingest.config import IngestConfig
from echofm.ingest.discover import SourceError
from echofm.ingest.run import OutputError, SecretMismatch, finalize_ingest, ingest_serially, plan_ingest, run_batch
from echofm.io.deid import MissingSecret, PathMapInsideOutput, SecretInsideOutput, read_path_map, write_secret_file
from tests.factories.media import fan_cine, write_dicom


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    for index in range(5):
        write_dicom(root / f"clip{index}.dcm", fan_cine(34, seed=10 + index))
    (root / "notes.txt").write_text("not media")
    return root


def _rows(output: Path, source: Path, keyed) -> list[dict]:
    """Manifest rows with the file's name added (the manifest names files by keyed id only)."""
    names = {keyed.source_id(p.relative_to(source).as_posix()): p.relative_to(source).as_posix()
             for p in source.rglob("*") if p.is_file()}
    return [{**row, "name": names[row["source_id"]]} for row in read_manifest(output / "manifest.parquet").to_pylist()]


def test_killed_run_resumes_without_duplicates_or_partial_shards(source: Path, tmp_path: Path, keyed) -> None:
    output = tmp_path / "out"
    config = IngestConfig(batch_size=2)
    first = plan_ingest(source, output, config)
    assert [len(b.files) for b in first.batches] == [2, 2, 1]
    finished = run_batch(first.source, first.output, config, first.batches[0])
    # Batch 1 was killed after closing its shard but before writing its part.
    killed = run_batch(first.source, first.output, config, first.batches[1])
    assert killed.part_path is not None
    killed.part_path.unlink()
    # Batch 2 was killed while writing its shard.
    partial = output / "shards" / f"{first.batches[2].batch_id}-000000.tar.tmp"
    partial.write_bytes(b"half a tar")

    second = plan_ingest(source, output, config)
    assert partial.name in second.removed_shards
    assert {f"{first.batches[1].batch_id}-000000.tar"} <= set(second.removed_shards)
    assert second.n_already_recorded == 3  # batch 0's two files and the text file
    assert sorted(f.rel_path for b in second.batches for f in b.files) == ["clip2.dcm", "clip3.dcm", "clip4.dcm"]
    results = [run_batch(second.source, second.output, config, b) for b in second.batches]
    outcome = finalize_ingest(second, results)
    assert outcome.contract.success

    rows = _rows(output, source, keyed)
    assert sorted(r["name"] for r in rows) == ["clip0.dcm", "clip1.dcm", "clip2.dcm", "clip3.dcm", "clip4.dcm", "notes.txt"]
    assert len({r["clip_id"] for r in rows}) == len(rows)
    kept = {r["name"]: r["ingest_run_id"] for r in rows}
    assert kept["clip0.dcm"] == first.run_id and kept["clip2.dcm"] == second.run_id
    assert {r["source_id"] for r in finished.rows} == {keyed.source_id("clip0.dcm"), keyed.source_id("clip1.dcm")}
    shards = {p.name for p in (output / "shards").iterdir()}
    assert not any(name.endswith(".tmp") for name in shards)
    assert shards == {r["shard"] for r in rows if r["status"] == "accepted"}
    for row in rows:
        if row["status"] == "accepted":
            assert load_clip(output, row["clip_id"]).shape[:3] == (32, 224, 224)
    assert not any((output / ".parts").glob("*.parquet"))


def test_rerun_adds_nothing(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    ingest_serially(source, output, IngestConfig(batch_size=3))
    manifest = {p.name: p.read_bytes() for p in manifest_parts(output / "manifest.parquet")}
    assert len(manifest) == 1
    shards = sorted(p.name for p in (output / "shards").iterdir())
    again = ingest_serially(source, output, IngestConfig(batch_size=3))
    assert again.new_rows == []
    assert {p.name: p.read_bytes() for p in manifest_parts(output / "manifest.parquet")} == manifest
    assert sorted(p.name for p in (output / "shards").iterdir()) == shards


def test_identical_pixels_in_parallel_batches_are_settled_at_merge(tmp_path: Path, keyed) -> None:
    source = tmp_path / "archive"
    source.mkdir()
    write_dicom(source / "a.dcm", fan_cine(34, seed=1))
    write_dicom(source / "b.dcm", fan_cine(34, seed=1), patient_name="Other^Person")
    output = tmp_path / "out"
    plan = plan_ingest(source, output, IngestConfig(batch_size=1))
    # Both batches run "in parallel": neither sees the other's clip.
    results = [
        process_batch(list(b.files), plan.source, plan.output, plan.config, b.batch_id, run_id=plan.run_id)
        for b in plan.batches
    ]
    assert [r.n_clips for r in results] == [1, 1]
    finalize_ingest(plan, results)
    fate = {r["name"]: (r["status"], r["reason"], r["shard"]) for r in _rows(output, source, keyed)}
    # The first in keyed-id order wins (ids, not names, order the manifest).
    first, second = sorted(("a.dcm", "b.dcm"), key=keyed.source_id)
    assert fate[first][0] == "accepted"
    assert fate[second] == ("rejected", "duplicate", None)


def test_systemic_errors(tmp_path: Path, source: Path) -> None:
    with pytest.raises(SourceError):
        plan_ingest(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        plan_ingest(source, blocker / "out")


def test_plan_records_non_media_and_byte_copies_at_once(source: Path, tmp_path: Path, keyed) -> None:
    (source / "copy.dcm").write_bytes((source / "clip0.dcm").read_bytes())
    plan = plan_ingest(source, tmp_path / "out", IngestConfig())
    (part,) = (tmp_path / "out" / ".parts").glob("*plan.parquet")
    rows = {r["source_id"]: (r["status"], r["reason"]) for r in pq.read_table(part).to_pylist()}
    assert rows == {keyed.source_id("notes.txt"): ("rejected", "not_media"), keyed.source_id("copy.dcm"): ("rejected", "duplicate")}
    assert plan.n_to_process == 5


def test_without_a_secret_nothing_is_touched(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECHOFM_DEID_SECRET")
    with pytest.raises(MissingSecret, match="echofm keygen"):
        plan_ingest(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    key = write_secret_file(tmp_path / "out" / "secret.key")
    with pytest.raises(SecretInsideOutput):
        plan_ingest(source, tmp_path / "out", IngestConfig(secret_file=str(key)))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["secret.key"]


def test_a_secret_file_outside_output_keys_the_run_and_must_stay_the_same(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECHOFM_DEID_SECRET")
    key = write_secret_file(tmp_path / "keys" / "a.key")
    output = tmp_path / "out"
    ingest_serially(source, output, IngestConfig(secret_file=str(key)))
    rows = read_manifest(output / "manifest.parquet").to_pylist()
    assert len({row["key_id"] for row in rows}) == 1
    assert not any(p.suffix == ".key" or "secret" in p.name for p in output.rglob("*"))
    with pytest.raises(SecretMismatch):
        plan_ingest(source, output, IngestConfig(secret_file=str(write_secret_file(tmp_path / "keys" / "b.key"))))


def test_path_map_lies_outside_output_and_maps_every_name_back(source: Path, tmp_path: Path, keyed) -> None:
    latin1 = b"D\xd8E^J\xd8HN_12345678"  # a folder name that is not valid UTF-8
    (source / os.fsdecode(latin1)).mkdir()
    write_dicom(source / os.fsdecode(latin1) / "IMG0001.dcm", fan_cine(34, seed=30))
    output, path_map = tmp_path / "out", tmp_path / "private" / "paths.parquet"
    with pytest.raises(PathMapInsideOutput):
        plan_ingest(source, output, IngestConfig(path_map=str(output / "paths.parquet")))
    assert not output.exists()
    outcome = ingest_serially(source, output, IngestConfig(path_map=str(path_map)))
    assert stat.S_IMODE(path_map.stat().st_mode) == 0o600
    mapped = read_path_map(path_map)
    rows = read_manifest(outcome.manifest_path).to_pylist()
    assert {row["source_id"] for row in rows} == set(mapped)
    assert mapped[keyed.source_id(latin1 + b"/IMG0001.dcm")] == latin1 + b"/IMG0001.dcm"
    odd = [row for row in rows if row["source_id"] == keyed.source_id(latin1 + b"/IMG0001.dcm")]
    assert [row["status"] for row in odd] == ["accepted"]
    assert all(b"12345678" not in part.read_bytes() for part in (output / "manifest.parquet").rglob("*") if part.is_file())
