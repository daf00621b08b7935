"""End to end: `echofm ingest` (the Prefect flow on a real local API) on a synthetic archive with
faults plus pydicom's real ultrasound files; re-run, added files, Dask, a corrupted manifest.

One ingestion per module (a module-scoped fixture) with several tests asserting on its output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echofm.cli import ingest as ingest_command
from echofm.data.manifest import manifest_parts, read_manifest
from echofm.data.shards import iter_shard

pytestmark = pytest.mark.slow

# What each synthetic fault must become: (status, reason).
EXPECTED_FAULTS = {
    "truncated": ("failed", "corrupt_pixel_data"),
    "corrupt_video": ("failed", "unreadable_video"),
    "empty": ("rejected", "empty_file"),
    "not_dicom": ("rejected", "not_media"),
    "not_ultrasound": ("rejected", "not_ultrasound"),
    "single_frame": ("rejected", "too_few_frames"),
    "duplicate": ("rejected", "duplicate"),
    "frozen": ("rejected", "frozen"),
    "blank": ("rejected", "blank"),
}
# pydicom's real ultrasound files: SonoSite 30-frame cine, and single frames (Philips palette,
# GE JPEG 2000, RGB) that are stills, not cines.
REAL_FILES = {
    "examples_ybr_color.dcm": ("accepted", None),
    "examples_palette.dcm": ("rejected", "too_few_frames"),
    "examples_jpeg2k.dcm": ("rejected", "too_few_frames"),
    "examples_rgb_color.dcm": ("rejected", "too_few_frames"),
}
SYNTH_OPTIONS: dict[str, Any] = {
    "sizes": ((240, 320),),
    "max_frames": 40,
    "duration_range_s": (1.0, 1.4),
    "fps_range": (25, 40),
}


def main(argv: list[str]) -> int:
    """`echofm ingest ...` through its command module (the CLI minus the other sub-commands)."""
    parser = argparse.ArgumentParser(prog="echofm")
    ingest_command.add_parser(parser.add_subparsers(dest="command"))
    return ingest_command.run(parser.parse_args(argv))


def _generate(out: Path, n_clips: int, seed: int, faults: bool) -> Path:
    from echofm.synth.archive import generate_archive

    generate_archive(out, n_clips, seed, faults=faults, **SYNTH_OPTIONS)
    return out


def _digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ingest-e2e")
    synth = _generate(root / "synth", 12, 7, faults=True)
    source = root / "source"
    shutil.copytree(synth / "archive", source)
    from pydicom.data import get_testdata_file

    (source / "real").mkdir()
    for name in REAL_FILES:
        shutil.copy(get_testdata_file(name), source / "real" / name)
    output = root / "output"
    code = main(["ingest", str(source), str(output), "--batch-size", "6", "--workers", "2"])
    return {"root": root, "synth": synth, "source": source, "output": output, "code": code}


def _manifest(output: Path, source: Path) -> pd.DataFrame:
    """The manifest, with the name of each row's file added as `file` (the manifest itself names
    files by keyed id only; the test knows the names and the key)."""
    from echofm.io.deid import Pseudonymizer, load_secret

    keyed = Pseudonymizer(load_secret())
    names = {keyed.source_id(rel): rel for rel in (p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())}
    manifest = read_manifest(output / "manifest.parquet").to_pandas()
    return manifest.assign(file=manifest["source_id"].map(names))


def test_run_completes_with_every_file_accounted_for(world: dict[str, Any]) -> None:
    assert world["code"] == 0
    manifest = _manifest(world["output"], world["source"])
    discovered = {p.relative_to(world["source"]).as_posix() for p in world["source"].rglob("*") if p.is_file()}
    assert set(manifest["file"]) == discovered and manifest["file"].notna().all()
    assert manifest["clip_id"].is_unique
    assert set(manifest["status"]) <= {"accepted", "rejected", "failed"}
    assert (world["output"] / "qc" / "validation.json").exists()
    assert not (world["output"] / ".parts").exists() or not any((world["output"] / ".parts").iterdir())


def test_statuses_and_reasons_per_fault(world: dict[str, Any]) -> None:
    manifest = _manifest(world["output"], world["source"])
    labels = pd.read_csv(world["synth"] / "labels.csv", keep_default_na=False)
    fate = {row.file: (row.status, row.reason if isinstance(row.reason, str) else None) for row in manifest.itertuples()}
    for label in labels.itertuples():
        if label.fault:
            assert fate[label.file] == EXPECTED_FAULTS[label.fault], (label.file, label.fault)
        else:
            assert fate[label.file] == ("accepted", None), (label.file, label.variant)
    for name, expected in REAL_FILES.items():
        assert fate[f"real/{name}"] == expected
    failed = manifest[manifest["status"] == "failed"]
    assert failed["error_class"].notna().all() and failed["error_message"].notna().all()


def test_accepted_clips_load_and_keep_their_views(world: dict[str, Any]) -> None:
    import echofm

    manifest = _manifest(world["output"], world["source"])
    labels = pd.read_csv(world["synth"] / "labels.csv", keep_default_na=False).set_index("file")
    accepted = manifest[manifest["status"] == "accepted"]
    for row in accepted.itertuples():
        clip = echofm.load_clip(world["output"], row.clip_id)
        assert clip.dtype == np.uint8 and clip.shape[:3] == (32, 224, 224) and clip.shape[3] in (1, 3)
        assert row.key == row.clip_id and row.shard.endswith(".tar")
        if row.file in labels.index and row.view not in ("unknown", "OTHER_CARDIAC"):
            assert row.view == labels.loc[row.file, "view"]


def _boxes(text: str) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in box.split(";")) for box in text.split("|") if box]  # type: ignore[misc]


def test_sector_exterior_is_zero(world: dict[str, Any]) -> None:
    """Burned-in text boxes and the ECG strip, mapped through resize_pad, are zero in stored clips."""
    manifest = _manifest(world["output"], world["source"])
    labels = pd.read_csv(world["synth"] / "labels.csv", keep_default_na=False).set_index("file")
    samples = {
        key: frames
        for shard in sorted((world["output"] / "shards").glob("*.tar"))
        for key, frames, _ in iter_shard(shard)
    }
    checked = 0
    for row in manifest[manifest["status"] == "accepted"].itertuples():
        if row.file not in labels.index:
            continue
        label = labels.loc[row.file]
        h, w = int(label["height"]), int(label["width"])
        scale = 224 / max(h, w)
        top, left = (224 - round(h * scale)) // 2, (224 - round(w * scale)) // 2
        frames = samples[row.key]
        for x0, y0, x1, y1 in _boxes(label["text_boxes"]) + _boxes(label["ecg_box"]):
            # Shrink by 2 output pixels: area interpolation blends the box edge with the sector.
            r0, r1 = top + int(np.ceil(y0 * scale)) + 2, top + int(y1 * scale) - 2
            c0, c1 = left + int(np.ceil(x0 * scale)) + 2, left + int(x1 * scale) - 2
            if r1 > r0 and c1 > c0:
                assert frames[:, r0:r1, c0:c1].max() == 0, (row.file, (x0, y0, x1, y1))
                checked += 1
        assert frames[:, :2, :2].max() == 0 and frames[:, -2:, -2:].max() == 0
    assert checked >= 10


def _artifact_texts() -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    return [json.dumps(a.data) + (a.description or "") for a in artifacts]


def test_no_phi_in_any_output(world: dict[str, Any]) -> None:
    phi = json.loads((world["synth"] / "phi.json").read_text())
    # Strings shorter than 6 characters ("2D", "G 55") occur by chance in compressed bytes.
    needles = sorted({s.lower().encode() for s in phi["all"] if len(s) >= 6})
    needles += [b"sonosite"]  # never copied from the real files' headers either
    assert len(needles) > 20
    texts = [p.read_bytes().lower() for p in world["output"].rglob("*") if p.is_file()]
    manifest = read_manifest(world["output"] / "manifest.parquet").to_pandas()
    texts += [str(value).lower().encode() for value in manifest.astype(str).to_numpy().ravel()]
    artifacts = _artifact_texts()
    assert any("ingestion into" in text.lower() for text in artifacts)
    texts += [text.lower().encode() for text in artifacts]
    found = {needle for needle in needles for text in texts if needle in text}
    assert not found


def test_rerun_is_idempotent_and_added_files_are_ingested_alone(world: dict[str, Any]) -> None:
    output, source = world["output"], world["source"]
    manifest_before = _digest(manifest_parts(output / "manifest.parquet"))
    shards_before = _digest(sorted((output / "shards").glob("*.tar")))
    assert main(["ingest", str(source), str(output), "--workers", "1"]) == 0
    assert _digest(manifest_parts(output / "manifest.parquet")) == manifest_before
    assert _digest(sorted((output / "shards").glob("*.tar"))) == shards_before

    extra = _generate(world["root"] / "extra", 1, 99, faults=False)
    added = sorted(p for p in (extra / "archive").rglob("*") if p.is_file())
    (source / "added").mkdir()
    for path in added:
        shutil.copy(path, source / "added" / path.name)
    before = _manifest(output, source)
    assert main(["ingest", str(source), str(output), "--workers", "1"]) == 0
    after = _manifest(output, source)
    new = after[~after["clip_id"].isin(before["clip_id"])]
    assert sorted(new["file"]) == sorted(f"added/{p.name}" for p in added)
    assert (new["status"] == "accepted").all()
    assert new["ingest_run_id"].nunique() == 1 and not new["ingest_run_id"].isin(before["ingest_run_id"]).any()
    unchanged = after[after["clip_id"].isin(before["clip_id"])].drop(columns=[]).reset_index(drop=True)
    pd.testing.assert_frame_equal(unchanged, before.reset_index(drop=True))
    new_shards = set(p.name for p in (output / "shards").glob("*.tar")) - set(shards_before)
    assert new_shards == set(new["shard"])


def test_dask_cluster_gives_the_same_manifest(world: dict[str, Any], tmp_path: Path) -> None:
    from distributed import LocalCluster

    source = tmp_path / "subset"
    source.mkdir()
    reference = _manifest(world["output"], world["source"])
    accepted = reference[(reference["status"] == "accepted") & ~reference["file"].str.startswith("added/")]
    picked = accepted["file"].unique()[:4]
    for rel in picked:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(world["source"] / rel, source / rel)
    output = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code = main(["ingest", str(source), str(output), "--batch-size", "2", "--dask-address", cluster.scheduler_address])
    assert code == 0
    got = _manifest(output, source)
    columns = ["clip_id", "source_id", "status", "reason", "view", "content_hash"]
    want = reference[reference["file"].isin(picked)][columns].sort_values("clip_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[columns].sort_values("clip_id").reset_index(drop=True), want)


def test_corrupted_manifest_fails_the_contract(world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "corrupted"
    shutil.copytree(world["output"], output)
    (part,) = manifest_parts(output / "manifest.parquet")[:1]
    table = pq.read_table(part)
    # Schema-valid but against the contract: an accepted clip at 2 fps.
    fps = table["fps"].to_pylist()
    status = table["status"].to_pylist()
    fps[status.index("accepted")] = 2.0
    table = table.set_column(table.schema.get_field_index("fps"), "fps", pa.array(fps, pa.float64()))
    pq.write_table(table, part)
    code = main(["ingest", str(world["source"]), str(output), "--workers", "1"])
    assert code != 0
    assert "contract" in capsys.readouterr().err


def test_completed_event_reaches_the_api(world: dict[str, Any]) -> None:
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from flows.ingest import COMPLETED_EVENT

    manifest = _manifest(world["output"], world["source"])
    first_run = manifest.loc[manifest["file"] == "real/examples_ybr_color.dcm", "ingest_run_id"].iloc[0]
    accepted = int(((manifest["status"] == "accepted") & (manifest["ingest_run_id"] == first_run)).sum())
    resource = f"echofm.archive.{world['output'].name}"
    events: list[Any] = []
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            page = client.read_events(filter=EventFilter(event=EventNameFilter(name=[COMPLETED_EVENT])), limit=50)
            events = [e for e in page.events if e.resource.id == resource]
            if any(e.payload.get("new_accepted") == accepted for e in events):
                break
            time.sleep(0.5)
    # The first run's event announces the clips it accepted (later runs announce their own).
    assert any(e.payload.get("new_accepted") == accepted for e in events), [e.payload for e in events]


def test_a_second_ingestion_into_a_locked_output_is_refused(world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from tests.factories.servers import output_lock_holder

    output = tmp_path / "busy"
    with output_lock_holder(output) as holder:
        started = time.monotonic()
        code = main(["ingest", str(world["source"]), str(output), "--workers", "1"])
        assert code == 2
        assert time.monotonic() - started < 60  # refused before any planning, not after a run
        err = capsys.readouterr().err
        assert "being written by another ingestion" in err and f"pid {holder.pid}" in err
        assert not (output / "manifest.parquet").exists() and not (output / "shards").exists()
