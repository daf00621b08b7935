"""`echofm bench discovery`: plan time on an archive of many small files, cold and with the cache.

Generates under a temporary folder a tree of `--files` files (default 300K) in folders of 500:
mostly small non-media files (64-2048 random bytes: the reports, thumbnails and exports that sit
beside the cines of a real archive), `--media` of them small real DICOM files (a valid header and
8 x 8 frames) and half as many small MP4 files. Then, each in a fresh spawned process (so the
peak memory is that run's alone), per repeat:

- first: `plan_ingest` into an empty OUTPUT (every file sniffed and hashed; the plan part of
  the non-media rows and the discovery cache written);
- second: `plan_ingest` again into the same OUTPUT (the archive unchanged: the cache hit for
  every cached file, the recorded rows read back);
- rehash: the same with `rehash=True` (every file read again with the same recorded rows: the
  second run without the cache).

No batch runs, so media files are listed for batches but not decoded. The tree is freshly
written, so its metadata and bytes are in the page cache: the first run's figure is a lower
bound (on a cold disk every small file costs a seek), the second run reads no file at all.
Wall seconds and the process's CPU seconds (all its threads: steadier than wall time on a shared
machine) are medians over `--repeats`; the tree is deleted at the end.

    echofm bench discovery --files 300000 --repeats 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

FILES_PER_FOLDER = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=300_000, help="files in the generated tree")
    parser.add_argument("--media", type=float, default=0.01, help="fraction of them small DICOM files (half as many MP4)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the three runs; medians are reported")
    parser.add_argument("--workers", type=int, default=4, help="hashing threads of discovery (plan_ingest's default)")


def _dicom_template() -> tuple[bytes, bytes]:
    """A small valid US DICOM (8 frames of 8 x 8) and its SOP instance UID, to vary per copy."""
    import io

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    uid = "1.2.826.0.1.3680043.10.999.1" + "0" * 19
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 8, 8, 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 20.0
    ds.PixelData = bytes(range(256)) * 2
    ds.preamble = b"\x00" * 128
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue(), uid.encode()


def _mp4_template(scratch: Path) -> bytes | None:
    """A small MP4 (8 frames of 64 x 64), or None when OpenCV cannot write one here."""
    import cv2

    path = scratch / "template.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 64), False)
    rng = np.random.default_rng(0)
    for _ in range(8):
        writer.write(rng.integers(0, 255, (64, 64), dtype=np.uint8))
    writer.release()
    data = path.read_bytes() if path.exists() else b""
    path.unlink(missing_ok=True)
    return data or None


def generate_tree(root: Path, n_files: int, media_fraction: float, *, seed: int = 0) -> dict[str, int]:
    """Write the tree; returns the count of files of each kind."""
    rng = np.random.default_rng(seed)
    dicom, uid = _dicom_template()
    mp4 = _mp4_template(root.parent)
    every_dicom = max(1, round(1 / media_fraction)) if media_fraction > 0 else 0
    counts = {"other": 0, "dicom": 0, "mp4": 0}
    noise = rng.integers(0, 256, size=4 << 20, dtype=np.uint8).tobytes()
    for index in range(n_files):
        folder = root / f"site{index // 100_000}" / f"study{index // FILES_PER_FOLDER:05d}"
        if index % FILES_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        if every_dicom and index % every_dicom == 0:
            # Distinct copies: the UID's last 19 digits carry the index.
            (folder / f"IM{index:07d}").write_bytes(dicom.replace(uid, uid[:-19] + b"%019d" % index))
            counts["dicom"] += 1
        elif mp4 is not None and every_dicom and index % (2 * every_dicom) == every_dicom // 2:
            (folder / f"clip{index:07d}.mp4").write_bytes(mp4 + index.to_bytes(8, "little"))
            counts["mp4"] += 1
        else:
            size = int(rng.integers(64, 2048))
            start = int(rng.integers(0, len(noise) - size))
            (folder / f"file{index:07d}.txt").write_bytes(index.to_bytes(8, "little") + noise[start : start + size])
            counts["other"] += 1
    return counts


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _plan(source: str, output: str, secret: str, rehash: bool, workers: int) -> dict[str, float]:
    """In a fresh process: one `plan_ingest`, its wall seconds, peak RSS and cache counts."""
    import logging

    import echofm.data.manifest  # noqa: F401 - imports are not what is measured
    import pydicom  # noqa: F401
    from echofm.ingest import run
    from echofm.ingest.config import IngestConfig

    logging.getLogger("echofm").setLevel(logging.WARNING)
    started, cpu_started = time.perf_counter(), time.process_time()
    plan = run.plan_ingest(source, output, IngestConfig(secret_file=secret, rehash=rehash), hash_workers=workers)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"seconds": seconds, "cpu": cpu, "rss": _peak_rss_bytes(), "discovered": plan.n_discovered,
            "recorded": plan.n_already_recorded, "misses": plan.n_read,
            "hits": plan.n_discovered - plan.n_read}


def run(args: argparse.Namespace) -> int:
    from echofm.io.deid import write_secret_file

    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict[str, float]]] = {"first": [], "second": [], "rehash": []}
    lines = []
    with tempfile.TemporaryDirectory(prefix="echofm-bench-discovery-") as tmp:
        source, output = Path(tmp) / "archive", Path(tmp) / "out"
        source.mkdir()
        secret = str(write_secret_file(Path(tmp) / "keys" / "bench.secret"))
        started = time.perf_counter()
        counts = generate_tree(source, args.files, args.media)
        total_bytes = sum(entry.stat().st_size for folder, _, names in os.walk(source)
                          for entry in os.scandir(folder) if entry.is_file())
        lines.append(f"tree of {args.files} files ({counts}), {total_bytes / 2**20:.0f} MiB, "
                     f"generated in {time.perf_counter() - started:.0f} s")
        for _repeat in range(args.repeats):
            shutil.rmtree(output, ignore_errors=True)
            for name, rehash in (("first", False), ("second", False), ("rehash", True)):
                with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    result = pool.submit(_plan, str(source), str(output), secret, rehash, args.workers).result()
                runs[name].append(result)
                sys.stderr.write(f"{name}: {result['seconds']:.1f} s, CPU {result['cpu']:.1f} s ({result['hits']:.0f} hits)\n")
        cache_bytes = (output / ".discovery-cache.parquet").stat().st_size
    medians = {name: statistics.median(r["seconds"] for r in results) for name, results in runs.items()}
    cpu = {name: statistics.median(r["cpu"] for r in results) for name, results in runs.items()}
    for name, results in runs.items():
        last = results[-1]
        per_file_us = cpu[name] / max(1, last["discovered"]) * 1e6
        lines.append(
            f"{name:6s} plan {medians[name]:7.2f} s wall median of {len(results)} "
            f"({', '.join(format(r['seconds'], '.1f') for r in results)}), CPU {cpu[name]:6.1f} s "
            f"({per_file_us:5.1f} us/file), "
            f"peak RSS {max(r['rss'] for r in results) / 2**20:5.0f} MiB, "
            f"cache hits {last.get('hits', 0):.0f} / read {last.get('misses', 0):.0f}, recorded {last['recorded']:.0f}"
        )
    lines.append(f"wall: first / second = {medians['first'] / medians['second']:.1f}x, "
                 f"rehash / second = {medians['rehash'] / medians['second']:.1f}x; "
                 f"CPU: first / second = {cpu['first'] / cpu['second']:.1f}x, "
                 f"rehash / second = {cpu['rehash'] / cpu['second']:.1f}x; "
                 f"cache file {cache_bytes / 2**20:.1f} MiB")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
