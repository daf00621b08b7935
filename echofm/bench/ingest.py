"""`echofm bench ingest`: end-to-end ingestion clips/s per core against the decode-only floor.

On one archive of typical clips (by default generated here: JPEG Baseline YBR_FULL_422 DICOM
cines and MP4 exports, >= 60 frames, 600 x 800) it measures, in this one process (one core):

- pipeline: discovery (sniff + SHA-256 of every byte) and `process_batch` (header, decode of the
  window frames, pseudonyms, sector mask, QC, resize, shard write), per clip;
- decode floor (kept frames): the readers decoding exactly the frames the pipeline keeps, nothing
  else. The pipeline cannot beat it, so `pipeline / floor` is the efficiency ratio (target >= 0.75);
- decode of all frames: what a reader that ignores the windows would pay (for reference);

Rates are clips per CPU-second of one thread (OpenCV limited to one thread), i.e. clips/s per
core, measured as process CPU time so that other jobs on a shared machine do not distort them.

and the peak resident memory of a fresh worker process ingesting one 300-frame 800 x 600 cine
(target < 1.5 GB). Repeats alternate pipeline and floor runs and report medians.

    echofm bench ingest --clips 8
    echofm bench ingest --archive /data/echo-sample --repeats 3
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

TYPICAL_SIZE = (600, 800)  # rows, columns
TYPICAL_FRAMES = 64
TYPICAL_FPS = 50.0
LONG_CINE_FRAMES = 300
RSS_TARGET_BYTES = int(1.5 * 1024**3)
RATIO_TARGET = 0.75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=8, help="clips to generate (half DICOM, half MP4)")
    parser.add_argument("--archive", type=Path, default=None, help="measure this archive instead of generating one")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats; medians are reported")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 300-frame peak-memory run")


def _cine(n_frames: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Grey echo-like frames `[T, H, W]`: a fan of moving speckle, a beating dark cavity, burned-in
    text outside the fan. Speckle keeps the JPEG/MPEG entropy (and decode cost) realistic."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    apex_y, apex_x = 0.06 * h, w / 2
    radius = np.hypot(yy - apex_y, xx - apex_x)
    angle = np.arctan2(xx - apex_x, yy - apex_y)
    fan = (radius < 0.9 * h) & (np.abs(angle) < 0.6)
    speckle = rng.gamma(2.0, 40.0, (h, w)).astype(np.float32)
    frames = np.zeros((n_frames, h, w), np.uint8)
    for t in range(n_frames):
        beat = 0.5 + 0.5 * np.sin(2 * np.pi * t / 40.0)
        cavity = np.hypot((yy - 0.45 * h) / (0.12 * h * (0.7 + 0.3 * beat)), (xx - apex_x) / (0.08 * w)) < 1
        image = np.roll(speckle, t, axis=0) * (1.0 - 0.5 * radius / h)
        image[cavity] *= 0.15
        frames[t] = np.clip(np.where(fan, image, 0), 0, 255).astype(np.uint8)
        cv2.putText(frames[t], f"BENCH PATIENT {seed:04d}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    return frames


def write_jpeg_dicom(path: Path, frames: np.ndarray, fps: float) -> None:
    """Frames `[T, H, W]` grey as a JPEG Baseline YBR_FULL_422 ultrasound multi-frame DICOM."""
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    fragments = []
    for frame in frames:
        buffer = io.BytesIO()
        # subsampling=1 is 4:2:2, what YBR_FULL_422 declares.
        Image.fromarray(np.repeat(frame[..., None], 3, axis=2), "RGB").save(buffer, "JPEG", quality=90, subsampling=1)
        fragments.append(buffer.getvalue())
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.PatientName, ds.PatientID = "Bench^Patient", f"BENCH{path.stem}"
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.FrameTime = 1000.0 / fps
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames.shape[2], frames.shape[1]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def generate_typical_archive(directory: Path, n_clips: int) -> Path:
    """`n_clips` typical clips under `directory`: alternately JPEG YBR DICOM and MP4."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(n_clips):
        frames = _cine(TYPICAL_FRAMES, TYPICAL_SIZE, seed=index)
        if index % 2 == 0:
            write_jpeg_dicom(directory / f"clip{index:03d}.dcm", frames, TYPICAL_FPS)
        else:
            write_mp4(directory / f"clip{index:03d}.mp4", frames, TYPICAL_FPS)
    return directory


def _kept_frames(item: object, config: object) -> np.ndarray | None:
    """The union of window frames the pipeline decodes for a file, None when it decodes none."""
    from echofm.ingest.header import read_header
    from echofm.preprocess.resample import plan_windows, union_indices

    header = read_header(item, None)  # type: ignore[arg-type]
    windows = plan_windows(
        header.n_frames,
        header.fps,
        num_frames=config.num_frames,  # type: ignore[attr-defined]
        window_ms=config.window_ms,  # type: ignore[attr-defined]
        heart_rate_bpm=header.heart_rate_bpm,
        max_windows=config.max_windows,  # type: ignore[attr-defined]
    )
    return union_indices(windows) if windows else None


def _decode_seconds(files: list, frames: dict[str, np.ndarray]) -> float:
    """Seconds the readers take to decode `frames[rel_path]` of each file (and nothing else)."""
    from echofm.ingest.header import decode_frames

    started = time.process_time()
    for item in files:
        if item.rel_path in frames:
            decode_frames(item, frames[item.rel_path])
    return time.process_time() - started


def _n_frames(item: object) -> int:
    from echofm.ingest.header import read_header

    return read_header(item, None).n_frames  # type: ignore[arg-type]


def _pipeline_seconds(source: Path, scratch: Path, repeat: int) -> tuple[float, float, int, dict[str, float]]:
    """(discovery CPU seconds, batch CPU seconds, clips accepted, wall seconds per stage) of one
    pass in this process."""
    from echofm.ingest.batch import process_batch
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.discover import discover

    output = scratch / f"out-{repeat}"
    started = time.process_time()
    files = discover(source, workers=1)
    discovered = time.process_time()
    result = process_batch(files, source, output, IngestConfig(), f"bench-r{repeat}")
    finished = time.process_time()
    shutil.rmtree(output, ignore_errors=True)
    return discovered - started, finished - discovered, result.n_clips, result.stage_seconds


def _peak_rss_bytes() -> int:
    """This process's peak resident set size. VmHWM, not `ru_maxrss`: the latter survives
    fork + exec, so a spawned worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_peak_rss(path: str, output: str) -> tuple[int, int]:
    """In a fresh process: (peak RSS after imports, peak RSS after ingesting one file), bytes."""
    import echofm.data.shards  # noqa: F401 - the imports a batch worker holds anyway
    from echofm.ingest.batch import process_batch
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.discover import discover

    baseline = _peak_rss_bytes()
    source = Path(path).parent
    files = [f for f in discover(source, workers=1) if f.path.name == Path(path).name]
    result = process_batch(files, source, output, IngestConfig(), "bench-rss")
    if result.n_clips != 1:
        raise RuntimeError(f"the long cine was not accepted: {[r['reason'] for r in result.rows]}")
    return baseline, _peak_rss_bytes()


def peak_rss_long_cine(scratch: Path) -> tuple[int, int]:
    """Peak RSS of a fresh worker ingesting a 300-frame 800 x 600 JPEG YBR cine."""
    directory = scratch / "long"
    directory.mkdir()
    write_jpeg_dicom(directory / "long.dcm", _cine(LONG_CINE_FRAMES, TYPICAL_SIZE, seed=300), TYPICAL_FPS)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_worker_peak_rss, str(directory / "long.dcm"), str(scratch / "long-out")).result()


def run(args: argparse.Namespace) -> int:
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.discover import discover

    import cv2

    # One thread everywhere, and CPU time rather than wall time: rates are per core, and stay
    # meaningful on a machine shared with other jobs.
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="echofm-bench-ingest-") as tmp:
        scratch = Path(tmp)
        if args.archive is not None:
            source = args.archive.resolve()
        else:
            started = time.perf_counter()
            source = generate_typical_archive(scratch / "archive", args.clips)
            sys.stdout.write(f"generated {args.clips} typical clips in {time.perf_counter() - started:.1f} s\n")
        files = [f for f in discover(source, workers=1) if f.is_media]
        config = IngestConfig()
        planned = {item.rel_path: _kept_frames(item, config) for item in files}
        kept = {path: indices for path, indices in planned.items() if indices is not None}
        every = {item.rel_path: np.arange(_n_frames(item), dtype=np.int64) for item in files if item.rel_path in kept}
        n_kept = sum(len(v) for v in kept.values())
        n_all = sum(len(v) for v in every.values())

        # Warm-up, not timed: imports (pydicom, OpenCV, pyarrow) and first-call costs,
        # paid once per worker process, not per clip.
        from echofm.ingest.batch import process_batch

        process_batch(files[:1], source, scratch / "warm-up", config, "bench-warm-up")
        _decode_seconds(files[:2], kept)

        pipeline, discovery, floor, full = [], [], [], []
        clips = 0
        for repeat in range(max(1, args.repeats)):
            found, batch, clips, stages = _pipeline_seconds(source, scratch, repeat)
            discovery.append(found)
            pipeline.append(found + batch)
            floor.append(_decode_seconds(files, kept))
            full.append(_decode_seconds(files, every))
        if clips == 0:
            sys.stderr.write("no clip was accepted; nothing to measure\n")
            return 1
        n_decoded = len(kept)
        rate = clips / statistics.median(pipeline)
        floor_rate = n_decoded / statistics.median(floor)
        full_rate = n_decoded / statistics.median(full)
        ratio = rate / floor_rate
        lines = [
            f"files: {len(files)} ({clips} clips accepted); frames decoded by the pipeline: {n_kept} of {n_all}",
            f"pipeline end to end (discover + hash + process_batch): {rate:.2f} clips/s per core "
            f"(median of {len(pipeline)}; discovery {statistics.median(discovery):.2f} s of {statistics.median(pipeline):.2f} s)",
            f"decode floor, kept frames only (the floor): {floor_rate:.2f} clips/s per core",
            f"decode of all frames (reference): {full_rate:.2f} clips/s per core",
            f"ratio pipeline / floor: {ratio:.2f} (target >= {RATIO_TARGET}) -> {'PASS' if ratio >= RATIO_TARGET else 'BELOW TARGET'}",
            f"ratio pipeline / all-frames decode: {rate / full_rate:.2f}",
            "share of process_batch wall time by stage (last pass): "
            + ", ".join(f"{name} {seconds / sum(stages.values()):.0%}" for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1])),
        ]
        if not args.skip_rss:
            baseline, peak = peak_rss_long_cine(scratch)
            lines.append(
                f"peak RSS of a worker ingesting a {LONG_CINE_FRAMES}-frame {TYPICAL_SIZE[1]}x{TYPICAL_SIZE[0]} cine: "
                f"{peak / 2**20:.0f} MiB (after imports {baseline / 2**20:.0f} MiB; target < {RSS_TARGET_BYTES / 2**30:.1f} GiB) "
                f"-> {'PASS' if peak < RSS_TARGET_BYTES else 'ABOVE TARGET'}"
            )
        sys.stdout.write("\n".join(lines) + "\n")
    return 0
