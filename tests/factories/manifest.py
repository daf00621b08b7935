"""A complete manifest row, for manifest and contract tests."""

from __future__ import annotations

from datetime import datetime, timezone

from echofm.data.manifest import MANIFEST_COLUMNS, make_clip_id

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def make_row(index: int, *, status: str = "accepted", window_index: int = 0, **overrides) -> dict:
    """A complete manifest row; accepted rows name a shard and key."""
    sha = f"{index:064x}"
    clip_id = make_clip_id(sha, window_index)
    row = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(
        clip_id=clip_id,
        source_id="f" + f"{index:032x}",
        source_hash=sha,
        source_format="dicom",
        source_bytes=1000 + index,
        status=status,
        reason=None if status == "accepted" else "too_few_frames",
        view="A4C",
        window_index=window_index,
        window_start_ms=0.0,
        window_end_ms=1280.0,
        fps=50.0,
        fps_source="FrameTime",
        n_frames_source=64,
        height_source=600,
        width_source=800,
        channels=1,
        mask_method="image",
        mask_confidence=0.9,
        qc_motion_energy=4.0,
        shard="b0-000000.tar" if status == "accepted" else None,
        key=clip_id if status == "accepted" else None,
        patient_id="p" + "0" * 20,
        batch_id="run1-b00000",
        ingest_run_id="run1",
        key_id="0123456789ab",
        ingested_at=AT,
    )
    row.update(overrides)
    return row
