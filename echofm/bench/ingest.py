"""`echofm bench ingest`: end-to-end ingestion CPU per clip against the best decoders' floor.

On one archive of typical clips (by default generated here: JPEG Baseline YBR_FULL_422 DICOM
cines and MP4 exports, 64 frames at 50 fps, 600 x 800) it measures, in this one process (one
core), alternating in every repeat:

- pipeline: discovery (sniff + SHA-256 of every byte) and `process_batch` (header, decode of the
  window frames, pseudonyms, sector mask, QC, resize, shard write), CPU per clip;
- floor (`echofm.bench.ingest_floor`): libjpeg-turbo decoding exactly the frames the pipeline
  keeps, straight to grey or RGB, through the fastest installed front end (OpenCV, Pillow,
  simplejpeg), and for video the fastest installed reader (OpenCV, PyAV) decoding up to the
  last kept frame. `floor / pipeline` is the efficiency ratio (target >= 0.45);
- project readers: `decode_frames` on the same kept frames (the project's own decode, the
  "floor" this benchmark used before), and on all frames, for reference;
- with `--fast-decode`: the pipeline again with DCT-domain downscaled JPEG decoding, and the
  error it adds next to the JPEG compression's own error, both at the output size (the same
  cines ingested from uncompressed DICOM are the reference).

Rates are clips per CPU-second of one thread (OpenCV limited to one thread), i.e. clips/s per
core; process CPU time keeps them meaningful on a machine shared with other jobs. It also
reports the CPU per clip of each pipeline stage, the SHA-256 rate of discovery, and the peak
resident memory of a fresh worker process ingesting one 300-frame 800 x 600 cine (target
< 1.5 GB). Figures are medians over the repeats.

    echofm bench ingest --clips 8 --repeats 5
    echofm bench ingest --clips 8 --repeats 5 --fast-decode
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TYPICAL_SIZE = (600, 800)  # rows, columns
TYPICAL_FRAMES = 64
TYPICAL_FPS = 50.0
LONG_CINE_FRAMES = 300
RSS_TARGET_BYTES = int(1.5 * 1024**3)
RATIO_TARGET = 0.45


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=8, help="clips to generate (half DICOM, half MP4)")
    parser.add_argument("--archive", type=Path, default=None, help="measure this archive instead of generating one")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats; medians are reported")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 300-frame peak-memory run")
    parser.add_argument(
        "--fast-decode", action="store_true", help="also measure DCT-domain downscaled JPEG decoding and the error it adds"
    )


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


def _us_dataset(path: Path, frames: np.ndarray, fps: float) -> object:
    """An ultrasound multi-frame dataset for frames `[T, H, W]` without its pixel data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.PatientName, ds.PatientID = "Bench^Patient", f"BENCH{path.stem}"
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.NumberOfFrames = frames.shape[0]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.FrameTime = 1000.0 / fps
    ds.preamble = b"\x00" * 128
    return ds


def write_jpeg_dicom(path: Path, frames: np.ndarray, fps: float) -> None:
    """Frames `[T, H, W]` grey as a JPEG Baseline YBR_FULL_422 ultrasound multi-frame DICOM."""
    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    fragments = []
    for frame in frames:
        buffer = io.BytesIO()
        # subsampling=1 is 4:2:2, what YBR_FULL_422 declares.
        Image.fromarray(np.repeat(frame[..., None], 3, axis=2), "RGB").save(buffer, "JPEG", quality=90, subsampling=1)
        fragments.append(buffer.getvalue())
    ds = _us_dataset(path, frames, fps)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def write_native_dicom(path: Path, frames: np.ndarray, fps: float) -> None:
    """Frames `[T, H, W]` grey as an uncompressed MONOCHROME2 ultrasound multi-frame DICOM."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _us_dataset(path, frames, fps)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def generate_typical_archive(directory: Path, n_clips: int) -> Path:
    """`n_clips` typical clips under `directory`: alternately JPEG YBR DICOM and MP4."""
    from echofm.synth.containers import write_video

    directory.mkdir(parents=True, exist_ok=True)
    for index in range(n_clips):
        frames = _cine(TYPICAL_FRAMES, TYPICAL_SIZE, seed=index)
        if index % 2 == 0:
            write_jpeg_dicom(directory / f"clip{index:03d}.dcm", frames, TYPICAL_FPS)
        else:
            write_video(directory / f"clip{index:03d}.mp4", frames, TYPICAL_FPS, "mp4")
    return directory


def write_native_references(directory: Path, n_clips: int) -> Path:
    """The DICOM cines of `generate_typical_archive` stored uncompressed (the same pixels before
    JPEG): ingested, they are the reference for `--fast-decode`'s error."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(0, n_clips, 2):
        write_native_dicom(directory / f"clip{index:03d}.dcm", _cine(TYPICAL_FRAMES, TYPICAL_SIZE, seed=index), TYPICAL_FPS)
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
    """CPU seconds the project's readers take to decode `frames[rel_path]` of each file."""
    from echofm.ingest.header import decode_frames

    started = time.process_time()
    for item in files:
        if item.rel_path in frames:
            decode_frames(item, frames[item.rel_path])
    return time.process_time() - started


def _n_frames(item: object) -> int:
    from echofm.ingest.header import read_header

    return read_header(item, None).n_frames  # type: ignore[arg-type]


@dataclass
class PipelinePass:
    """One measured pass: CPU seconds of discovery and of `process_batch`, clips accepted, CPU
    seconds per stage (wall seconds where the measured version has no CPU timer)."""

    discovery: float
    batch: float
    clips: int
    stages: dict[str, float]
    output: Path

    @property
    def total(self) -> float:
        return self.discovery + self.batch


def _pseudonymizer(secret_file: str | None) -> object:
    """The pseudonymizer of the bench's own throw-away secret (ingestion needs one)."""
    from echofm.io.deid import Pseudonymizer, load_secret

    return Pseudonymizer(load_secret(secret_file=secret_file))


def _pipeline_pass(source: Path, output: Path, config: object) -> PipelinePass:
    from echofm.ingest.batch import process_batch
    from echofm.ingest.discover import discover

    shutil.rmtree(output, ignore_errors=True)
    started = time.process_time()
    files = discover(source, _pseudonymizer(config.secret_file), workers=1)  # type: ignore[attr-defined]
    discovered = time.process_time()
    result = process_batch(files, source, output, config, output.name)  # type: ignore[arg-type]
    finished = time.process_time()
    stages = getattr(result, "stage_cpu_seconds", None) or result.stage_seconds
    return PipelinePass(discovered - started, finished - discovered, result.n_clips, stages, output)


def _clips_by_source(output: Path) -> dict[str, np.ndarray]:
    """Accepted clips of a pass by source id (first window): the same relative path under the
    bench's one secret, so passes over different folders of the same names line up."""
    import pyarrow.parquet as pq

    from echofm.data.shards import read_shard_sample

    rows = [r for part in (output / ".parts").glob("*.parquet") for r in pq.read_table(part).to_pylist()]
    return {
        row["source_id"]: read_shard_sample(output / "shards" / row["shard"], row["key"])[0]
        for row in rows
        if row["status"] == "accepted" and row["window_index"] == 0
    }


def _mean_abs_difference(clips: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Mean |difference| in grey levels over the clips both hold, at the output size."""
    names = sorted(set(clips) & set(reference))
    if not names:
        return float("nan")
    return float(np.mean([np.abs(clips[n].astype(np.int16) - reference[n]).mean() for n in names]))


def _sha256_mb_per_s(files: list) -> float:
    """Discovery's SHA-256 rate over the archive's bytes, MB per CPU-second."""
    from echofm.data.digest import file_sha256

    started = time.process_time()
    for item in files:
        file_sha256(item.path)
    return sum(item.size_bytes for item in files) / 1e6 / max(time.process_time() - started, 1e-9)


def _peak_rss_bytes() -> int:
    """This process's peak resident set size. VmHWM, not `ru_maxrss`: the latter survives
    fork + exec, so a spawned worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_peak_rss(path: str, output: str, secret_file: str) -> tuple[int, int]:
    """In a fresh process: (peak RSS after imports, peak RSS after ingesting one file), bytes."""
    import echofm.data.shards  # noqa: F401 - the imports a batch worker holds anyway
    from echofm.ingest.batch import process_batch
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.discover import discover

    baseline = _peak_rss_bytes()
    source = Path(path).parent
    config = IngestConfig(secret_file=secret_file)
    files = [f for f in discover(source, _pseudonymizer(secret_file), workers=1) if f.path.name == Path(path).name]
    result = process_batch(files, source, output, config, "bench-rss")
    if result.n_clips != 1:
        raise RuntimeError(f"the long cine was not accepted: {[r['reason'] for r in result.rows]}")
    return baseline, _peak_rss_bytes()


def peak_rss_long_cine(scratch: Path, secret_file: str) -> tuple[int, int]:
    """Peak RSS of a fresh worker ingesting a 300-frame 800 x 600 JPEG YBR cine."""
    directory = scratch / "long"
    directory.mkdir()
    write_jpeg_dicom(directory / "long.dcm", _cine(LONG_CINE_FRAMES, TYPICAL_SIZE, seed=300), TYPICAL_FPS)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_worker_peak_rss, str(directory / "long.dcm"), str(scratch / "long-out"), secret_file).result()


def _ms(seconds: float, clips: int) -> str:
    return f"{1000 * seconds / clips:.1f} ms"


def run(args: argparse.Namespace) -> int:
    from echofm.bench.ingest_floor import DecodeFloor
    from echofm.ingest.batch import process_batch
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.discover import discover
    from echofm.ingest.header import decode_frames
    from echofm.io.deid import write_secret_file

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
        # A throw-away secret beside the scratch outputs (never inside one of them).
        secret_file = str(write_secret_file(scratch / "bench.secret"))
        files = [f for f in discover(source, _pseudonymizer(secret_file), workers=1) if f.is_media]
        config = IngestConfig(secret_file=secret_file)
        planned = {item.rel_path: _kept_frames(item, config) for item in files}
        kept = {path: indices for path, indices in planned.items() if indices is not None}
        every = {item.rel_path: np.arange(_n_frames(item), dtype=np.int64) for item in files if item.rel_path in kept}
        floor = DecodeFloor(files, kept, decode_frames)
        variants = {"pipeline": config}
        if args.fast_decode:
            variants["fast-decode"] = IngestConfig(fast_decode=True, secret_file=secret_file)  # type: ignore[call-arg]

        # Warm-up, not timed: imports (pydicom, OpenCV, pyarrow) and first-call costs,
        # paid once per worker process, not per clip.
        process_batch(files[:2], source, scratch / "warm-up", config, "bench-warm-up")
        _decode_seconds(files[:2], kept)
        floor.measure()

        passes: dict[str, list[PipelinePass]] = {name: [] for name in variants}
        floors, project, full = [], [], []
        for repeat in range(max(1, args.repeats)):
            for name, variant in variants.items():
                passes[name].append(_pipeline_pass(source, scratch / f"{name}-{repeat % 2}", variant))
            floors.append(floor.measure())
            project.append(_decode_seconds(files, kept))
            full.append(_decode_seconds(files, every))
        clips = passes["pipeline"][-1].clips
        if clips == 0:
            sys.stderr.write("no clip was accepted; nothing to measure\n")
            return 1
        lines = _report(passes, floors, project, full, clips, len(kept), floor)
        lines.append(f"discovery SHA-256: {_sha256_mb_per_s(files):.0f} MB per CPU-second")
        if args.fast_decode and args.archive is None:
            lines.extend(_fast_decode_error(passes, scratch, args.clips, config))
        if not args.skip_rss:
            baseline, peak = peak_rss_long_cine(scratch, secret_file)
            lines.append(
                f"peak RSS of a worker ingesting a {LONG_CINE_FRAMES}-frame {TYPICAL_SIZE[1]}x{TYPICAL_SIZE[0]} cine: "
                f"{peak / 2**20:.0f} MiB (after imports {baseline / 2**20:.0f} MiB; target < {RSS_TARGET_BYTES / 2**30:.1f} GiB) "
                f"-> {'PASS' if peak < RSS_TARGET_BYTES else 'ABOVE TARGET'}"
            )
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _report(
    passes: dict[str, list[PipelinePass]],
    floors: list,
    project: list[float],
    full: list[float],
    clips: int,
    n_decoded: int,
    floor: object,
) -> list[str]:
    """The report lines: CPU per clip, clips/s per core and ratios, medians over the repeats."""
    median = statistics.median
    pipeline = median(p.total for p in passes["pipeline"])
    best = median(f.best() for f in floors)
    jpeg = {name: median(f.jpeg[name] for f in floors) for name in floors[0].jpeg}
    video = {name: median(f.video[name] for f in floors) for name in floors[0].video}
    n_jpeg = getattr(floor, "n_jpeg_frames", 0)
    ratio = best / pipeline
    lines = [
        f"files: {n_decoded} decoded, {clips} clips accepted",
        f"pipeline end to end (discover + hash + process_batch): {_ms(pipeline, clips)} CPU per clip, "
        f"{clips / pipeline:.2f} clips/s per core (median of {len(passes['pipeline'])}; discovery "
        f"{_ms(median(p.discovery for p in passes['pipeline']), clips)} per clip)",
        f"floor, best decoders on the kept frames: {_ms(best, n_decoded)} CPU per clip, {n_decoded / best:.2f} clips/s per core",
        "  JPEG frames: " + ", ".join(f"{name} {1000 * t / max(n_jpeg, 1):.2f} ms/frame" for name, t in jpeg.items()),
        "  video up to the last kept frame: " + ", ".join(f"{name} {_ms(t, max(getattr(floor, 'n_video_files', 0), 1))}/clip" for name, t in video.items()),
        f"ratio floor / pipeline: {ratio:.2f} (target >= {RATIO_TARGET}) -> {'PASS' if ratio >= RATIO_TARGET else 'BELOW TARGET'}",
        f"project readers on the kept frames: {_ms(median(project), n_decoded)} CPU per clip "
        f"(ratio project readers / pipeline {median(project) / pipeline:.2f}); on all frames {_ms(median(full), n_decoded)}",
    ]
    # Per stage the median over the passes (one busy moment on a shared machine moves one pass).
    names = {name for p in passes["pipeline"] for name in p.stages}
    stages = {name: median(p.stages.get(name, 0.0) for p in passes["pipeline"]) for name in names}
    lines.append(
        f"CPU per clip by stage (median of {len(passes['pipeline'])}): "
        + ", ".join(f"{name} {_ms(seconds, clips)}" for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]))
    )
    if "fast-decode" in passes:
        fast = median(p.total for p in passes["fast-decode"])
        lines.append(
            f"--fast-decode: {_ms(fast, clips)} CPU per clip, {clips / fast:.2f} clips/s per core "
            f"({pipeline / fast:.2f}x the default), ratio floor / pipeline {best / fast:.2f}"
        )
    return lines


def _fast_decode_error(passes: dict[str, list[PipelinePass]], scratch: Path, n_clips: int, config: object) -> list[str]:
    """Mean |error| at the output size of the default and the fast decode of the JPEG cines,
    against the same cines ingested from uncompressed DICOM."""
    reference_pass = _pipeline_pass(write_native_references(scratch / "native", n_clips), scratch / "native-out", config)
    reference = _clips_by_source(reference_pass.output)
    default = _clips_by_source(passes["pipeline"][-1].output)
    fast = _clips_by_source(passes["fast-decode"][-1].output)
    return [
        f"error at the output size vs the uncompressed source (grey levels, mean |diff|): JPEG q90 decoded in full "
        f"{_mean_abs_difference(default, reference):.3f}, with --fast-decode {_mean_abs_difference(fast, reference):.3f}; "
        f"--fast-decode vs the full decode {_mean_abs_difference(fast, default):.3f}"
    ]
