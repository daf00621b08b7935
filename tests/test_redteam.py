"""Red team: a PACS-style export with a marker in every channel, through the commands a data team
runs (ingest, pretrain two steps, fine-tune on path-named labels, register), then every byte they
left searched for every marker, and every stored clip compared with its text-free twin.

The archive is `tests/factories/redteam.py`. Searched: OUTPUT (shards, manifest, Data Docs), the
runs (checkpoints, figures, MLflow store and artifacts), the Prefect home and the session's Prefect
database (the harness's server, which the commands report to), and what each command printed; in
UTF-8, Latin-1, UTF-16 and JSON/HTML/URL escapes, inside Parquet, zip, tar, gzip and PNG text.
Not searched: the label table and the path map (the data team's own files, outside every output).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echofm.data.manifest import read_manifest
from echofm.data.shards import iter_shard
from echofm.io.deid import Pseudonymizer, load_secret, read_path_map, write_secret_file
from echofm.preprocess.resample import mask_at_size, resize_pad
from tests.factories.redteam import MARKERS, build_redteam, find_markers

pytestmark = pytest.mark.slow


def _echofm(args: list[str], env: dict[str, str], log: list[str]) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "echofm"), *args], env=env, capture_output=True, text=True,
                          errors="surrogateescape", timeout=600)
    log += [done.stdout, done.stderr]
    assert done.returncode == 0, f"echofm {args[0]} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Any]:
    """The archive ingested by `echofm ingest` against the session's Prefect server, and its twin
    ingested in this process (only its pixels are compared)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL

    from echofm.ingest.config import IngestConfig
    from echofm.ingest.run import ingest_serially

    root = tmp_path_factory.mktemp("redteam")
    archive = build_redteam(root / "export")
    private = root / "private"
    key, path_map = write_secret_file(private / "echofm.key"), private / "paths.parquet"
    output, home = root / "out", root / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k not in ("ECHOFM_DEID_SECRET", "MLFLOW_TRACKING_URI")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=str(PREFECT_API_URL.value()), PYTHONIOENCODING="utf-8")
    printed: list[str] = []
    _echofm(["ingest", str(archive.source), str(output), "--secret-file", str(key), "--path-map", str(path_map),
             "--workers", "1"], env, printed)
    ingest_serially(archive.twin_source, root / "twin-out", IngestConfig(secret_file=str(key)))
    database = Path(str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split("///", 1)[1]).parent
    return {"root": root, "archive": archive, "key": key, "path_map": path_map, "output": output, "env": env,
            "twin_output": root / "twin-out", "searched": [output, home, database], "printed": printed,
            "keyed": Pseudonymizer(load_secret(secret_file=key))}


@pytest.fixture(scope="module")
def trained(ingested: dict[str, Any]) -> dict[str, Any]:
    """Two pretraining steps (reconstruction figures, the encoder registered) and one fine-tuning
    epoch on the path-named labels, registered too."""
    runs, env, key, printed = ingested["root"] / "runs", ingested["env"], ingested["key"], ingested["printed"]
    shards = ingested["output"] / "shards"
    _echofm(["pretrain", "--shards", str(shards), "--steps", "2", "--batch-size", "2", "--img-size", "32",
             "--num-frames", "8", "--num-workers", "0", "--holdout-clips", "2", "--eval-every", "2",
             "--ckpt-every", "2", "--out", str(runs / "pretrain")], env, printed)
    _echofm(["finetune", "--task", "ef", "--shards", str(shards), "--labels", str(ingested["archive"].labels),
             "--encoder", str(runs / "pretrain"), "--epochs", "1", "--val-fraction", "0.2", "--test-fraction", "0.2",
             "--out", str(runs / "finetune"), "--register", "--secret-file", str(key)], env, printed)
    return {**ingested, "searched": [*ingested["searched"], runs]}


def _secret_forms(key: Path) -> set[bytes]:
    secret = load_secret(secret_file=key)
    return {secret, secret.hex().encode(), key.read_text().strip().encode()}


def test_the_search_finds_a_marker_in_every_encoding_and_container(tmp_path: Path) -> None:
    """The search below can fail: a path column in a (compressed) Parquet file, a name in UTF-16,
    JSON-escaped, upper-cased or inside a zip are all found."""
    import zipfile

    name = "DOE^JOHN_" + MARKERS["folder"] + "/IMG0001.dcm"
    pq.write_table(pa.table({"source_path": [name] * 50}), tmp_path / "manifest.parquet", compression="zstd")
    (tmp_path / "log.txt").write_bytes(MARKERS["utf8_name"].encode("utf-16-le"))
    (tmp_path / "state.json").write_text(json.dumps({"p": MARKERS["charset"] + "\u00d8"}))
    with zipfile.ZipFile(tmp_path / "ckpt.pt", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.pkl", MARKERS["banner"].upper() * 20)
    found = {channel for channel, _ in find_markers([tmp_path], [MARKERS["patient_id"].lower()], set())}
    assert found == {"folder", "utf8_name", "charset", "banner", "patient_id"}


def test_every_file_has_a_row_and_the_odd_name_does_not_stop_the_run(ingested: dict[str, Any]) -> None:
    archive, keyed = ingested["archive"], ingested["keyed"]
    manifest = read_manifest(ingested["output"] / "manifest.parquet").to_pandas()
    expected = {keyed.source_id(f.rel_path) for f in archive.files} | {keyed.source_id(p) for p in archive.other_files}
    assert set(manifest["source_id"]) == expected
    status = dict(zip(manifest["source_id"], manifest["status"]))
    assert all(status[keyed.source_id(f.rel_path)] == "accepted" for f in archive.files), manifest[["status", "reason"]]
    assert status[keyed.source_id(archive.other_files[1])] == "failed"
    # The map back to the names lies outside OUTPUT, private, and covers every row.
    assert stat.S_IMODE(ingested["path_map"].stat().st_mode) == 0o600
    assert read_path_map(ingested["path_map"])[keyed.source_id(archive.files[3].rel_path)] == archive.files[3].rel_path
    assert set(read_path_map(ingested["path_map"])) == expected


def test_no_marker_and_no_key_in_any_byte_of_any_output(trained: dict[str, Any]) -> None:
    searched = trained["searched"]
    files = [path for folder in searched for path in folder.rglob("*") if path.is_file()]
    # The stores are there to be searched: the Prefect database, the MLflow store, figures, shards.
    assert {".db", ".png", ".tar", ".parquet", ".html"} <= {path.suffix for path in files}, searched
    assert any(path.name.startswith("prefect") and path.suffix == ".db" for path in files)
    assert not find_markers(searched, trained["printed"], _secret_forms(trained["key"]))


def _stored(output: Path, keyed_ids: dict[str, str]) -> dict[str, np.ndarray]:
    """Stored frames by source id."""
    manifest = read_manifest(output / "manifest.parquet").to_pandas()
    accepted = manifest[manifest["status"] == "accepted"]
    frames = {key: clip for shard in sorted((output / "shards").glob("*.tar")) for key, clip, _ in iter_shard(shard)}
    return {row.source_id: frames[row.key] for row in accepted.itertuples() if row.source_id in keyed_ids}


def _channels(frames: np.ndarray) -> np.ndarray:
    """`[T, H, W]` or `[T, H, W, C]` frames as `[T, H, W, C]`."""
    return frames if frames.ndim == 4 else frames[..., None]


def test_stored_clips_hold_no_text_pixel_and_no_ecg(ingested: dict[str, Any]) -> None:
    """Against the twin, through the same chain: a text pixel is one where the drawn text raised the
    resized clip by at least 24 grey levels in every frame (a footprint that only grazes a glyph
    cannot be told from inpainting error); it is kept when the stored pixel is still brighter than
    the twin's by a quarter of that (at least 12) in every frame, and steady, as text is. None may be."""
    archive, keyed = ingested["archive"], ingested["keyed"]
    ids = {keyed.source_id(f.rel_path): f for f in archive.files}
    marked, twins = _stored(ingested["output"], ids), _stored(ingested["twin_output"], ids)
    assert set(marked) == set(twins) == set(ids)
    text_pixels = 0
    for source_id, item in ids.items():
        out, twin = marked[source_id].astype(np.int16), twins[source_id].astype(np.int16)
        drawn = resize_pad(_channels(item.clip.marked.frames)).astype(np.int16) - resize_pad(_channels(item.clip.twin.frames))
        added = drawn.max(axis=3).min(axis=0)
        text = mask_at_size(item.clip.text_pixels(), 224, whole=False) & (added >= 24)
        shown = (twin.max(axis=3) > 0).all(axis=0) & text  # inside both sectors
        brighter = ((out - twin).max(axis=3) > np.maximum(12, added / 4)).all(axis=0)
        steady = (out.max(axis=0) - out.min(axis=0)).max(axis=2) <= 6
        kept = shown & brighter & steady
        assert not kept.any(), (item.rel_path, int(kept.sum()))
        # Outside the fan (the banner, the part of the edge label past the fan) all is zero, but for
        # the fan's border pixel: lossy JPEG rings the edge label into it, and the fan is found
        # from the pixels to one source pixel (measured: nothing is kept two pixels out).
        fan = cv2.dilate(item.clip.marked.sector.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        outside = mask_at_size(item.clip.text_pixels(), 224, whole=False) & ~mask_at_size(fan, 224, whole=False)
        assert out[:, outside].max(initial=0) == 0, item.rel_path
        text_pixels += int(text.sum())
        if item.ecg_close:
            x0, y0, x1, y1 = item.clip.marked.ecg_box
            ecg = np.zeros(item.clip.marked.sector.shape, bool)
            ecg[y0 : y1 + 1, x0 : x1 + 1] = True
            trace = mask_at_size(ecg & ~item.clip.marked.sector.astype(bool), 224, whole=True)
            assert out[:, trace].max(initial=0) == 0, item.rel_path
    assert text_pixels > 1000


def test_labels_named_by_path_joined_through_the_key(trained: dict[str, Any]) -> None:
    result = json.loads(next(text for text in trained["printed"] if '"task": "ef"' in text))
    labelled = len(pd.read_csv(trained["archive"].labels))
    assert sum(split["clips"] for split in result["counts"].values()) == labelled
    assert result["registered"]["model_uri"].startswith("models:/echofm-ef/")
