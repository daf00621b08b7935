"""`prepare_dataset` on a replica of every published layout: the normal ingestion, then
labels.parquet with the dataset's own identifiers, official splits and targets in the project's
column names; rows that became no clip are counted by reason; planted PHI reaches no output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from echofm.data.manifest import load_clip
from echofm.datasets.catalog import DATASETS
from echofm.datasets.prepare import REPORT_FILENAME, prepare_dataset
from tests.factories.public_datasets import BUILDERS, serial_ingest

pytestmark = pytest.mark.slow

TARGETS = {
    "echonet-dynamic": {"ef", "esv", "edv", "reduced_ef", "view", "ed_frame", "es_frame", "mask_file"},
    "echonet-pediatric": {"ef", "reduced_ef", "view", "ed_frame", "es_frame", "mask_file"},
    "echonet-lvh": {"ivs_mm", "lvid_mm", "lvpw_mm", "view"},
    "camus": {"ef", "edv", "esv", "view", "ed_frame", "es_frame", "image_quality", "mask_file"},
    "tmed-2": {"aortic_stenosis", "view"},
    "mimic-iv-echo": {"study", "ef"},
}


def _text_of(frame: pd.DataFrame) -> str:
    return " ".join(map(str, frame.astype(str).to_numpy().ravel().tolist() + list(frame.columns)))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_layout_is_prepared_end_to_end(name: str, prepared_replica) -> None:
    prepared = prepared_replica(name)
    labels = pd.read_parquet(prepared.labels_path)
    manifest = pd.read_parquet(prepared.manifest_path)
    accepted = set(manifest.loc[manifest["status"] == "accepted", "clip_id"])
    assert set(labels["clip_id"]) <= accepted and len(labels) == prepared.report.clips > 0
    assert set(labels.columns) == {"clip_id", "record", "patient", *(["split"] if "split" in labels else []),
                                   *TARGETS[prepared.name]}
    assert labels["record"].is_unique  # one window per cine at these lengths
    assert not labels["record"].str.contains("/").any()  # identifiers, never paths
    expected = {k: v for k, v in prepared.replica.splits.items() if v is not None}
    if expected:
        assert dict(zip(labels["record"].str.removesuffix(".avi"), labels["split"])) == expected
    else:
        assert "split" not in labels  # no official split: fine-tuning draws the patient split
    assert prepared.report.videos_accepted == len(labels)


def test_echonet_dynamic_targets_masks_and_unprepared_rows(prepared_replica) -> None:
    prepared = prepared_replica("echonet-dynamic")
    labels = pd.read_parquet(prepared.labels_path).set_index("record")
    row = labels.loc["0XA1B2C3D4E5F60000"]
    assert (row["ef"], row["edv"], row["reduced_ef"]) == (30.0, 100.0, 1.0)
    assert (row["ed_frame"], row["es_frame"]) == (0, 16)  # the larger traced cavity is ED
    with np.load(prepared.out / row["mask_file"]) as masks:
        assert masks["masks"].shape == (2, 112, 112) and list(masks["frame_indices"]) == [0, 16]
        areas = masks["masks"].reshape(2, -1).sum(axis=1)
    assert areas[1] / areas[0] == pytest.approx(0.7, abs=0.08)  # ES/ED cavity area = 1 - EF
    report = json.loads((prepared.out / REPORT_FILENAME).read_text())
    assert report["not_prepared"] == {"record_not_published_form": 1, "video_missing": 1}
    assert report["records_by_reason"] == {"video_missing": ["0XA1B2C3D4E5F60006"]}


def test_camus_structures_on_square_pixels_in_both_releases(prepared_replica) -> None:
    for name, frames in (("camus", 20), ("camus-mhd", 2)):
        prepared = prepared_replica(name)
        labels = pd.read_parquet(prepared.labels_path).set_index("record")
        row = labels.loc["patient0002_4CH"]
        assert (row["ef"], row["view"], row["ed_frame"], row["es_frame"]) == (50.0, "A4C", 0, 19)
        with np.load(prepared.out / row["mask_file"]) as masks:
            assert masks["masks"].shape == (frames, 192, 192)  # 96 rows of 0.3 mm -> 192 of 0.15 mm
            assert set(np.unique(masks["masks"])) == {0, 1, 2, 3}
            assert tuple(masks["classes"]) == ("lv_endo", "lv_myo", "la")
    camus = prepared_replica("camus-mhd")
    manifest = pd.read_parquet(camus.manifest_path)
    # Every ingested .mhd header's .raw beside it is accounted for as that header's voxels.
    voxels = manifest.loc[manifest["reason"] == "volume_data", "source_id"].nunique()
    assert voxels == manifest.loc[manifest["source_format"] == "mhd", "source_id"].nunique() > 0


def test_tmed2_grades_and_stills(prepared_replica) -> None:
    prepared = prepared_replica("tmed-2")
    labels = pd.read_parquet(prepared.labels_path).set_index("record")
    assert labels.loc["1000s1_0.png", "aortic_stenosis"] == "none"
    assert labels.loc["1000s1_1.png", "aortic_stenosis"] == "non_significant"  # mild
    assert labels.loc["1002s1_4.png", "aortic_stenosis"] == "significant"  # severe
    assert pd.isna(labels.loc["1004s1_8.png", "aortic_stenosis"])  # Not_Provided: no grade
    assert labels.loc["1000s1_0.png", "patient"] == "1000"
    manifest = pd.read_parquet(prepared.manifest_path)
    assert set(manifest["source_format"]) == {"png"} and set(manifest["n_frames_source"]) == {1}
    clip = load_clip(prepared.out, labels["clip_id"].iloc[0])  # a still enters as its frame repeated
    assert clip.shape[0] == 32 and (clip == clip[:1]).all() and clip.max() > 0


def test_a_second_run_adds_nothing(prepared_replica) -> None:
    prepared = prepared_replica("echonet-lvh")
    before = pd.read_parquet(prepared.manifest_path)
    labels_before = pd.read_parquet(prepared.labels_path)
    again = prepare_dataset("echonet-lvh", prepared.replica.root, prepared.out, ingest=serial_ingest("echonet-lvh"))
    assert len(pd.read_parquet(prepared.manifest_path)) == len(before)
    pd.testing.assert_frame_equal(pd.read_parquet(prepared.labels_path), labels_before)
    assert again.clips == prepared.report.clips


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_planted_phi_reaches_neither_labels_nor_manifest(name: str, prepared_replica) -> None:
    prepared = prepared_replica(name)
    outputs = [_text_of(pd.read_parquet(prepared.labels_path)), (prepared.out / REPORT_FILENAME).read_text(),
               " ".join(p.name for p in prepared.out.rglob("*"))]
    manifest = pd.read_parquet(prepared.manifest_path)
    outputs.append(_text_of(manifest))
    for text in outputs:
        for value in prepared.replica.phi:
            assert value not in text


def test_the_registry_lists_every_dataset_with_a_replica() -> None:
    assert {name.removesuffix("-mhd") for name in BUILDERS} == set(DATASETS.names())
