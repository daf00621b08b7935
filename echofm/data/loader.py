"""Training input pipeline over the WebDataset shards (`OUTPUT/shards/*.tar`).

The sample stream of one data-loader worker is a pure function of (seed, epoch, rank, worker):

1. Each epoch the shard list is permuted with (seed, epoch) and dealt out to the
   `world_size x num_workers` slots, one shard per slot in turn. With fewer shards than slots the
   slots read every shard and take every n-th clip instead, so ranks never see the same clips.
2. A slot cycles over its shards as long as it needs to (resampling, reshuffled per pass), so every
   rank produces exactly `epoch_length` batches whatever the shard sizes: uneven shards cannot
   leave one DDP rank waiting in an all-reduce the others never join.
3. A shuffle buffer (seeded) mixes clips across the slot's shards.
4. Each clip draws its augmentation seed from the same generator, *before* any decoding, so a
   resumed run can skip the first k batches of an epoch without decoding them and still get the
   very same clips and augmentations afterwards (`ClipStream.set_epoch(epoch, skip_batches=k)`).

The torch `DataLoader` deals batches from its workers round-robin, so with W workers batch b of
an epoch comes from "lane" b % W; each lane is one of the slots above, and the per-lane counts
below follow from that. One iteration may span several epochs (`set_epoch(..., epochs=None)`,
what the training loop does): each worker then plays, epoch after epoch, the lane whose batches
the round-robin hands it, so the batches are those of one iteration per epoch, without a worker
restart at every epoch boundary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tarfile
from functools import partial
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from echofm.data import storage
from echofm.data.augment import AugmentConfig, apply_augment, sample_augment_params
from echofm.data.clip_cache import load_clip_cache
from echofm.data.digest import file_sha256
from echofm.preprocess.clips import finish_clip, prepare_clip, resample_clip
from echofm.errors import DataError

log = logging.getLogger(__name__)

NORMALIZATION_CACHE_VERSION = 1
SOURCE_FRAMES = 32  # frames per stored clip (the shard contract)


class NoShardsFound(DataError, FileNotFoundError):
    """The shards directory holds no complete `*.tar` shard."""

    def __init__(self, shards_dir: Path) -> None:
        super().__init__(f"no *.tar shards in {shards_dir}")
        self.path = shards_dir


class NotEnoughClips(DataError, ValueError):
    """Fewer training clips than data-loading slots (ranks x workers): some slot would get none."""

    def __init__(self, n_clips: int, n_slots: int, shards_dir: Path | None = None) -> None:
        # The shards' folder stays an attribute, out of the text: OUTPUT may be named after a
        # patient, and this text reaches logs and the Prefect database.
        super().__init__(f"{n_clips} training clips cannot feed {n_slots} loader slots (ranks x workers)")
        self.n_clips = n_clips
        self.n_slots = n_slots
        self.path = shards_dir


def list_shards(shards_dir: str | Path) -> list[Any]:
    """Complete shards of `shards_dir` (a directory, or an object-store URL: then URLs), sorted
    by name. `*.tar.tmp` (being written) are ignored."""
    shards = storage.glob(storage.location(shards_dir), "*.tar")
    if not shards:
        raise NoShardsFound(shards_dir)  # type: ignore[arg-type]
    return shards


def shard_keys(shards: Sequence[Path]) -> dict[str, Path]:
    """Every clip key in `shards` and the shard holding it, from the tar headers only."""
    keys: dict[str, Path] = {}
    for shard in shards:
        # Streaming mode: an object-store shard is read once, front to back.
        with storage.open_binary(shard) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                key = member.name.split(".", 1)[0]
                keys.setdefault(key, shard)
    return keys


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, or of a manifest directory's parts (their names and
    digests, in name order); used to name the manifest a model was trained on."""
    source = storage.location(path)
    if not storage.is_dir(source):
        return file_sha256(source)
    from echofm.data.manifest import manifest_parts

    digest = hashlib.sha256()
    for part in manifest_parts(source):
        digest.update(f"{part.name}:{file_sha256(part)}\n".encode())
    return digest.hexdigest()


def manifest_path_for(shards_dir: str | Path) -> Any:
    """Where the ingestion output puts the manifest for `OUTPUT/shards`: `OUTPUT/manifest.parquet`."""
    return storage.join(storage.parent(storage.location(shards_dir)), "manifest.parquet")


def accepted_clips(manifest_path: str | Path, shards_dir: str | Path) -> dict[str, Path]:
    """Accepted clips of the manifest: clip_id -> shard file under `shards_dir`."""
    from echofm.data.manifest import read_manifest

    table = read_manifest(manifest_path)
    frame = table.to_pandas() if hasattr(table, "to_pandas") else table
    accepted = frame[frame["status"] == "accepted"]
    shards_dir = storage.location(shards_dir)
    # The manifest may name shards relative to OUTPUT or absolutely; the file name is what counts.
    return {
        str(clip_id): storage.join(shards_dir, storage.name(str(shard)))
        for clip_id, shard in zip(accepted["clip_id"], accepted["shard"], strict=True)
    }


def training_clips(shards_dir: str | Path) -> dict[str, Path]:
    """clip_id -> shard of every clip to train on: the manifest's accepted clips when there is a
    manifest beside the shards, else every clip found in the shards."""
    manifest = manifest_path_for(shards_dir)
    if storage.exists(manifest):
        return accepted_clips(manifest, shards_dir)
    return shard_keys(list_shards(shards_dir))


def select_holdout(keys: Iterable[str], n: int) -> list[str]:
    """`n` clip keys chosen by hash (stable under adding clips to the archive), sorted."""
    ranked = sorted(keys, key=lambda key: hashlib.sha1(key.encode()).hexdigest())
    return sorted(ranked[:n])


def iter_shard_samples(shards: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Raw samples (`__key__`, `frames.<ext>` bytes, `meta.json` bytes) of `shards` (paths or
    object-store URLs), in file order."""
    storage.register_webdataset_schemes()
    yield from wds.tariterators.tarfile_samples({"url": str(shard)} for shard in shards)


def decode_sample(sample: dict[str, Any]) -> np.ndarray:
    """uint8 `[32, 224, 224, C]` frames of a raw shard sample, with the codec its extension names."""
    from echofm.data.codec import decode_clip

    return decode_clip(sample)


@dataclass(frozen=True, kw_only=True)
class ClipNormalization:
    """Per-channel intensity statistics (RGB, in [0, 1] units) used to standardise clips."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    n_clips: int = 0

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("ClipNormalization needs three means and three stds (RGB)")
        if min(self.std) <= 0:
            raise ValueError(f"ClipNormalization.std must be positive, got {self.std}")

    def apply(self, clip: torch.Tensor) -> torch.Tensor:
        """float `[3, T, H, W]` (or `[B, 3, T, H, W]`) in [0, 1] -> standardised, same shape."""
        shape = (3, 1, 1, 1)
        mean = torch.tensor(self.mean, dtype=clip.dtype, device=clip.device).view(shape)
        std = torch.tensor(self.std, dtype=clip.dtype, device=clip.device).view(shape)
        return (clip - mean) / std

    def invert(self, clip: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] intensities: the inverse of `apply`."""
        shape = (3, 1, 1, 1)
        mean = torch.tensor(self.mean, dtype=clip.dtype, device=clip.device).view(shape)
        std = torch.tensor(self.std, dtype=clip.dtype, device=clip.device).view(shape)
        return clip * std + mean

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "n_clips": self.n_clips}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipNormalization:
        return cls(mean=tuple(data["mean"]), std=tuple(data["std"]), n_clips=int(data.get("n_clips", 0)))

    @classmethod
    def from_clips(cls, clips: dict[str, Path], *, max_clips: int = 256) -> ClipNormalization:
        """Statistics over up to `max_clips` of `clips` (clip_id -> shard), spread evenly by id.

        Grey clips count as three equal channels, as the model sees them.
        """
        if not clips:
            raise ValueError("no clips to compute normalisation statistics from")
        ids = sorted(clips)
        picks = {ids[i] for i in np.linspace(0, len(ids) - 1, min(max_clips, len(ids))).round().astype(int)}
        total = np.zeros(3)
        total_sq = np.zeros(3)
        count = 0
        for sample in iter_shard_samples(sorted({clips[key] for key in picks})):
            if sample["__key__"] not in picks:
                continue
            frames = decode_sample(sample).astype(np.float64) / 255.0
            pixels = frames.reshape(-1, frames.shape[-1])
            if pixels.shape[1] == 1:
                pixels = np.repeat(pixels, 3, axis=1)
            total += pixels.sum(axis=0)
            total_sq += np.square(pixels).sum(axis=0)
            count += pixels.shape[0]
        if count == 0:
            raise ValueError("none of the chosen clips were found in their shards")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        # An all-black archive would give std 0; 1.0 keeps such data unscaled instead of infinite.
        std = np.where(std > 1e-6, std, 1.0)
        return cls(mean=tuple(mean.tolist()), std=tuple(std.tolist()), n_clips=len(picks))

    @classmethod
    def from_manifest(
        cls, manifest_path: str | Path, shards_dir: str | Path, *, max_clips: int = 256
    ) -> ClipNormalization:
        """Statistics of the manifest's accepted clips, cached in `<manifest>.norm.json` beside it.

        The cache is reused only while the manifest's digest and `max_clips` are unchanged. A
        manifest on object storage is not cached (no local place beside it): computed each time.
        """
        if storage.is_remote(manifest_path):
            return cls.from_clips(accepted_clips(manifest_path, shards_dir), max_clips=max_clips)
        manifest_path = Path(manifest_path)
        cache = manifest_path.with_name(manifest_path.stem + ".norm.json")
        digest = file_digest(manifest_path)
        if cache.exists():
            cached = json.loads(cache.read_text())
            if (
                cached.get("version") == NORMALIZATION_CACHE_VERSION
                and cached.get("manifest_sha256") == digest
                and cached.get("max_clips") == max_clips
            ):
                return cls.from_dict(cached)
        stats = cls.from_clips(accepted_clips(manifest_path, shards_dir), max_clips=max_clips)
        payload = {
            "version": NORMALIZATION_CACHE_VERSION,
            "manifest_sha256": digest,
            "max_clips": max_clips,
            **stats.to_dict(),
        }
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(cache)
        log.info("normalisation statistics from %d clips written to %s", stats.n_clips, cache)
        return stats

    @classmethod
    def for_shards(cls, shards_dir: str | Path, *, max_clips: int = 256) -> ClipNormalization:
        """From the manifest beside `shards_dir` when there is one (cached), else from the shards."""
        manifest = manifest_path_for(shards_dir)
        if storage.exists(manifest):
            return cls.from_manifest(manifest, shards_dir, max_clips=max_clips)
        return cls.from_clips(shard_keys(list_shards(shards_dir)), max_clips=max_clips)


def load_clips(
    clips: dict[str, Path],
    keys: Sequence[str],
    *,
    img_size: int,
    num_frames: int,
    normalization: ClipNormalization,
) -> torch.Tensor:
    """float `[len(keys), 3, num_frames, img_size, img_size]`: `keys` (in that order), unaugmented."""
    wanted = set(keys)
    found: dict[str, torch.Tensor] = {}
    for sample in iter_shard_samples(sorted({clips[key] for key in keys})):
        if sample["__key__"] in wanted:
            found[sample["__key__"]] = prepare_clip(
                decode_sample(sample), img_size=img_size, num_frames=num_frames, normalization=normalization
            )
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"clips not found in their shards: {sorted(missing)[:5]}")
    return torch.stack([found[key] for key in keys])


def batches_for_worker(epoch_length: int, num_workers: int, worker: int) -> int:
    """Batches worker `worker` produces in an epoch of `epoch_length` dealt round-robin."""
    return epoch_length // num_workers + (1 if worker < epoch_length % num_workers else 0)


def skipped_for_worker(skip_batches: int, num_workers: int, worker: int) -> int:
    """How many of worker `worker`'s batches fall among the epoch's first `skip_batches`."""
    return max(0, math.ceil((skip_batches - worker) / num_workers))


class ClipStream(IterableDataset):
    """The per-rank stream of prepared clips described in the module docstring.

    Yields float `[3, T, H, W]` (or `(clip, key)` with `with_keys`). Call `set_epoch(epoch,
    skip_batches=k[, epochs=n])` before iterating the DataLoader; the DataLoader pickles the
    stream into its workers at each `iter()`, so the setting reaches them. `cache` (clip_id ->
    `resample_clip` result, `clip_cache.py`) replaces the decode and resize of the clips it
    holds; the order and the augmentations are drawn from the shards exactly as without it.
    """

    def __init__(
        self,
        clips: dict[str, Path],
        *,
        batch_size: int,
        epoch_length: int,
        seed: int,
        img_size: int,
        num_frames: int,
        normalization: ClipNormalization,
        augment: AugmentConfig | None,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 64,
        with_keys: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or epoch_length < 1:
            raise ValueError("batch_size and epoch_length must be at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.clips = dict(clips)
        self.shards = sorted(set(self.clips.values()))
        self.batch_size = batch_size
        self.epoch_length = epoch_length
        self.seed = seed
        self.img_size = img_size
        self.num_frames = num_frames
        self.normalization = normalization
        self.augment = augment
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.with_keys = with_keys
        self.cache = cache
        self.epoch = 0
        self.skip_batches = 0
        self.epochs: int | None = 1

    def set_epoch(self, epoch: int, *, skip_batches: int = 0, epochs: int | None = 1) -> None:
        """Stream epoch `epoch` from its batch `skip_batches` on, and then the next `epochs - 1`
        epochs (`epochs=None`: endlessly). One iteration over several epochs yields the very batches
        that one iteration per epoch would, without restarting the loader's workers at each epoch
        boundary (a fork and a shuffle-buffer fill each, most of an epoch's cost on a small pool)."""
        if not 0 <= skip_batches < self.epoch_length:
            raise ValueError(f"skip_batches must lie in [0, {self.epoch_length}), got {skip_batches}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be at least 1 (or None: endless), got {epochs}")
        self.epoch = epoch
        self.skip_batches = skip_batches
        self.epochs = epochs

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader deals the batches it delivers round-robin from worker 0: the p-th batch of
        # this iteration comes from worker p % num_workers. Batch b of epoch e is delivered p = e x
        # epoch_length + b - start-th, so within one epoch a worker takes every num_workers-th
        # batch from one residue on: it plays one lane per epoch (lane (w + k) % num_workers in
        # the first epoch after skipping k batches, the rule of a one-epoch iteration).
        start = self.epoch * self.epoch_length + self.skip_batches
        epoch = self.epoch
        while self.epochs is None or epoch < self.epoch + self.epochs:
            lane = (worker + start - epoch * self.epoch_length) % num_workers
            skip = self.skip_batches if epoch == self.epoch else 0
            yield from self._lane_clips(epoch, lane, num_workers, skip)
            epoch += 1

    def _lane_clips(self, epoch: int, lane: int, num_workers: int, skip_batches: int) -> Iterator[Any]:
        """The clips of `lane`'s batches in `epoch` that come after the epoch's first `skip_batches`."""
        n_samples = batches_for_worker(self.epoch_length, num_workers, lane) * self.batch_size
        n_skip = skipped_for_worker(skip_batches, num_workers, lane) * self.batch_size
        rng = np.random.default_rng([self.seed, epoch, self.rank, lane])
        raw = self._shuffled(self._slot_samples(epoch, lane, num_workers, rng), rng)
        for index in range(n_samples):
            sample = next(raw)
            params = sample_augment_params(self.augment, rng) if self.augment is not None else None
            if index < n_skip:
                continue  # already trained on before the resume: drawn, not decoded
            held = self.cache.get(sample["__key__"]) if self.cache is not None else None
            # finish_clip works in place: a held clip is copied, never changed.
            resampled = held.clone() if held is not None else resample_clip(
                decode_sample(sample), img_size=self.img_size, num_frames=self.num_frames
            )
            clip = finish_clip(
                resampled,
                normalization=self.normalization,
                augment=partial(apply_augment, params=params) if params is not None else None,
            )
            yield (clip, sample["__key__"]) if self.with_keys else clip

    def _slot_samples(
        self, epoch: int, lane: int, num_workers: int, rng: np.random.Generator
    ) -> Iterator[dict[str, Any]]:
        """Endless raw samples of this (rank, lane) slot in `epoch`, cycling over its share of the shards."""
        n_slots = self.world_size * num_workers
        slot = self.rank * num_workers + lane
        if len(self.clips) < n_slots:
            raise NotEnoughClips(len(self.clips), n_slots)
        # The epoch's permutation is shared by every slot (same seed), so the deal is a partition.
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        by_shard = len(self.shards) >= n_slots
        mine = [self.shards[i] for i in order[slot::n_slots]] if by_shard else [self.shards[i] for i in order]
        while True:
            position = emitted = 0
            for sample in iter_shard_samples(mine):
                if sample["__key__"] not in self.clips:
                    continue
                position += 1
                if by_shard or (position - 1) % n_slots == slot:
                    emitted += 1
                    yield sample
            if emitted == 0:  # this slot's shards hold no training clip: cycling would spin forever
                raise NotEnoughClips(0, n_slots)
            if len(mine) > 1:
                mine = [mine[i] for i in rng.permutation(len(mine))]

    def _shuffled(self, samples: Iterator[dict[str, Any]], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """Endless buffer shuffle: emit a random buffered sample, refill its place from `samples`."""
        buffer = [next(samples) for _ in range(self.shuffle_buffer)]
        while True:
            pick = int(rng.integers(len(buffer)))
            out = buffer[pick]
            buffer[pick] = next(samples)
            yield out


def make_pretrain_loader(
    shards_dir: str | Path,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    epoch_length: int,
    img_size: int,
    num_frames: int,
    augment: AugmentConfig | None,
    normalization: ClipNormalization,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 64,
    exclude_keys: Iterable[str] = (),
    with_keys: bool = False,
    clips: dict[str, Path] | None = None,
    cache_mib: float = 0,
) -> DataLoader:
    """A DataLoader yielding `epoch_length` batches of float `[batch_size, 3, num_frames, img_size,
    img_size]` per epoch on every rank (or `(batch, keys)` with `with_keys`).

    `clips` (clip_id -> shard) defaults to `training_clips(shards_dir)`; `exclude_keys` (a
    held-out set) are never streamed. The stream is fixed by (seed, epoch, rank, num_workers):
    resume with the same values and `loader.dataset.set_epoch(epoch, skip_batches=k)`.
    With `cache_mib` > 0 the pool is resampled once and held in memory when it fits in that many
    MiB (`clip_cache.py`): the same batches, without decoding and resizing them every epoch.
    """
    pool = dict(clips) if clips is not None else training_clips(shards_dir)
    for key in set(exclude_keys):
        pool.pop(key, None)
    if len(pool) < world_size * max(1, num_workers):
        raise NotEnoughClips(len(pool), world_size * max(1, num_workers), Path(shards_dir))
    stream = ClipStream(
        pool,
        batch_size=batch_size,
        epoch_length=epoch_length,
        seed=seed,
        img_size=img_size,
        num_frames=num_frames,
        normalization=normalization,
        augment=augment,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=min(shuffle_buffer, len(pool)),
        with_keys=with_keys,
        cache=load_clip_cache(pool, iter_shard_samples, img_size=img_size, num_frames=num_frames,
                              budget_mib=cache_mib) if cache_mib > 0 else None,
    )
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        # A private generator: creating the iterator must not consume the global torch RNG, which
        # drives masking and has to continue exactly across a resume.
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
