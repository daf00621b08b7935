"""A download that does not match its published layout gets one clear error naming the file and
what is missing, before anything is ingested; the tracing rules give the published masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echofm.cli import main
from echofm.datasets.catalog import DATASETS
from echofm.datasets.dataset import DatasetLayoutError
from echofm.datasets.prepare import prepare_dataset
from echofm.datasets.mimic import read_mimic_echo
from echofm.datasets.tmed import as_grade
from echofm.datasets.tracings import chord_polygon, fill_polygon
from echofm.downstream.tasks import TASKS
from echofm.io.deid import Pseudonymizer
from tests.factories.public_datasets import echonet_dynamic, heart_cine


def _never_ingest(source: Path, output: Path) -> None:
    raise AssertionError("a layout error must stop before ingestion")


def test_missing_columns_are_named_with_the_file(tmp_path: Path) -> None:
    replica = echonet_dynamic(tmp_path / "root", n=1)
    files = pd.read_csv(replica.root / "FileList.csv").drop(columns=["EF", "Split"])
    files.to_csv(replica.root / "FileList.csv", index=False)
    with pytest.raises(DatasetLayoutError, match=r"FileList\.csv: missing column\(s\) EF, Split"):
        prepare_dataset("echonet-dynamic", replica.root, tmp_path / "out", ingest=_never_ingest)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


@pytest.mark.parametrize("name, missing", [
    ("echonet-dynamic", "FileList.csv"), ("echonet-pediatric", "A4C/FileList.csv"),
    ("echonet-lvh", "MeasurementsList.csv"), ("camus", "patientNNNN/"), ("tmed-2", "query_key"),
    ("mimic-iv-echo", "echo-study-list.csv"),
])
def test_an_empty_download_names_what_its_layout_needs(name: str, missing: str, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with pytest.raises(DatasetLayoutError, match=missing.replace(".", r"\.")):
        prepare_dataset(name, tmp_path / "root", tmp_path / "out", ingest=_never_ingest)


def test_the_command_reports_a_layout_error_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "root").mkdir()
    assert main(["datasets", "prepare", "echonet-lvh", str(tmp_path / "root"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "MeasurementsList.csv: missing" in err
    assert not (tmp_path / "out").exists()  # a layout error leaves OUT untouched


def test_camus_info_without_ef_is_a_layout_error(tmp_path: Path) -> None:
    from tests.factories.public_datasets import camus

    replica = camus(tmp_path / "root", patients=1)
    info = replica.root / "database_nifti" / "patient0001" / "Info_2CH.cfg"
    info.write_text("ED: 1\nNbFrame: 20\n")
    with pytest.raises(DatasetLayoutError, match=r"Info_2CH\.cfg: missing key\(s\) ES, EF \(or LVef\)"):
        DATASETS["camus"].read(replica.root, None)


def test_datasets_list_names_every_dataset_and_its_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for dataset in DATASETS:
        assert dataset.name in out and dataset.layout in out
        assert set(dataset.tasks) <= set(TASKS.names())


def test_chord_tracings_follow_the_published_polygon_rule() -> None:
    # Long axis first, then chords: outline = X1/Y1 ends, then X2/Y2 ends reversed, row 0 left out.
    x1, y1 = np.array([50.0, 40.0, 35.0, 40.0]), np.array([10.0, 20.0, 40.0, 60.0])
    x2, y2 = np.array([50.0, 60.0, 65.0, 60.0]), np.array([80.0, 20.0, 40.0, 60.0])
    polygon = chord_polygon(x1, y1, x2, y2)
    assert polygon.tolist() == [[40, 20], [35, 40], [40, 60], [60, 60], [65, 40], [60, 20]]
    mask = fill_polygon(polygon, 100, 100)
    assert mask[40, 50] == 1 and mask[10, 50] == 0 and mask[40, 30] == 0


def test_chord_masks_match_the_traced_cavity() -> None:
    from tests.factories.public_datasets import chord_rows

    _, labels = heart_cine(0, 1, 112, 112, 50.0)
    rows = pd.DataFrame(chord_rows("x.avi", 0, labels[0], n_chords=30))
    mask = fill_polygon(chord_polygon(*rows[["X1", "Y1", "X2", "Y2"]].to_numpy().T), 112, 112)
    truth = labels[0] == 1
    dice = 2 * (mask.astype(bool) & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.9


def test_tmed2_grades_map_to_the_task_classes() -> None:
    assert {as_grade(g) for g in ("no_AS", "mild_AS", "mildtomod_AS", "moderate_AS", "severe_AS")} == \
        set(TASKS["aortic_stenosis"].classes)
    assert as_grade("Not_Provided") is None
    with pytest.raises(KeyError):
        as_grade("critical_AS")


def test_mimic_dicoms_outside_the_study_list_are_reported_by_keyed_study(tmp_path: Path) -> None:
    pd.DataFrame({"subject_id": ["10000032"], "study_id": ["90000001"]}).to_csv(tmp_path / "echo-study-list.csv",
                                                                                index=False)
    for rel in ("p10/p10000032/s90000001/90000001_0001.dcm", "p10/p10000032/s90000002/90000002_0001.dcm",
                "p10/p10000099/s90000001/90000001_0002.dcm", "p10/p10000032/stray.dcm"):
        (tmp_path / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "files" / rel).write_bytes(b"")
    keys = Pseudonymizer(b"k" * 32)
    listing = read_mimic_echo(tmp_path, keys)
    assert [v.rel_path for v in listing.videos] == ["files/p10/p10000032/s90000001/90000001_0001.dcm"]
    assert sorted(listing.unusable) == sorted([(keys.pseudonym("study", "90000002"), "study_not_listed"),
                                               (keys.pseudonym("study", "90000001"), "subject_mismatch"),
                                               ("", "not_a_study_path")])
    assert "9000000" not in repr(listing.unusable)
