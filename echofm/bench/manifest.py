"""`echofm bench manifest`: finalize and the data contract on an archive-sized manifest.

Generates a manifest of `--rows` rows (default 300K: the scale of the 290K-clip archive; 90%
accepted, the rest rejected or failed with reasons, every column filled as ingestion fills it),
stored as one manifest part, and a nightly batch of `--append` new rows left as a batch part,
then measures, each in a fresh spawned process (so peak memory is that step's alone):

- finalize: `finalize_ingest` adding the nightly batch (one new manifest part) and validating
  the whole manifest with the Great Expectations suite;
- contract: the GX suite (`validate_manifest`) alone on the whole manifest;
- finalize without the contract, i.e. the merge itself;
- rewrite, for comparison: what merging cost before manifests had parts (every row read as a
  Python dict and the whole table written again).

Wall seconds and the process's peak resident memory (VmHWM) are reported per step.

    echofm bench manifest --rows 300000 --append 2000
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=300_000, help="rows already in the manifest")
    parser.add_argument("--append", type=int, default=2_000, help="rows of the nightly batch to append")


def _hex(rng: np.random.Generator, n: int, chars: int) -> np.ndarray:
    """`n` random lowercase hex strings of `chars` characters."""
    raw = rng.integers(0, 256, size=(n, chars // 2), dtype=np.uint8)
    return np.array([row.tobytes().hex() for row in raw])


def synthetic_manifest(n_rows: int, *, seed: int, run_id: str) -> Any:
    """A contract-valid manifest table of `n_rows` rows (pyarrow), built column-wise."""
    import pyarrow as pa

    from echofm.data.manifest import MANIFEST_SCHEMA

    rng = np.random.default_rng(seed)
    status = rng.choice(np.array(["accepted", "rejected", "failed"]), size=n_rows, p=[0.9, 0.08, 0.02])
    accepted = status == "accepted"
    failed = status == "failed"
    clip_id = _hex(rng, n_rows, 32)
    start = rng.uniform(0, 2000, n_rows)
    shard = np.array([f"{run_id}-b{i // 64:05d}-000000.tar" for i in range(n_rows)])
    reason = np.where(status == "rejected", rng.choice(np.array(["duplicate", "frozen", "too_short", "blank"]), n_rows),
                      np.where(failed, "corrupt_pixel_data", None))
    columns: dict[str, Any] = {
        "clip_id": clip_id,
        "source_id": np.array(["f" + h for h in _hex(rng, n_rows, 32)]),
        "source_hash": _hex(rng, n_rows, 64),
        "source_format": rng.choice(np.array(["dicom", "mp4", "avi"]), size=n_rows, p=[0.8, 0.15, 0.05]),
        "source_bytes": rng.integers(100_000, 50_000_000, n_rows),
        "status": status,
        "reason": reason,
        "error_class": np.where(failed, "CorruptPixelData", None),
        "error_message": np.where(failed, "decode: CorruptPixelData: Pixel data shorter than the header promises", None),
        "view": rng.choice(np.array(["A4C", "A2C", "PLAX", "PSAX", "unknown"]), n_rows),
        "view_source": np.full(n_rows, "header"),
        "view_confidence": rng.uniform(0.5, 1.0, n_rows),
        "window_index": np.where(accepted, 0, -1),
        "window_start_ms": np.where(accepted, start, np.nan),
        "window_end_ms": np.where(accepted, start + 1280.0, np.nan),
        "fps": rng.uniform(25, 90, n_rows),
        "fps_source": np.full(n_rows, "FrameTime"),
        "n_frames_source": rng.integers(32, 300, n_rows),
        "height_source": np.full(n_rows, 600),
        "width_source": np.full(n_rows, 800),
        "channels": np.where(accepted, rng.choice(np.array([1, 3]), n_rows, p=[0.8, 0.2]), 1),
        "mask_method": np.full(n_rows, "image"),
        "mask_confidence": rng.uniform(0.3, 1.0, n_rows),
        "qc_mean_intensity": rng.uniform(20, 120, n_rows),
        "qc_std_intensity": rng.uniform(10, 60, n_rows),
        "qc_motion_energy": rng.uniform(1, 20, n_rows),
        "qc_saturated_fraction": rng.uniform(0, 0.05, n_rows),
        "qc_sector_area_fraction": rng.uniform(0.2, 0.7, n_rows),
        "content_hash": np.where(accepted, _hex(rng, n_rows, 64), None),
        "patient_id": np.array([f"p{i // 40:019x}" for i in range(n_rows)]),
        "study_id": np.array([f"s{i // 20:019x}" for i in range(n_rows)]),
        "series_id": np.array([f"r{i // 10:019x}" for i in range(n_rows)]),
        "shard": np.where(accepted, shard, None),
        "key": np.where(accepted, clip_id, None),
        "batch_id": np.array([f"{run_id}-b{i // 64:05d}" for i in range(n_rows)]),
        "ingest_run_id": np.full(n_rows, run_id),
        "key_id": np.full(n_rows, "0123456789ab"),
        "ingested_at": np.full(n_rows, datetime(2026, 11, 1, tzinfo=timezone.utc)),
    }
    arrays = []
    for field in MANIFEST_SCHEMA:
        values = columns[field.name]
        mask = None
        if values.dtype == object:
            mask = np.array([v is None for v in values])
        elif values.dtype.kind == "f":
            mask = np.isnan(values)
        arrays.append(pa.array(values, type=field.type, mask=mask, from_pandas=False))
    return pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _step(name: str, output: str) -> tuple[float, int, int]:
    """In a fresh process: (wall seconds, peak RSS before, peak RSS after) of one step."""
    import echofm.ingest.contract  # noqa: F401 - imports are not what is measured
    import great_expectations  # noqa: F401
    import pyarrow.parquet as pq

    from echofm.data.manifest import MANIFEST_FILENAME, read_manifest, write_manifest
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.contract import validate_manifest
    from echofm.ingest.run import QC_DIRNAME, IngestPlan, finalize_ingest, merge_batch_parts

    out = Path(output)
    manifest = out / MANIFEST_FILENAME
    plan = IngestPlan(source=out, output=out, run_id="nightly", config=IngestConfig(), batches=(),
                      n_discovered=0, n_already_recorded=0, removed_shards=())
    before = _peak_rss_bytes()
    started = time.perf_counter()
    if name == "finalize":
        finalize_ingest(plan)
    elif name == "contract":
        validate_manifest(manifest, out / QC_DIRNAME)
    elif name == "merge":
        merge_batch_parts(out, "nightly")
    elif name == "rewrite":
        rows = read_manifest(manifest).to_pylist()
        rows += [r for part in sorted((out / ".parts").glob("*.parquet")) for r in pq.read_table(part).to_pylist()]
        write_manifest(rows, out / "rewritten.parquet")
    return time.perf_counter() - started, before, _peak_rss_bytes()


def run(args: argparse.Namespace) -> int:
    from echofm.data.manifest import MANIFEST_FILENAME, append_manifest_part
    from echofm.ingest.records import write_part

    steps = ("rewrite", "merge", "contract", "finalize")
    lines = [f"manifest of {args.rows} rows, nightly batch of {args.append} rows"]
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="echofm-bench-manifest-") as tmp:
        started = time.perf_counter()
        base = Path(tmp) / "base"
        append_manifest_part(synthetic_manifest(args.rows, seed=0, run_id="archive"), base / MANIFEST_FILENAME, "archive")
        write_part(base, "nightly-b00000", synthetic_manifest(args.append, seed=1, run_id="nightly").to_pylist())
        lines.append(f"generated in {time.perf_counter() - started:.1f} s")
        for name in steps:
            # Each step on its own copy: finalize consumes the batch part it merges.
            output = Path(tmp) / name
            shutil.copytree(base, output)
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                seconds, before, after = pool.submit(_step, name, str(output)).result()
            lines.append(f"{name:9s} {seconds:7.2f} s   peak RSS {after / 2**20:6.0f} MiB ({(after - before) / 2**20:+.0f} MiB over the imports)")
            shutil.rmtree(output)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
