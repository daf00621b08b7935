"""Manifest rows of an ingestion run and the per-batch Parquet parts they are first written to.

A batch writes its rows to `OUTPUT/.parts/<batch_id>.parquet` (temporary name, then rename) when
it finishes, so a run killed half-way keeps every finished batch; the final merge into
`OUTPUT/manifest.parquet` reads the parts and removes them.

Rows hold only values this project computed (keyed ids and digests, pseudonyms, counts,
canonical names, reasons, messages written here); nothing read from a file's text, and no file or
folder name, ever goes into a row: free text, error strings from DICOM parsers and the paths of
PACS exports (`DOE^JOHN_12345678/STUDY_20190317/...`) carry patient details.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echofm.data.manifest import NO_WINDOW, make_clip_id, write_manifest
from echofm.ingest.discover import DiscoveredFile

if TYPE_CHECKING:
    from echofm.ingest.header import FileHeader
    from echofm.ingest.qc import QCResult
    from echofm.ingest.views import ViewPrediction
    from echofm.preprocess.sector import SectorMask

PARTS_DIRNAME = ".parts"
QC_METRIC_COLUMNS: tuple[str, ...] = (
    "qc_mean_intensity",
    "qc_std_intensity",
    "qc_motion_energy",
    "qc_saturated_fraction",
    "qc_sector_area_fraction",
)
# Files rejected at discovery and rows of reader errors: status per reason.
FAILED_DISCOVERY_REASONS = frozenset({"unreadable_file"})


def row_clip_id(source_hash: str, source_id: str, window_index: int, *, produced_clip: bool) -> str:
    """The manifest id of a row.

    A produced clip is named by its content (`make_clip_id(source_hash, window_index)`), so the
    same bytes always give the same clip id. A file that produced no clip is named by content and
    (keyed) path together: empty files, and copies of one file at several paths, share their
    bytes but each needs its own row.
    """
    if produced_clip:
        return make_clip_id(source_hash, window_index)
    both = hashlib.sha256(f"{source_hash}\x00{source_id}".encode()).hexdigest()
    return make_clip_id(both, window_index)


def error_reason(exc: BaseException, stage: str) -> str:
    """The snake_case reason of an error: its class's `reason`, else `<stage>_error`."""
    reason = getattr(type(exc), "reason", None)
    return reason if isinstance(reason, str) else f"{stage}_error"


def error_message(exc: BaseException, stage: str) -> str:
    """A failed row's message: the stage and the first docstring line of the error class (text
    this project wrote), never `str(exc)`, which may quote values read from the file."""
    doc = (type(exc).__doc__ or "").strip().splitlines()
    summary = doc[0].strip() if doc and type(exc).__module__.startswith("echofm") else "unexpected error"
    return f"{stage}: {type(exc).__name__}: {summary}"


def file_row(
    item: DiscoveredFile,
    *,
    status: str,
    reason: str | None,
    batch_id: str,
    key_id: str,
    run_id: str | None = None,
    header: FileHeader | None = None,
    prediction: ViewPrediction | None = None,
    qc: QCResult | None = None,
    sector: SectorMask | None = None,
    pixel_hash: str | None = None,
    window_ms: tuple[float, float] | None = None,
    window_index: int = NO_WINDOW,
    channels: int | None = None,
    error_class: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One manifest row for `item` (see `schemas/manifest.schema.json` for the columns)."""
    accepted = status == "accepted"
    row: dict[str, Any] = {
        "clip_id": row_clip_id(item.source_hash, item.source_id, window_index, produced_clip=accepted),
        "source_id": item.source_id,
        "source_hash": item.source_hash or None,
        "source_format": item.source_format,
        "source_bytes": item.size_bytes,
        "status": status,
        "reason": reason,
        "error_class": error_class,
        "error_message": error,
        "view": prediction.view if prediction is not None else None,
        "view_source": prediction.source if prediction is not None else None,
        "view_confidence": prediction.confidence if prediction is not None else None,
        "window_index": window_index,
        "window_start_ms": window_ms[0] if window_ms is not None else None,
        "window_end_ms": window_ms[1] if window_ms is not None else None,
        "fps": header.fps if header is not None else None,
        "fps_source": header.fps_source if header is not None else None,
        "n_frames_source": header.n_frames if header is not None else None,
        "height_source": header.height if header is not None else None,
        "width_source": header.width if header is not None else None,
        "channels": channels,
        "mask_method": sector.method if sector is not None else None,
        "mask_confidence": sector.confidence if sector is not None else None,
        "content_hash": pixel_hash,
        "patient_id": header.pseudonyms.get("patient_id") if header is not None else None,
        "study_id": header.pseudonyms.get("study_id") if header is not None else None,
        "series_id": header.pseudonyms.get("series_id") if header is not None else None,
        "shard": None,
        "key": None,
        "batch_id": batch_id,
        "ingest_run_id": run_id or batch_id,
        "key_id": key_id,
        "ingested_at": datetime.now(timezone.utc),
    }
    row.update(qc.metric_columns() if qc is not None else dict.fromkeys(QC_METRIC_COLUMNS))
    return row


def failed_row(
    item: DiscoveredFile,
    exc: BaseException,
    *,
    stage: str,
    batch_id: str,
    key_id: str,
    run_id: str | None = None,
    header: FileHeader | None = None,
) -> dict[str, Any]:
    """The row of a file whose processing raised `exc` during `stage`."""
    return file_row(
        item,
        status="failed",
        reason=error_reason(exc, stage),
        batch_id=batch_id,
        key_id=key_id,
        run_id=run_id,
        header=header,
        error_class=type(exc).__name__,
        error=error_message(exc, stage),
    )


def discovery_row(
    item: DiscoveredFile, *, batch_id: str, run_id: str, key_id: str, reason: str | None = None
) -> dict[str, Any]:
    """The row of a file ruled out before any batch: by discovery (`item.reject_reason`) or by
    the planner (`reason`, e.g. `duplicate` of a file already ingested)."""
    why = reason or item.reject_reason or "not_media"
    status = "failed" if why in FAILED_DISCOVERY_REASONS else "rejected"
    return file_row(
        item,
        status=status,
        reason=why,
        batch_id=batch_id,
        key_id=key_id,
        run_id=run_id,
        error_class="OSError" if status == "failed" else None,
        error="discover: the file could not be read" if status == "failed" else None,
    )


def write_part(output_dir: Path | str, batch_id: str, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` to `output_dir/.parts/<batch_id>.parquet` atomically (OUTPUT a directory or
    an object-store URL); returns the path."""
    from echofm.data.storage import join

    return write_manifest(rows, join(output_dir, PARTS_DIRNAME, f"{batch_id}.parquet"))
