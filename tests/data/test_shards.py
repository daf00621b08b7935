from __future__ import annotations

import numpy as np
import pytest
import webdataset as wds

from echofm.data.codec import decode_clip
from echofm.data.shards import (
    DuplicateKey,
    InvalidKey,
    ShardExists,
    ShardWriter,
    iter_shard,
    read_shard_sample,
    remove_partial_shards,
    remove_unlisted_shards,
)


def _clip(seed: int, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(4, 16, 16, channels), dtype=np.uint8)


def test_writer_rolls_shards_and_renames_when_complete(tmp_path):
    written = {}
    with ShardWriter(tmp_path, prefix="batch-0003", max_count=2, codec="zlib") as writer:
        for i in range(5):
            shard, key = writer.write(f"clip{i}", _clip(i), {"clip_id": f"clip{i}", "fps": 50.0})
            written[key] = shard
            # While open, the current shard is only visible as .tar.tmp.
            assert not (tmp_path / "shards" / shard).exists() or i % 2 == 1
    files = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert files == ["batch-0003-000000.tar", "batch-0003-000001.tar", "batch-0003-000002.tar"]
    assert written["clip0"] == written["clip1"] == "batch-0003-000000.tar"
    assert written["clip4"] == "batch-0003-000002.tar"
    # Every clip reads back exactly, from the shard the writer reported.
    for shard in set(written.values()):
        for key, frames, meta in iter_shard(tmp_path / "shards" / shard):
            assert written[key] == shard
            np.testing.assert_array_equal(frames, _clip(int(key[4:])))
            assert meta == {"clip_id": key, "fps": 50.0}
    frames, meta = read_shard_sample(tmp_path / "shards" / written["clip3"], "clip3")
    np.testing.assert_array_equal(frames, _clip(3))
    with pytest.raises(KeyError):
        read_shard_sample(tmp_path / "shards" / written["clip3"], "clip0")


def test_completed_shard_reads_through_webdataset(tmp_path):
    with ShardWriter(tmp_path, prefix="b1", codec="npy") as writer:
        for i in range(3):
            writer.write(f"c{i}", _clip(i, channels=3), {"clip_id": f"c{i}"})
    url = str(tmp_path / "shards" / "b1-000000.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["c0", "c1", "c2"]
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(decode_clip(sample), _clip(i, channels=3))


def test_byte_limit_starts_a_new_shard(tmp_path):
    with ShardWriter(tmp_path, prefix="b", max_bytes=7000, codec="npy") as writer:
        names = [writer.write(f"c{i}", _clip(i), {})[0] for i in range(3)]
    # One npy clip takes 3 KB of tar blocks (frames + meta + headers): two fit in 7000 bytes.
    assert names == ["b-000000.tar", "b-000000.tar", "b-000001.tar"]


def test_exception_mid_way_leaves_only_partial_shard(tmp_path):
    class Interrupted(RuntimeError):
        pass

    with pytest.raises(Interrupted):
        with ShardWriter(tmp_path, prefix="b7", max_count=2) as writer:
            for i in range(3):
                writer.write(f"c{i}", _clip(i), {})
            raise Interrupted
    shards = tmp_path / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["b7-000000.tar", "b7-000001.tar.tmp"]
    removed = remove_partial_shards(shards)
    assert [p.name for p in removed] == ["b7-000001.tar.tmp"]
    assert sorted(p.name for p in shards.iterdir()) == ["b7-000000.tar"]
    # A completed shard nobody references (its manifest rows never got written) can go too.
    assert [p.name for p in remove_unlisted_shards(shards, keep=[])] == ["b7-000000.tar"]
    assert list(shards.iterdir()) == []
    assert remove_partial_shards(tmp_path / "missing") == []


def test_keys_are_validated_and_unique(tmp_path):
    with ShardWriter(tmp_path, prefix="b") as writer:
        for bad in ["a.b", "a/b", "", "_meta", "clip 1"]:
            with pytest.raises(InvalidKey):
                writer.write(bad, _clip(0), {})
        writer.write("ok_1-2", _clip(0), {})
        with pytest.raises(DuplicateKey):
            writer.write("ok_1-2", _clip(1), {})
    with pytest.raises(InvalidKey):
        ShardWriter(tmp_path, prefix="bad.prefix")


def test_prefix_collision_fails_loudly_and_empty_writer_writes_nothing(tmp_path):
    with ShardWriter(tmp_path, prefix="b") as writer:
        writer.write("c0", _clip(0), {})
    with pytest.raises(ShardExists):
        with ShardWriter(tmp_path, prefix="b") as writer:
            writer.write("c1", _clip(1), {})
    with ShardWriter(tmp_path, prefix="b", overwrite=True) as writer:
        writer.write("c1", _clip(1), {})
    assert [k for k, _, _ in iter_shard(tmp_path / "shards" / "b-000000.tar")] == ["c1"]
    with ShardWriter(tmp_path, prefix="empty") as writer:
        assert writer.close() == []
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["b-000000.tar"]


def test_ingestion_side_of_the_shards_does_not_import_torch() -> None:
    # Ingestion workers write shards; torch (pulled in by webdataset) would cost each ~600 MB.
    import subprocess
    import sys

    code = "import sys, echofm.data.shards, echofm.ingest.batch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
