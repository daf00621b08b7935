"""One batch of files -> clips in shards and manifest rows; the unit of work of one Prefect task.

Per file: header (with pseudonyms) -> header QC -> view (from the header, before any decoding)
-> time windows -> decode only the frames those windows use -> resize/pad each decoded frame once
-> exact-duplicate check -> sector mask (full resolution) -> pixel QC -> static overlays inside
the sector (full resolution) -> mask and inpaint at the output size -> windows -> shard. Every file ends as at least one row: accepted (one per window),
rejected (a named reason) or failed (error class and a message written by this project, never
text taken from the file, which may carry patient details). Files are named by their keyed
source id, in rows and in log lines alike.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from echofm.ingest.config import IngestConfig
from echofm.ingest.discover import DiscoveredFile
from echofm.ingest.header import FileHeader, decode_frames, read_header
from echofm.ingest.qc import header_qc, pixel_qc, pixel_sha256
from echofm.ingest.records import failed_row, file_row, write_part
from echofm.ingest.views import ViewClassifier, load_view_classifier, view_rejection
from echofm.io.errors import EchoIOError, NotUltrasound, TooFewFrames
from echofm.errors import IngestError
from echofm.io.grey import GREY_TOLERANCE, channel_mean, channel_spread

if TYPE_CHECKING:
    from echofm.io.deid import Pseudonymizer

logger = logging.getLogger(__name__)

# Reader errors that describe the file's content, not a fault in it: the file is fine but is not
# what the run ingests, so it is rejected (a reason) rather than failed (an error).
_REJECTING_ERRORS: tuple[type[EchoIOError], ...] = (NotUltrasound, TooFewFrames)


class ShardWriteError(IngestError, OSError):
    """Writing a shard under OUTPUT failed (disk full, permissions): a systemic failure."""


def frames_to_decode(window_frames: np.ndarray, n_frames_source: int, min_sector_frames: int) -> np.ndarray:
    """Source frames to decode, sorted and unique: the windows' frames, plus frames spread evenly
    over the cine when the windows hold fewer than `min_sector_frames` distinct frames.

    The sector mask is found from what changes over time; a short window of a low-frame-rate
    cine (one beat at 115 bpm and 25 fps is 13 frames) is too little evidence to tell the fan
    from a moving ECG trace beside it. Typical cines (32 distinct frames per window) decode
    nothing extra.
    """
    if len(window_frames) >= min_sector_frames or len(window_frames) >= n_frames_source:
        return window_frames
    count = min(min_sector_frames, n_frames_source)
    spread = np.floor(np.linspace(0, n_frames_source - 1, count) + 0.5).astype(np.int64)
    return np.union1d(window_frames, spread)


def grey_if_balanced(frames: np.ndarray) -> np.ndarray:
    """Colour frames `[T, H, W, 3]` whose channels agree within `GREY_TOLERANCE` as one channel
    `[T, H, W, 1]` (their rounded mean): grey echo stored as YBR JPEG (most archives) stays grey."""
    if frames.shape[-1] != 3 or channel_spread(frames) > GREY_TOLERANCE:
        return frames
    return channel_mean(frames)


class StageTimer:
    """Seconds spent per stage, summed over a batch, as wall time (`seconds`) and as this thread's
    CPU time (`cpu_seconds`, what a stage costs on a shared machine); `current` names the stage
    running now, which is what a failed row reports as where the file failed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.current: str | None = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current = name
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.thread_time() - cpu_started
        self.current = None


@dataclass
class BatchResult:
    """What a batch task returns (small: rows, counts, timings, never arrays).

    rows: manifest rows (dicts, manifest schema columns); part_path: the Parquet part the rows were
    also written to; seconds: wall time; stage_seconds / stage_cpu_seconds: wall / CPU time per
    stage, summed over files.
    """

    batch_id: str
    rows: list[dict[str, Any]]
    n_files: int
    n_clips: int
    seconds: float
    part_path: Path | None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _BatchContext:
    """What processing one file needs besides the file itself."""

    config: IngestConfig
    classifier: ViewClassifier
    pseudonymizer: Pseudonymizer
    batch_id: str
    run_id: str
    shards: _LazyShardWriter
    seen_pixels: set[str]
    timer: StageTimer

    @property
    def ids(self) -> dict[str, str]:
        """The run's ids every row carries."""
        return {"batch_id": self.batch_id, "run_id": self.run_id, "key_id": self.pseudonymizer.key_id}


class _LazyShardWriter:
    """Opens the batch's ShardWriter at the first accepted clip, so an all-rejected batch leaves
    no empty tar behind."""

    def __init__(self, out_dir: Path, prefix: str, config: IngestConfig, stack: contextlib.ExitStack) -> None:
        self._out_dir = out_dir
        self._prefix = prefix
        self._config = config
        self._stack = stack
        self._writer: Any = None

    def write(self, clip_id: str, frames: np.ndarray, meta: dict[str, Any]) -> tuple[str, str]:
        from echofm.data.shards import ShardWriter

        if self._writer is None:
            kwargs: dict[str, Any] = {"prefix": self._prefix, "max_count": self._config.shard_max_clips}
            if self._config.codec is not None:
                kwargs["codec"] = self._config.codec
            self._writer = self._stack.enter_context(ShardWriter(self._out_dir, **kwargs))
        try:
            shard, key = self._writer.write(clip_id, frames, meta)
        except OSError as exc:
            raise ShardWriteError(f"cannot write a shard under OUTPUT ({type(exc).__name__})") from None
        return str(shard), str(key)


def process_batch(
    files: list[DiscoveredFile],
    source_root: str | Path,
    output_dir: str | Path,
    config: IngestConfig,
    batch_id: str,
    *,
    run_id: str | None = None,
    known_pixel_hashes: frozenset[str] = frozenset(),
) -> BatchResult:
    """Ingest `files` (discovered under `source_root`) into `output_dir`.

    Shards go to `output_dir/shards/<batch_id>-<n>.tar`; rows to `output_dir/.parts/<batch_id>.parquet`
    (written last and atomically: a part on disk means the batch finished). `known_pixel_hashes`
    are (keyed) content hashes accepted by earlier runs or batches, rejected here as `duplicate`.
    `run_id` is recorded on every row (default: the batch id). The secret comes from
    `config.secret_file` or the environment (`echofm.io.deid.load_secret`).
    Raises `ShardWriteError` (systemic) and the `DeidError`s of `load_secret` only; a file's own
    problems become rows.
    """
    from echofm.io.deid import Pseudonymizer, load_secret

    started = time.perf_counter()
    output = Path(output_dir)
    timer = StageTimer()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        context = _BatchContext(
            config=config,
            classifier=load_view_classifier(config.view_classifier),
            pseudonymizer=Pseudonymizer(load_secret(secret_file=config.secret_file, output=output)),
            batch_id=batch_id,
            run_id=run_id or batch_id,
            shards=_LazyShardWriter(output, batch_id, config, stack),
            seen_pixels=set(known_pixel_hashes),
            timer=timer,
        )
        for item in files:
            rows.extend(_process_file_safely(item, context))
    part = write_part(output, batch_id, rows)
    n_clips = sum(1 for row in rows if row["status"] == "accepted")
    return BatchResult(
        batch_id=batch_id,
        rows=rows,
        n_files=len(files),
        n_clips=n_clips,
        seconds=time.perf_counter() - started,
        part_path=part,
        stage_seconds=dict(timer.seconds),
        stage_cpu_seconds=dict(timer.cpu_seconds),
    )


def _process_file_safely(item: DiscoveredFile, context: _BatchContext) -> list[dict[str, Any]]:
    """Rows for one file; any exception except a systemic shard-write failure becomes a row."""
    context.timer.current = None
    ids = context.ids
    if not item.is_media:
        return [file_row(item, status="rejected", reason=item.reject_reason, **ids)]
    header: FileHeader | None = None
    try:
        with local_copy(item) as local:
            with context.timer.stage("scan"):
                header = read_header(local, context.pseudonymizer)
            return _process_file(local, header, context)
    except ShardWriteError:
        raise
    except _REJECTING_ERRORS as exc:
        return [file_row(item, header=header, status="rejected", reason=exc.reason, **ids)]
    except Exception as exc:  # noqa: BLE001 - bad input must never stop a run
        logger.warning("file %s failed in stage %s with %s", item.source_id, context.timer.current, type(exc).__name__)
        return [failed_row(item, exc, stage=context.timer.current or "scan", header=header, **ids)]


@contextlib.contextmanager
def local_copy(item: DiscoveredFile) -> Iterator[DiscoveredFile]:
    """The file itself, or, for an object-store SOURCE, the item with its object copied to a
    local temporary file (pydicom and OpenCV read files), deleted afterwards."""
    from echofm.data.storage import download, is_remote

    if not is_remote(item.path):
        yield item
        return
    import tempfile
    from dataclasses import replace

    with tempfile.TemporaryDirectory(prefix="echofm-object-") as scratch:
        yield replace(item, path=download(item.path, Path(scratch) / Path(item.rel_path).name))


def _process_file(item: DiscoveredFile, header: FileHeader, context: _BatchContext) -> list[dict[str, Any]]:
    from echofm.preprocess.overlays import find_static_overlays, remove_overlays
    from echofm.preprocess.resample import mask_at_size, plan_windows, resize_pad, union_indices, window_span_ms
    from echofm.preprocess.sector import estimate_sector

    config, timer = context.config, context.timer

    def reject(reason: str, **extra: Any) -> list[dict[str, Any]]:
        return [file_row(item, header=header, status="rejected", reason=reason, **context.ids, **extra)]

    reasons = header_qc(
        n_frames=header.n_frames, fps=header.fps, height=header.height, width=header.width, thresholds=config.qc,
        still=header.still,
    )
    if reasons:
        return reject(reasons[0])
    prediction = None
    if not context.classifier.needs_pixels:
        with timer.stage("view"):
            prediction = context.classifier.classify(header.meta, None)
        why = view_rejection(prediction.view, config.views)
        if why is not None:
            return reject(why, prediction=prediction)

    with timer.stage("plan"):
        # A still enters as a clip of its one frame repeated (every slot samples frame 0).
        windows = [np.zeros(config.num_frames, dtype=np.int64)] if header.still else plan_windows(
            header.n_frames,
            header.fps,
            num_frames=config.num_frames,
            window_ms=config.window_ms,
            heart_rate_bpm=header.heart_rate_bpm,
            max_windows=config.max_windows,
        )
        wanted = frames_to_decode(union_indices(windows), header.n_frames, config.min_sector_frames)
    if not windows:
        # The cine covers too little of one window to stretch into a clip.
        return reject("too_short", prediction=prediction)
    with timer.stage("decode"):
        clip = decode_frames(item, wanted, min_side=config.size if config.fast_decode else None)
    with timer.stage("resize"):
        # Every decoded frame once, at the output size: windows then index these small frames
        # (a frame repeated in an up-sampled window is resized once, nothing big is copied).
        small = resize_pad(clip.frames, size=config.size)
    with timer.stage("hash"):
        # The decoded pixels at the output size: identical pixels give identical hashes, and
        # hashing 224 x 224 frames costs a tenth of hashing 600 x 800 ones. Keyed: whoever holds
        # a decoded original must not be able to find its row.
        content_hash = context.pseudonymizer.digest("content", pixel_sha256(small))
    if content_hash in context.seen_pixels:
        return reject("duplicate", prediction=prediction, pixel_hash=content_hash)
    with timer.stage("sector"):
        sector = estimate_sector(clip.frames, clip.regions)
    with timer.stage("qc"):
        qc = pixel_qc(clip.frames, sector.mask, sector.method, config.qc, still=header.still)
    if not qc.passed:
        return reject(qc.reason or "qc", prediction=prediction, qc=qc, sector=sector, pixel_hash=content_hash)
    with timer.stage("overlays"):
        overlay = find_static_overlays(clip.frames, sector.mask, lossy=bool(header.meta.get("lossy")))
    with timer.stage("mask"):
        inside = mask_at_size(sector.mask, config.size, whole=True)
        masked = small * inside[None, :, :, None]
        # Inside the sector, burned-in measurements and calipers are inpainted away (most clips
        # have none: then there is no overlay mask to map to the output size).
        if overlay.any():
            remove_overlays(masked, mask_at_size(overlay, config.size, whole=False) & inside)
        masked = grey_if_balanced(masked)
        # Rows of the decoded stack (which follows `wanted`, sorted) holding each window.
        outputs = [(window_span_ms(w, header.fps), masked[np.searchsorted(wanted, w)]) for w in windows]
    if prediction is None:
        with timer.stage("view"):
            prediction = context.classifier.classify(header.meta, outputs[0][1])
        why = view_rejection(prediction.view, config.views)
        if why is not None:
            return reject(why, prediction=prediction, qc=qc, sector=sector, pixel_hash=content_hash)

    context.seen_pixels.add(content_hash)
    rows = []
    with timer.stage("write"):
        for window_index, (span_ms, frames) in enumerate(outputs):
            row = file_row(
                item,
                header=header,
                status="accepted",
                reason=None,
                **context.ids,
                prediction=prediction,
                qc=qc,
                sector=sector,
                pixel_hash=content_hash,
                window_ms=span_ms,
                window_index=window_index,
                channels=int(frames.shape[-1]),
            )
            shard, key = context.shards.write(row["clip_id"], frames, _sample_meta(row))
            row["shard"], row["key"] = shard, key
            rows.append(row)
    return rows


def _sample_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The `meta.json` of a shard sample: technical fields only (no PHI, no source path)."""
    keys = ("clip_id", "fps_source", "fps", "view", "window_start_ms", "window_end_ms", "channels", "patient_id")
    return {key: row.get(key) for key in keys}
