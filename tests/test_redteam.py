"""Red team: a PACS-style export with a marker in every channel, through the commands a data team
runs (ingest, pretrain two steps, fine-tune and score, register), then every byte they left
searched for every marker, and every stored clip compared with its text-free twin.

The archive is `tests/factories/redteam.py`. Searched: OUTPUT (shards, manifest, Data Docs),
the runs (checkpoints, figures, MLflow store and artifacts), the Prefect home (its database),
and what each command printed; in UTF-8, Latin-1, UTF-16 and JSON/HTML/URL escapes. Not
searched: the label table and the path map (the data team's own files, outside every output).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from echofm.data.manifest import read_manifest
from echofm.data.shards import iter_shard
from echofm.io.deid import Pseudonymizer, load_secret, read_path_map, write_secret_file
from echofm.preprocess.resample import mask_at_size
from tests.factories.redteam import MARKERS, build_redteam, needles

pytestmark = pytest.mark.slow


def _echofm(args: list[str], env: dict[str, str], log: list[str]) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "echofm"), *args], env=env, capture_output=True, text=True,
                          timeout=600)
    log += [done.stdout, done.stderr]
    assert done.returncode == 0, f"echofm {args[0]} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("redteam")
    archive = build_redteam(root / "export")
    private = root / "private"
    key, path_map = write_secret_file(private / "echofm.key"), private / "paths.parquet"
    output, runs, home = root / "out", root / "runs", root / "prefect"
    env = {k: v for k, v in os.environ.items() if k not in ("ECHOFM_DEID_SECRET", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(home), PYTHONIOENCODING="utf-8")
    printed: list[str] = []
    _echofm(["ingest", str(archive.source), str(output), "--secret-file", str(key), "--path-map", str(path_map),
             "--workers", "1"], env, printed)
    _echofm(["pretrain", "--shards", str(output / "shards"), "--steps", "2", "--batch-size", "2", "--img-size", "32",
             "--num-frames", "8", "--num-workers", "0", "--holdout-clips", "2", "--eval-every", "2",
             "--ckpt-every", "2", "--out", str(runs / "pretrain")], env, printed)
    _echofm(["finetune", "--task", "ef", "--shards", str(output / "shards"), "--labels", str(archive.labels),
             "--encoder", str(runs / "pretrain"), "--epochs", "1", "--val-fraction", "0.2", "--test-fraction", "0.2",
             "--out", str(runs / "finetune"), "--register", "--secret-file", str(key)], env, printed)
    # The twins, without Prefect: only their pixels are compared.
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.run import ingest_serially

    ingest_serially(archive.twin_source, root / "twin-out", IngestConfig(secret_file=str(key)))
    return {"archive": archive, "key": key, "path_map": path_map, "output": output, "twin_output": root / "twin-out",
            "searched": [output, runs, home], "printed": printed, "keyed": Pseudonymizer(load_secret(secret_file=key))}


def test_every_file_has_a_row_and_the_odd_name_does_not_stop_the_run(run: dict[str, Any]) -> None:
    archive, keyed = run["archive"], run["keyed"]
    manifest = read_manifest(run["output"] / "manifest.parquet").to_pandas()
    expected = {keyed.source_id(f.rel_path) for f in archive.files} | {keyed.source_id(p) for p in archive.other_files}
    assert set(manifest["source_id"]) == expected
    status = dict(zip(manifest["source_id"], manifest["status"]))
    assert all(status[keyed.source_id(f.rel_path)] == "accepted" for f in archive.files), manifest[["status", "reason"]]
    assert status[keyed.source_id(archive.other_files[1])] == "failed"
    # The map back to the names lies outside OUTPUT, private, and covers every row.
    assert stat.S_IMODE(run["path_map"].stat().st_mode) == 0o600
    assert read_path_map(run["path_map"])[keyed.source_id(archive.files[3].rel_path)] == archive.files[3].rel_path
    assert set(read_path_map(run["path_map"])) == expected


def test_no_marker_and_no_key_in_any_byte_of_any_output(run: dict[str, Any]) -> None:
    secret = load_secret(secret_file=run["key"])
    wanted = {name: needles(marker) for name, marker in MARKERS.items()}
    wanted["secret"] = {secret.lower(), secret.hex().encode(), run["key"].read_text().strip().encode()}
    blobs = [(str(p), p.read_bytes().lower()) for folder in run["searched"] for p in folder.rglob("*") if p.is_file()]
    blobs += [(f"printed {i}", text.lower().encode("utf-8", "surrogateescape")) for i, text in enumerate(run["printed"])]
    assert len(blobs) > 50 and any(name.endswith(".db") for name, _ in blobs)  # the Prefect and MLflow stores
    found = sorted({(channel, where) for channel, forms in wanted.items() for where, blob in blobs
                    for form in forms if form in blob})
    assert not found


def _stored(output: Path, keyed_ids: dict[str, str]) -> dict[str, np.ndarray]:
    """Stored frames by source id."""
    manifest = read_manifest(output / "manifest.parquet").to_pandas()
    accepted = manifest[manifest["status"] == "accepted"]
    frames = {key: clip for shard in sorted((output / "shards").glob("*.tar")) for key, clip, _ in iter_shard(shard)}
    return {row.source_id: frames[row.key] for row in accepted.itertuples() if row.source_id in keyed_ids}


def test_stored_clips_hold_no_text_pixel_and_no_ecg(run: dict[str, Any]) -> None:
    """Against the twin: where the text was drawn, a stored pixel that still shows it (brighter than
    the twin's pixel in every frame and steady, as the text is) is kept text. None may be."""
    archive, keyed = run["archive"], run["keyed"]
    ids = {keyed.source_id(f.rel_path): f for f in archive.files}
    marked, twins = _stored(run["output"], ids), _stored(run["twin_output"], ids)
    assert set(marked) == set(twins) == set(ids)
    text_pixels = 0
    for source_id, item in ids.items():
        out, twin = marked[source_id].astype(np.int16), twins[source_id].astype(np.int16)
        text = mask_at_size(item.clip.text_pixels(), 224, whole=False)
        shown = (twin.max(axis=3) > 0).all(axis=0) & text  # inside both sectors
        brighter = ((out - twin).max(axis=3) > 12).all(axis=0)
        steady = (out.max(axis=0) - out.min(axis=0)).max(axis=2) <= 6
        kept = shown & brighter & steady
        assert not kept.any(), (item.rel_path, int(kept.sum()))
        # Outside the fan (the banner, the part of the edge label past the fan) all is zero.
        outside = text & ~mask_at_size(item.clip.marked.sector.astype(bool), 224, whole=False)
        assert out[:, outside].max(initial=0) == 0, item.rel_path
        text_pixels += int(text.sum())
        if item.ecg_close:
            x0, y0, x1, y1 = item.clip.marked.ecg_box
            ecg = np.zeros(item.clip.marked.sector.shape, bool)
            ecg[y0 : y1 + 1, x0 : x1 + 1] = True
            trace = mask_at_size(ecg & ~item.clip.marked.sector.astype(bool), 224, whole=True)
            assert out[:, trace].max(initial=0) == 0, item.rel_path
    assert text_pixels > 2000


def test_labels_named_by_path_joined_through_the_key(run: dict[str, Any]) -> None:
    import json

    result = json.loads(next(text for text in run["printed"] if '"task": "ef"' in text))
    labelled = len(pd.read_csv(run["archive"].labels))
    assert sum(split["clips"] for split in result["counts"].values()) == labelled
    assert result["registered"]["model_uri"].startswith("models:/echofm-ef/")
