"""The in-memory clip cache changes what a training epoch costs, never what it yields."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from echofm.data.augment import AugmentConfig
from echofm.data.clip_cache import load_clip_cache, resampled_bytes
from echofm.data.loader import (
    ClipNormalization,
    decode_sample,
    iter_shard_samples,
    make_pretrain_loader,
    training_clips,
)
from echofm.preprocess.clips import prepare_clip, resample_clip
from tests.factories.shards import write_test_shards

NORM = ClipNormalization(mean=(0.2, 0.2, 0.2), std=(0.25, 0.25, 0.25))
SIZE, FRAMES = 32, 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "shards"
    write_test_shards(out, [5, 1, 3, 2], colour_every=4)  # 11 clips, grey and colour
    return out


def _epochs(shards: Path, cache_mib: float, num_workers: int) -> list[tuple[torch.Tensor, list[str]]]:
    loader = make_pretrain_loader(
        shards, batch_size=2, num_workers=num_workers, seed=3, epoch_length=4, img_size=SIZE,
        num_frames=FRAMES, augment=AugmentConfig(), normalization=NORM, with_keys=True, cache_mib=cache_mib,
    )
    out = []
    for epoch in range(3):
        loader.dataset.set_epoch(epoch, skip_batches=1 if epoch == 2 else 0)
        out.extend((video, list(keys)) for video, keys in loader)
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_cached_epochs_are_bit_identical_to_streamed_ones_augmentation_and_resume_included(shards, num_workers):
    streamed = _epochs(shards, cache_mib=0, num_workers=num_workers)
    cached = _epochs(shards, cache_mib=64, num_workers=num_workers)
    assert [keys for _, keys in cached] == [keys for _, keys in streamed]
    for (a, _), (b, _) in zip(cached, streamed, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("augment", [None, AugmentConfig()], ids=["plain", "augmented"])
def test_the_cache_holds_each_clip_resampled_and_training_never_changes_it(shards, augment):
    clips = training_clips(shards)
    held = load_clip_cache(clips, iter_shard_samples, img_size=SIZE, num_frames=FRAMES, budget_mib=64)
    assert held is not None and set(held) == set(clips)
    grey = [key for key, clip in held.items() if clip.shape[0] == 1]
    assert grey and len(grey) < len(held)  # both kinds held, each in its own channel count
    assert all(clip.shape[1:] == (FRAMES, SIZE, SIZE) for clip in held.values())
    before = {key: clip.clone() for key, clip in held.items()}
    loader = make_pretrain_loader(
        shards, batch_size=2, num_workers=0, seed=0, epoch_length=4, img_size=SIZE, num_frames=FRAMES,
        augment=augment, normalization=NORM, cache_mib=0,
    )
    loader.dataset.cache = held  # the very tensors checked below, not a second load
    loader.dataset.set_epoch(0)
    list(loader)
    assert all(torch.equal(held[key], before[key]) for key in held)


def test_a_pool_over_the_budget_is_streamed(shards):
    clips = training_clips(shards)
    grey_floor = resampled_bytes(len(clips), img_size=SIZE, num_frames=FRAMES) / 2**20
    # Below the grey floor: refused before any shard is read.
    assert load_clip_cache(clips, _no_reading, img_size=SIZE, num_frames=FRAMES, budget_mib=grey_floor * 0.99) is None
    # Above it but below what the colour clips need: given up while reading.
    assert load_clip_cache(clips, iter_shard_samples, img_size=SIZE, num_frames=FRAMES, budget_mib=grey_floor * 1.01) is None
    loader = make_pretrain_loader(
        shards, batch_size=2, num_workers=0, seed=0, epoch_length=4, img_size=SIZE, num_frames=FRAMES,
        augment=None, normalization=NORM, cache_mib=grey_floor * 1.01,
    )
    assert loader.dataset.cache is None


def test_prepare_clip_is_the_resampled_clip_standardised(shards):
    for sample in iter_shard_samples(sorted(set(training_clips(shards).values()))):
        frames = decode_sample(sample)
        resampled = resample_clip(frames, img_size=SIZE, num_frames=FRAMES)
        assert resampled.is_contiguous() and 0.0 <= float(resampled.min()) and float(resampled.max()) <= 1.0
        full = prepare_clip(frames, img_size=SIZE, num_frames=FRAMES, normalization=NORM)
        assert torch.equal(full[: resampled.shape[0]], (resampled - 0.2) / 0.25)


def _no_reading(shards):
    raise AssertionError("a pool that cannot fit must be refused before its shards are read")
