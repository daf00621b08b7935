"""Training clips held in memory between epochs, when they fit.

Streaming a clip costs its decode (zlib, 32 x 224 x 224), the temporal subsampling and the
antialiased resize to the model's input before the augmentation; only the augmentation differs
from one epoch to the next. On a small archive (the demo's 88 training clips, 55 epochs in 600
steps) that fixed part is about four fifths of a loader worker's time per clip, and it is the
same every time. So when the whole training pool, resampled, fits in a budget, the rank
resamples every clip once (`resample_clip`) and the stream augments copies of those tensors: the
batches are bit-identical to the streamed ones (`tests/data/test_clip_cache.py`), only cheaper.
Loader workers inherit the tensors from the rank (forked, copy-on-write; shared memory under
spawn), so the budget is per rank, not per worker. A pool that does not fit is streamed as
before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from echofm.data.codec import decode_clip
from echofm.preprocess.clips import resample_clip

log = logging.getLogger(__name__)

FLOAT_BYTES = 4
MIB = 2**20


def resampled_bytes(n_clips: int, *, img_size: int, num_frames: int, channels: int = 1) -> int:
    """Bytes of `n_clips` float32 `[channels, num_frames, img_size, img_size]` clips."""
    return n_clips * channels * num_frames * img_size * img_size * FLOAT_BYTES


def load_clip_cache(
    clips: Mapping[str, Path],
    read_samples: Callable[[list[Path]], Iterable[dict[str, Any]]],
    *,
    img_size: int,
    num_frames: int,
    budget_mib: float,
) -> dict[str, torch.Tensor] | None:
    """Every clip of `clips` (clip_id -> shard) as `resample_clip` makes it, float `[C, num_frames,
    img_size, img_size]` in [0, 1], or None when they do not all fit in `budget_mib` MiB.
    `read_samples(shards)` yields the raw shard samples (`__key__`, `frames.<ext>`) of `shards`.

    Grey clips (C = 1) are the smallest a pool can be, so a pool that cannot fit even as grey is
    refused before any shard is read; colour clips are counted as they are read.
    """
    budget = budget_mib * MIB
    if budget <= 0:
        return None
    if resampled_bytes(len(clips), img_size=img_size, num_frames=num_frames) > budget:
        log.info("%d training clips cannot fit the %.0f MiB clip cache: streaming them from the shards",
                 len(clips), budget_mib)
        return None
    held: dict[str, torch.Tensor] = {}
    total = 0
    for sample in read_samples(sorted(set(clips.values()))):
        key = sample["__key__"]
        if key not in clips or key in held:
            continue
        clip = resample_clip(decode_clip(sample), img_size=img_size, num_frames=num_frames)
        total += clip.numel() * clip.element_size()
        if total > budget:
            log.info("training clips exceed the %.0f MiB clip cache: streaming them from the shards", budget_mib)
            return None
        held[key] = clip
    log.info("holding %d training clips in memory (%.1f MiB, resampled to %d x %d^2)",
             len(held), total / MIB, num_frames, img_size)
    return held
