"""Object storage end to end against a real S3-compatible server (moto's `moto_server`) on
localhost: ingestion from and into `s3://`, whole-object shard writes, pretraining from shard
URLs with MLflow artifacts on S3, fine-tuning from shard URLs."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from echofm.bench.ingest import _cine, write_jpeg_dicom
from echofm.data import storage
from echofm.data.manifest import manifest_parts, read_manifest
from tests.factories.servers import mlflow_server_process, s3_server, wait_for_http

pytestmark = pytest.mark.slow
SECRET = "object-storage-test-secret-32-bytes"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The server, its AWS environment in this process (and so in every child), two buckets."""
    root = tmp_path_factory.mktemp("s3")
    with s3_server(root) as env:
        saved = {key: os.environ.get(key) for key in [*env, "ECHOFM_DEID_SECRET"]}
        os.environ.update(env, ECHOFM_DEID_SECRET=SECRET)
        fs, _ = storage.filesystem("s3://archive")
        for bucket in ("archive", "echo", "mlflow"):
            fs.mkdir(bucket)
        try:
            yield fs
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _upload_archive(fs: object, tmp_path: Path) -> str:
    local = tmp_path / "archive"
    (local / "site1").mkdir(parents=True)
    write_jpeg_dicom(local / "site1" / "a.dcm", _cine(40, (240, 320), seed=1), fps=50.0)
    write_jpeg_dicom(local / "site1" / "b.dcm", _cine(40, (240, 320), seed=2), fps=50.0)
    (local / "site1" / "notes.txt").write_text("not an image")
    storage.upload_tree(local, "s3://archive/2026")
    return "s3://archive/2026"


def test_ingestion_reads_and_writes_object_storage(s3: object, tmp_path: Path) -> None:
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.run import ingest_serially
    from echofm.io.deid import Pseudonymizer

    source = _upload_archive(s3, tmp_path)
    output = "s3://echo/output"
    outcome = ingest_serially(source, output, IngestConfig(batch_size=2))
    keyed = Pseudonymizer(SECRET.encode())  # the secret this module's server environment sets
    fates = {row["source_id"]: (row["status"], row["reason"]) for row in outcome.new_rows}
    assert fates == {keyed.source_id("site1/a.dcm"): ("accepted", None), keyed.source_id("site1/b.dcm"): ("accepted", None),
                     keyed.source_id("site1/notes.txt"): ("rejected", "not_media")}
    objects = sorted(storage.name(p) for p in storage.glob(f"{output}/shards", "*"))
    assert objects and all(name.endswith(".tar") for name in objects)  # no temporary object left
    assert [storage.name(p) for p in manifest_parts(f"{output}/manifest.parquet")] == [f"part-{outcome.new_rows[0]['ingest_run_id']}.parquet"]
    assert read_manifest(f"{output}/manifest.parquet").num_rows == 3
    assert storage.exists(f"{output}/qc/validation.json")
    assert not storage.glob(f"{output}/.parts", "*.parquet")
    # The clips decode from the objects, and a re-run adds nothing.
    from echofm.data.loader import iter_shard_samples, decode_sample

    clips = [decode_sample(s) for s in iter_shard_samples(storage.glob(f"{output}/shards", "*.tar"))]
    assert [c.shape for c in clips] == [(32, 224, 224, 1)] * 2
    assert ingest_serially(source, output, IngestConfig(batch_size=2)).new_rows == []
    # The re-run trusted the discovery cache, keyed by the listing's ETag: an object rewritten
    # with other bytes of the same size gets a new ETag, so it is read again without --rehash.
    assert storage.exists(f"{output}/.discovery-cache.parquet")
    from echofm.ingest.run import plan_ingest

    assert plan_ingest(source, output, IngestConfig(batch_size=2)).n_read == 0
    assert all(version for _rel, _size, version in storage.walk_objects(source))
    rewritten = tmp_path / "notes.txt"
    rewritten.write_text("not an imagE")
    storage.upload(rewritten, f"{source}/site1/notes.txt")
    assert [row["reason"] for row in ingest_serially(source, output, IngestConfig(batch_size=2)).new_rows] == ["not_media"]


def test_an_object_is_visible_only_once_complete(s3: object, tmp_path: Path) -> None:
    # 12 MB in 5 MB parts: a multipart upload, whose parts are never visible as the object.
    local = tmp_path / "big.tar"
    local.write_bytes(np.random.default_rng(0).integers(0, 256, 12 << 20, dtype=np.uint8).tobytes())
    url = "s3://echo/atomic/big.tar"
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        fs, path = storage.filesystem(url)
        while not done.is_set():
            if fs.exists(path):
                seen.append(int(fs.info(path)["size"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        fs, path = storage.filesystem(url)
        fs.put_file(str(local), path, chunksize=5 << 20)
    finally:
        done.set()
        watcher.join()
    assert storage.size(url) == 12 << 20
    assert set(seen) <= {12 << 20}  # never a partial object


def test_pretraining_streams_shard_urls_and_mlflow_keeps_artifacts_on_s3(
    s3: object, downstream_archive, tmp_path: Path
) -> None:
    from echofm.pretrain.config import PretrainConfig
    from echofm.pretrain.loop import pretrain
    from echofm.store import tracking_uri_scope

    storage.upload_tree(downstream_archive.shards, "s3://echo/downstream/shards")
    (tmp_path / "mlflow").mkdir()
    with mlflow_server_process(tmp_path / "mlflow", artifacts="s3://mlflow/artifacts") as (process, url, log):
        wait_for_http(f"{url}/health", 180, process, log)
        config = PretrainConfig(preset="tiny", img_size=32, num_frames=16, steps=2, batch_size=2, num_workers=1,
                                eval_every=2, holdout_clips=3, experiment_name="s3-pretrain")
        # The scope restores MLflow's process-wide tracking URI (and its environment variable),
        # which pretraining sets, so later tests do not talk to this stopped server.
        with tracking_uri_scope(url):
            result = pretrain(config, "s3://echo/downstream/shards", tmp_path / "run")
            assert result.step == 2 and result.registered is not None
            artifacts = [path for path, _ in storage.walk_files("s3://mlflow/artifacts")]
            # The registered encoder (MLmodel + the checkpoint file) lives in the bucket.
            assert any(path.endswith("/MLmodel") for path in artifacts), artifacts[:20]
            assert any(path.endswith("/encoder.pt") for path in artifacts), artifacts[:20]
            import mlflow

            loaded = mlflow.pytorch.load_model(result.registered.model_uri)  # back from S3 through the server
            assert sum(p.numel() for p in loaded.parameters()) > 0
    assert os.environ.get("MLFLOW_TRACKING_URI") != url
    assert not (tmp_path / "mlflow" / "artifacts").exists()


def test_fine_tuning_reads_shard_urls(s3: object, downstream_archive, tmp_path: Path, one_torch_thread) -> None:
    from echofm.downstream.config import FinetuneConfig
    from echofm.downstream.finetune import finetune
    from echofm.downstream.splits import SplitConfig

    storage.upload_tree(downstream_archive.shards, "s3://echo/finetune/shards")
    storage.upload(downstream_archive.manifest_path, "s3://echo/finetune/manifest.parquet")
    config = FinetuneConfig(task="ef", epochs=1, strategy="linear", split=SplitConfig(seed=1))
    remote = finetune(config, encoder=downstream_archive.encoder_path, shards="s3://echo/finetune/shards",
                      labels=downstream_archive.labels_path, out_dir=tmp_path / "remote")
    local = finetune(config, encoder=downstream_archive.encoder_path, shards=downstream_archive.shards,
                     labels=downstream_archive.labels_path, out_dir=tmp_path / "local")
    assert remote.counts == local.counts
    assert remote.test_metrics == pytest.approx(local.test_metrics)
    shutil.rmtree(tmp_path / "remote")
