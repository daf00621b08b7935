from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from echofm.data.augment import AugmentConfig
from echofm.data.manifest import read_manifest, write_manifest
from echofm.data.loader import (
    ClipNormalization,
    NotEnoughClips,
    batches_for_worker,
    load_clips,
    make_pretrain_loader,
    shard_keys,
    skipped_for_worker,
    list_shards,
    training_clips,
)
from echofm.preprocess.clips import even_indices, prepare_clip
from tests.factories.shards import FRAME_SIDE, clip_index, clip_key, synthetic_frames, write_test_shards

NORM = ClipNormalization(mean=(0.2, 0.2, 0.2), std=(0.25, 0.25, 0.25))


def _loader(shards: Path, **kw):
    args = dict(
        batch_size=2,
        num_workers=0,
        seed=0,
        epoch_length=3,
        img_size=32,
        num_frames=8,
        augment=None,
        normalization=NORM,
        rank=0,
        world_size=1,
        with_keys=True,
    )
    args.update(kw)
    return make_pretrain_loader(shards, **args)


def _epoch_keys(loader, epoch: int, skip: int = 0) -> list[list[str]]:
    loader.dataset.set_epoch(epoch, skip_batches=skip)
    return [list(keys) for _, keys in loader]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loader") / "shards"
    write_test_shards(out, [5, 1, 3, 2], colour_every=4)
    return out


def test_batches_have_the_model_input_shape_and_grey_becomes_three_equal_channels(shards):
    loader = _loader(shards, augment=None)
    loader.dataset.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 3
    for video, keys in batches:
        assert video.shape == (2, 3, 8, 32, 32) and video.dtype == torch.float32
        for clip, key in zip(video, keys):
            if clip_index(key) % 4:  # grey clips
                assert torch.equal(clip[0], clip[1]) and torch.equal(clip[1], clip[2])


def test_prepare_clip_subsamples_time_resizes_and_normalises():
    frames = synthetic_frames(3)
    clip = prepare_clip(frames, img_size=24, num_frames=8, normalization=NORM)
    assert clip.shape == (3, 8, 24, 24)
    full = prepare_clip(frames, img_size=FRAME_SIDE, num_frames=32, normalization=NORM)
    expected = (torch.from_numpy(frames[..., 0]).float() / 255 - 0.2) / 0.25
    assert torch.allclose(full[0], expected, atol=1e-6)
    assert torch.allclose(NORM.invert(full)[0], torch.from_numpy(frames[..., 0]).float() / 255, atol=1e-6)
    assert list(even_indices(32, 8)) == [0, 4, 8, 12, 16, 20, 24, 28]
    with pytest.raises(ValueError):
        prepare_clip(frames, img_size=24, num_frames=33, normalization=NORM)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_rank_runs_the_same_steps_on_disjoint_clips(shards, num_workers):
    epoch_length = 5
    per_rank = []
    for rank in range(2):
        loader = _loader(shards, rank=rank, world_size=2, num_workers=num_workers, epoch_length=epoch_length)
        batches = _epoch_keys(loader, epoch=0)
        assert len(batches) == epoch_length  # uneven shards (5, 1, 3, 2) do not change the count
        assert all(len(b) == 2 for b in batches)
        per_rank.append({key for b in batches for key in b})
    assert per_rank[0].isdisjoint(per_rank[1])


def test_with_fewer_shards_than_slots_clips_are_dealt_one_by_one(tmp_path):
    single = tmp_path / "shards"
    keys = write_test_shards(single, [6])
    seen = []
    for rank in range(2):
        loader = _loader(single, rank=rank, world_size=2, num_workers=2, epoch_length=4, batch_size=1)
        seen.append({k for b in _epoch_keys(loader, 0) for k in b})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] <= set(keys)


def test_too_few_clips_for_the_slots_is_an_error(tmp_path):
    tiny = tmp_path / "shards"
    write_test_shards(tiny, [1])
    with pytest.raises(NotEnoughClips):
        _loader(tiny, world_size=2, rank=1)


def test_stream_is_a_function_of_seed_and_epoch(shards):
    a = _epoch_keys(_loader(shards, num_workers=2, epoch_length=4), 0)
    b = _epoch_keys(_loader(shards, num_workers=2, epoch_length=4), 0)
    assert a == b
    assert _epoch_keys(_loader(shards, num_workers=2, epoch_length=4), 1) != a
    assert _epoch_keys(_loader(shards, num_workers=2, epoch_length=4, seed=5), 0) != a


@pytest.mark.parametrize("num_workers,skip", [(0, 2), (2, 3)])
def test_skipping_batches_resumes_the_exact_stream_with_augmentation(shards, num_workers, skip):
    augment = AugmentConfig(rotation_deg=15.0, translate=0.1)
    loader = _loader(shards, num_workers=num_workers, epoch_length=5, augment=augment)
    loader.dataset.set_epoch(2)
    full = list(loader)
    loader.dataset.set_epoch(2, skip_batches=skip)
    tail = list(loader)
    assert len(tail) == 5 - skip
    for (video_a, keys_a), (video_b, keys_b) in zip(full[skip:], tail, strict=True):
        assert list(keys_a) == list(keys_b)
        assert torch.equal(video_a, video_b)


@pytest.mark.parametrize("num_workers,epoch_length,skip", [(0, 3, 1), (2, 5, 0), (2, 5, 3), (3, 4, 2), (3, 2, 1)])
def test_one_iteration_over_several_epochs_yields_the_batches_of_one_iteration_per_epoch(
    shards, num_workers, epoch_length, skip
):
    # Epoch lengths that the workers do not divide move each worker to another lane every epoch;
    # fewer batches than workers leave some workers without a batch in an epoch.
    augment = AugmentConfig(rotation_deg=15.0, translate=0.1)
    loader = _loader(shards, num_workers=num_workers, epoch_length=epoch_length, augment=augment)
    per_epoch = []
    for epoch in range(4, 8):
        loader.dataset.set_epoch(epoch, skip_batches=skip if epoch == 4 else 0)
        per_epoch.extend(loader)
    loader.dataset.set_epoch(4, skip_batches=skip, epochs=4)
    spanned = list(loader)
    loader.dataset.set_epoch(4, skip_batches=skip, epochs=None)
    endless = list(itertools.islice(loader, len(per_epoch)))
    assert len(spanned) == len(per_epoch) == 4 * epoch_length - skip
    for run in (spanned, endless):
        for (video_a, keys_a), (video_b, keys_b) in zip(per_epoch, run, strict=True):
            assert list(keys_a) == list(keys_b)
            assert torch.equal(video_a, video_b)


def test_an_epoch_span_must_hold_an_epoch(shards):
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        _loader(shards).dataset.set_epoch(0, epochs=0)


def test_round_robin_counts_add_up():
    for epoch_length in range(1, 12):
        for workers in (1, 2, 3):
            assert sum(batches_for_worker(epoch_length, workers, w) for w in range(workers)) == epoch_length
            for skip in range(epoch_length):
                skipped = sum(skipped_for_worker(skip, workers, w) for w in range(workers))
                assert skipped == skip


def test_excluded_clips_never_stream(shards):
    held_out = {clip_key(0), clip_key(6)}
    loader = _loader(shards, exclude_keys=held_out, epoch_length=6)
    seen = Counter(k for epoch in range(2) for b in _epoch_keys(loader, epoch) for k in b)
    assert not held_out & set(seen)
    assert len(seen) > 4  # the shuffle reaches across shards


def test_normalisation_statistics_match_the_pixels(shards):
    clips = shard_keys(list_shards(shards))
    stats = ClipNormalization.from_clips(clips, max_clips=100)
    pixels = []
    for key in sorted(clips):
        frames = synthetic_frames(clip_index(key), channels=3 if clip_index(key) % 4 == 0 else 1)
        pixels.append(np.broadcast_to(frames, frames.shape[:-1] + (3,)).reshape(-1, 3) / 255.0)
    pixels = np.concatenate(pixels)
    assert np.allclose(stats.mean, pixels.mean(axis=0), atol=1e-6)
    assert np.allclose(stats.std, pixels.std(axis=0), atol=1e-6)
    assert stats.n_clips == len(clips)
    normalised = load_clips(clips, sorted(clips), img_size=FRAME_SIDE, num_frames=32, normalization=stats)
    assert abs(normalised.mean().item()) < 1e-3 and abs(normalised.std().item() - 1) < 1e-2


def test_manifest_decides_the_clips_and_its_statistics_are_cached_beside_it(tmp_path):
    shards_dir = tmp_path / "out" / "shards"
    keys = write_test_shards(shards_dir, [3, 3], manifest=True)
    manifest = shards_dir.parent / "manifest.parquet"
    # Ingestion later rejects one clip: it stays in its shard but must never be trained on.
    _reject(manifest, keys[1])
    clips = training_clips(shards_dir)
    assert set(clips) == set(keys) - {keys[1]}
    assert clips[keys[4]] == shards_dir / "batch1-000000.tar"

    stats = ClipNormalization.from_manifest(manifest, shards_dir, max_clips=10)
    expected = ClipNormalization.from_clips(clips, max_clips=10)
    assert stats == expected and stats.n_clips == 5
    cache = shards_dir.parent / "manifest.norm.json"
    cached = json.loads(cache.read_text())
    assert cached["mean"] == list(stats.mean) and cached["max_clips"] == 10

    cached["mean"] = [0.5, 0.5, 0.5]  # a cache hit returns the file's numbers...
    cache.write_text(json.dumps(cached))
    assert ClipNormalization.from_manifest(manifest, shards_dir, max_clips=10).mean == (0.5, 0.5, 0.5)
    _reject(manifest, keys[2])  # ...until the manifest changes
    assert ClipNormalization.from_manifest(manifest, shards_dir, max_clips=10).n_clips == 4

    loader = _loader(shards_dir, epoch_length=6, batch_size=1)
    seen = {k for b in _epoch_keys(loader, 0) for k in b}
    assert keys[1] not in seen and keys[2] not in seen


def _reject(manifest: Path, key: str) -> None:
    rows = read_manifest(manifest).to_pylist()
    for row in rows:
        if row["clip_id"] == key:
            row.update(status="rejected", reason="qc_low_motion")
    write_manifest(rows, manifest)
