"""The clips to score, streamed from the shards in batches by a torch `DataLoader`.

Each loader worker reads whole shards of its own (shard i goes to worker i mod W) and decodes only
the samples asked for, so reading and decoding run ahead of the models in other processes. A
batch holds clips of one shape (an archive mixes grey and colour clips), as one uint8 tensor
`[B, T, H, W, C]` that crosses to the scoring process through shared memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from echofm.data.shards import iter_shard


class ShardClips(IterableDataset):
    """Batches `(clip_ids, uint8 [B, T, H, W, C])` of the clips `wanted` (clip_id -> shard)."""

    def __init__(self, wanted: Mapping[str, Path], batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.by_shard: dict[Path, set[str]] = {}
        for clip_id, shard in wanted.items():
            self.by_shard.setdefault(Path(shard), set()).add(clip_id)

    def __iter__(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        info = get_worker_info()
        shards = sorted(self.by_shard)
        if info is not None:
            shards = shards[info.id :: info.num_workers]
        pending: dict[tuple[int, ...], tuple[list[str], list[np.ndarray]]] = {}
        for shard in shards:
            for key, frames, _ in iter_shard(shard, self.by_shard[shard]):
                keys, clips = pending.setdefault(frames.shape, ([], []))
                keys.append(key)
                clips.append(frames)
                if len(keys) == self.batch_size:
                    yield keys, torch.from_numpy(np.stack(clips))
                    del pending[frames.shape]
        for keys, clips in pending.values():
            yield keys, torch.from_numpy(np.stack(clips))


def clip_batches(wanted: Mapping[str, Path], *, batch_size: int, workers: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """`(clip_ids, uint8 [B, T, H, W, C])` for every clip of `wanted`, each once, in batches of
    at most `batch_size`; `workers` loader processes (0: read in this process)."""
    dataset = ShardClips(wanted, batch_size)
    workers = min(workers, len(dataset.by_shard))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None)
    for keys, frames in loader:
        yield list(keys), frames.numpy()
