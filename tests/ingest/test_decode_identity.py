"""The fast JPEG decode leaves ingestion's output of grey DICOM bit-identical to pydicom's decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydicom import dcmread

from echofm.bench.ingest import _cine, write_jpeg_dicom
from echofm.data.shards import iter_shard
from echofm.ingest.batch import process_batch
from echofm.ingest.config import IngestConfig
from echofm.ingest.discover import discover
from echofm.io import jpeg_frames, scan_dicom
from echofm.io.deid import Pseudonymizer, load_secret

# Columns that differ between two runs by design: the clock, and the content hash, which covers
# the decoded stack in its channel count (one grey channel now, three before).
_RUN_COLUMNS = {"ingested_at", "batch_id", "ingest_run_id", "content_hash"}


@pytest.fixture(scope="module")
def grey_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Grey echo as JPEG YBR_FULL_422 (how most scanners store it) and as JPEG MONOCHROME2."""
    root = tmp_path_factory.mktemp("grey-jpeg")
    write_jpeg_dicom(root / "ybr.dcm", _cine(40, (240, 320), seed=1), fps=50.0)
    mono = root / "mono.dcm"
    write_jpeg_dicom(mono, _cine(40, (240, 320), seed=2), fps=50.0)
    ds = dcmread(mono)
    # Re-encode the same frames with one component: a MONOCHROME2 JPEG Baseline file.
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    fragments = []
    for frame in _cine(40, (240, 320), seed=2):
        buffer = io.BytesIO()
        Image.fromarray(frame, "L").save(buffer, "JPEG", quality=90)
        fragments.append(buffer.getvalue())
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    del ds.PlanarConfiguration
    ds.PixelData = encapsulate(fragments)
    ds.save_as(mono, enforce_file_format=True)
    return root


def _ingest(source: Path, output: Path) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    files = discover(source, Pseudonymizer(load_secret()), workers=1)
    result = process_batch(files, source, output, IngestConfig(max_windows=2), "identity")
    assert result.n_clips >= 2, [(r["source_id"], r["reason"]) for r in result.rows]
    clips = {key: frames for shard in sorted((output / "shards").glob("*.tar")) for key, frames, _ in iter_shard(shard)}
    rows = {r["clip_id"]: r for r in pq.read_table(result.part_path).to_pylist()}
    return clips, rows


def test_grey_jpeg_dicom_ingests_bit_identically(grey_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(jpeg_frames.handles(scan_dicom(path)) for path in grey_archive.glob("*.dcm"))
    monkeypatch.setenv("ECHOFM_DEID_SECRET", "identity-test-secret-of-32-bytes")  # the same pseudonyms in both runs
    fast_clips, fast_rows = _ingest(grey_archive, tmp_path / "fast")
    monkeypatch.setattr(jpeg_frames, "FAST_SYNTAXES", frozenset())  # pydicom decodes everything
    slow_clips, slow_rows = _ingest(grey_archive, tmp_path / "pydicom")
    assert fast_clips.keys() == slow_clips.keys()
    for key, frames in fast_clips.items():
        assert frames.shape[-1] == 1
        assert np.array_equal(frames, slow_clips[key]), key
    assert fast_rows.keys() == slow_rows.keys()
    for clip_id, row in fast_rows.items():
        other = slow_rows[clip_id]
        assert {k: v for k, v in row.items() if k not in _RUN_COLUMNS} == {k: v for k, v in other.items() if k not in _RUN_COLUMNS}
