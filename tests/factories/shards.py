"""Small WebDataset shards (and optionally their manifest) for loader and pretraining tests."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from echofm.data.manifest import MANIFEST_SCHEMA, write_manifest
from echofm.data.shards import ShardWriter

FRAME_SIDE = 48


def synthetic_frames(index: int, side: int = FRAME_SIDE, channels: int = 1) -> np.ndarray:
    """uint8 [32, side, side, C]: a bright disc orbiting on a speckle background, unique per index."""
    rng = np.random.default_rng(index)
    frames = rng.integers(0, 60, size=(32, side, side, channels), dtype=np.uint8)
    yy, xx = np.mgrid[:side, :side]
    for t in range(32):
        angle = 2 * np.pi * (t / 32 + index / 7)
        cy, cx = side / 2 + side / 5 * np.sin(angle), side / 2 + side / 5 * np.cos(angle)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (side / 8) ** 2
        frames[t][disc] = 150 + (index * 13) % 100
    return frames


def clip_key(index: int) -> str:
    """32 hex characters, like ingestion's clip ids; `clip_index` inverts it."""
    return f"{index:032x}"


def clip_index(key: str) -> int:
    return int(key, 16)


def write_test_shards(
    shards_dir: Path,
    sizes: list[int],
    *,
    side: int = FRAME_SIDE,
    colour_every: int = 0,
    manifest: bool = False,
) -> list[str]:
    """Shards under `shards_dir` (named `shards`, inside an ingestion OUTPUT) holding `sizes[i]`
    clips each, written with the project's ShardWriter; with `manifest`, also
    `OUTPUT/manifest.parquet` listing them as accepted plus one rejected file.

    Returns the clip ids in write order. Every `colour_every`-th clip is RGB (0: all grey).
    """
    assert shards_dir.name == "shards"
    output = shards_dir.parent
    keys, rows = [], []
    index = 0
    for shard_no, size in enumerate(sizes):
        with ShardWriter(output, prefix=f"batch{shard_no}", max_count=size) as writer:
            for _ in range(size):
                key = clip_key(index)
                channels = 3 if colour_every and index % colour_every == 0 else 1
                shard, _ = writer.write(key, synthetic_frames(index, side, channels), {"clip_id": key})
                keys.append(key)
                rows.append(_manifest_row(key, "accepted", shard=shard, channels=channels))
                index += 1
    if manifest:
        rows.append(_manifest_row("f" * 32, "rejected", reason="too_few_frames"))
        write_manifest(rows, output / "manifest.parquet")
    return keys


def _manifest_row(key: str, status: str, **values) -> dict:
    row = {name: None for name in MANIFEST_SCHEMA.names}
    row.update(
        clip_id=key,
        source_id="f" + key[:32].rjust(32, "0"),
        source_format="mp4",
        status=status,
        window_index=0 if status == "accepted" else -1,
        ingest_run_id="test",
        key_id="0123456789ab",
        ingested_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        key=key if status == "accepted" else None,
    )
    row.update(values)
    return row
