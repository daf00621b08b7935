"""Plan / resume / finalize without Prefect: idempotent re-runs, a killed run resumed, duplicates
across parallel batches."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from echofm.data.manifest import load_clip, manifest_parts, read_manifest
from echofm.ingest.batch import process_batch
from echofm.ingest.config import IngestConfig
from echofm.ingest.discover import SourceError
from echofm.ingest.run import OutputError, finalize_ingest, ingest_serially, plan_ingest, run_batch
from tests.factories.media import fan_cine, write_dicom


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    for index in range(5):
        write_dicom(root / f"clip{index}.dcm", fan_cine(34, seed=10 + index))
    (root / "notes.txt").write_text("not media")
    return root


def _rows(output: Path) -> list[dict]:
    return read_manifest(output / "manifest.parquet").to_pylist()


def test_killed_run_resumes_without_duplicates_or_partial_shards(source: Path, tmp_path: Path) -> None:
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

    rows = _rows(output)
    assert sorted(r["source_path"] for r in rows) == ["clip0.dcm", "clip1.dcm", "clip2.dcm", "clip3.dcm", "clip4.dcm", "notes.txt"]
    assert len({r["clip_id"] for r in rows}) == len(rows)
    kept = {r["source_path"]: r["ingest_run_id"] for r in rows}
    assert kept["clip0.dcm"] == first.run_id and kept["clip2.dcm"] == second.run_id
    assert {r["source_path"] for r in finished.rows} == {"clip0.dcm", "clip1.dcm"}
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


def test_identical_pixels_in_parallel_batches_are_settled_at_merge(tmp_path: Path) -> None:
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
    fate = {r["source_path"]: (r["status"], r["reason"], r["shard"]) for r in _rows(output)}
    assert fate["a.dcm"][0] == "accepted"
    assert fate["b.dcm"] == ("rejected", "duplicate", None)


def test_systemic_errors(tmp_path: Path, source: Path) -> None:
    with pytest.raises(SourceError):
        plan_ingest(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        plan_ingest(source, blocker / "out")


def test_plan_records_non_media_and_byte_copies_at_once(source: Path, tmp_path: Path) -> None:
    (source / "copy.dcm").write_bytes((source / "clip0.dcm").read_bytes())
    plan = plan_ingest(source, tmp_path / "out", IngestConfig())
    (part,) = (tmp_path / "out" / ".parts").glob("*plan.parquet")
    rows = {r["source_path"]: (r["status"], r["reason"]) for r in pq.read_table(part).to_pylist()}
    assert rows == {"notes.txt": ("rejected", "not_media"), "copy.dcm": ("rejected", "duplicate")}
    assert plan.n_to_process == 5
