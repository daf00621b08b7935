"""`echofm predict` end to end: a synthetic archive (with faulty files) ingested and scored by
champions registered in a real MLflow registry (SQLite store), through the real Prefect flows
(temporary API); the champion served by `mlflow models serve` on localhost.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from echofm.cli import main
from echofm.predict.scoring import PREDICTIONS_FILENAME, STUDIES_FILENAME, prepare_models, score_archive
from tests.factories.predict import register_champions
from tests.factories.servers import mlflow_model_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
TASKS = ("ef", "view", "segmentation")


@pytest.fixture(scope="module")
def registry(downstream_archive, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, register_champions(downstream_archive, uri, TASKS, root / "finetune")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from echofm.synth.archive import SMALL_ARCHIVE_OPTIONS, generate_archive

    root = tmp_path_factory.mktemp("synth")
    generate_archive(root, 4, seed=2, faults=True, **SMALL_ARCHIVE_OPTIONS)
    return root


def _argv(source: Path, out: Path, tracking_uri: str, models: list[str]) -> list[str]:
    return (["predict", str(source), str(out), "--tracking-uri", tracking_uri, "--workers", "1", "--batch-size", "3"]
            + [flag for uri in models for flag in ("--model", uri)])


@pytest.fixture(scope="module")
def predicted(prefect_harness, registry, synthetic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT after one `echofm predict` run with every champion."""
    uri, models = registry
    out = tmp_path_factory.mktemp("predict") / "out"
    assert main(_argv(synthetic / "archive", out, uri, list(models.values()))) == 0
    return out


def _strings(table: pd.DataFrame) -> set[str]:
    """Every string value of a table, list cells included."""
    values: set[str] = set()
    for column in table.columns:
        for value in table[column]:
            cells = value if isinstance(value, (list, np.ndarray)) else [value]
            values.update(cell for cell in cells if isinstance(cell, str))
    return values


def test_every_accepted_clip_and_study_is_scored_with_pseudonyms_only(predicted, synthetic, registry) -> None:
    manifest = pq.read_table(predicted / "manifest.parquet").to_pandas()
    accepted = manifest[manifest["status"] == "accepted"].set_index("clip_id")
    clips = pq.read_table(predicted / PREDICTIONS_FILENAME).to_pandas().set_index("clip_id")
    studies = pq.read_table(predicted / STUDIES_FILENAME).to_pandas()

    assert sorted(clips.index) == sorted(accepted.index) and len(clips) >= 3
    for column in ("patient_id", "study_id", "view"):
        pd.testing.assert_series_equal(clips[column], accepted.loc[clips.index, column], check_names=False)
    for task in TASKS:
        assert set(clips[f"{task}.model"]) == {f"echofm-{task}"} and set(clips[f"{task}.model_version"]) == {"1"}
    assert clips["ef.value"].notna().all() and set(clips["view.class"]) <= {"A2C", "A4C", "PLAX"}

    # Segmentation: masks in files, their area curve in the table, ED/ES derived from it.
    for clip_id, row in clips.iterrows():
        saved = np.load(predicted / row["segmentation.mask_file"])
        assert saved["masks"].shape == (len(row["segmentation.frame_indices"]), 224, 224)
        area = saved["masks"].reshape(len(saved["masks"]), -1).astype(bool).sum(axis=1)
        np.testing.assert_array_equal(row["segmentation.area_px"], area)
        np.testing.assert_array_equal(saved["frame_indices"], row["segmentation.frame_indices"])
        assert row["segmentation.derived.ed_frame"] == row["segmentation.frame_indices"][int(np.argmax(area))]
        assert row["segmentation.derived.es_frame"] == row["segmentation.frame_indices"][int(np.argmin(area))]
    described = pq.read_schema(predicted / PREDICTIONS_FILENAME).field("segmentation.derived.ef_area_length").metadata
    assert b"derived" in described[b"description"]

    in_study = accepted[accepted["study_id"].notna()]
    assert sorted(studies["study_id"]) == sorted(in_study["study_id"].unique())
    assert studies["n_clips"].sum() == len(in_study)
    assert (studies["ef.n_clips"] <= studies["n_clips"]).all()

    # No path, file name or planted header value reaches either table.
    planted = set(json.loads((synthetic / "phi.json").read_text())["all"])
    files = [p.relative_to(synthetic / "archive") for p in (synthetic / "archive").rglob("*") if p.is_file()]
    names = {str(p) for p in files} | {p.name for p in files} | {p.stem for p in files}
    for table in (clips.reset_index(), studies):
        strings = _strings(table)
        assert not strings & planted
        assert not [s for s in strings for name in names | {str(synthetic)} if name in s]


def test_rerun_adds_no_row_and_files_without_clip_keep_their_status(predicted, synthetic, registry, capsys) -> None:
    uri, models = registry
    before = pq.read_table(predicted / PREDICTIONS_FILENAME)
    assert main(_argv(synthetic / "archive", predicted, uri, list(models.values()))) == 0
    out = capsys.readouterr().out
    manifest = pq.read_table(predicted / "manifest.parquet").to_pandas()
    without_clip = manifest.groupby("source_id")["status"].apply(lambda s: not (s == "accepted").any()).sum()
    assert without_clip >= 5
    assert out.startswith("scored 0 clip(s)") and f"{without_clip} file(s) without a clip keep their status" in out
    assert pq.read_table(predicted / PREDICTIONS_FILENAME).equals(before)
    assert manifest.loc[manifest["status"] != "accepted", "reason"].notna().all()


def test_a_new_clip_alone_is_scored_and_gets_the_same_numbers(predicted, registry, tmp_path) -> None:
    """An archive grown by one clip: the clips already scored are kept, the new one is scored,
    and (same version, same clip, CPU) its numbers equal the first run's: every column exactly
    but the floats, which equal to float32 rounding (the new clip is scored in a batch of one,
    the first run scored it in a batch of three, and CPU matrix kernels round differently by
    batch size: ~1e-7, found flaky when compared bit for bit)."""
    uri, models = registry
    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    full = pq.read_table(out / PREDICTIONS_FILENAME)
    new_clip = full.column("clip_id")[0].as_py()
    pq.write_table(full.filter(pc.not_equal(full["clip_id"], new_clip)), out / PREDICTIONS_FILENAME)

    seen: list[tuple[int, int]] = []
    outcome = score_archive(out, prepare_models(list(models.values()), tracking_uri=uri), tracking_uri=uri,
                            progress=lambda done, total: seen.append((done, total)))
    assert outcome.scored == 1 and seen[-1] == (1, 1)
    assert outcome.kept == {task: full.num_rows - 1 for task in TASKS}
    got = pq.read_table(out / PREDICTIONS_FILENAME)
    assert got.schema.equals(full.schema) and got.num_rows == full.num_rows
    for name in full.column_names:
        if pa.types.is_floating(full.schema.field(name).type):
            np.testing.assert_allclose(got[name].to_numpy(zero_copy_only=False), full[name].to_numpy(zero_copy_only=False),
                                       rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            assert got[name].equals(full[name]), name


def test_the_run_leaves_progress_and_summary_artifacts(predicted) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["echofm-scoring-progress", "echofm-predictions-counts", "echofm-predictions-summary"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {artifact.key for artifact in artifacts} == set(keys)
    # Every run ends done, a re-run that scored nothing too (0 / 0 clips).
    progress = [artifact for artifact in artifacts if artifact.key == keys[0]]
    assert progress and all(float(artifact.data) == 100.0 for artifact in progress)
    counts = [artifact for artifact in artifacts if artifact.key == keys[1]]
    assert all("accepted clips in the tables" in json.dumps(artifact.data) for artifact in counts)


@pytest.mark.parametrize("uri, message", [
    ("models:/echofm-nonesuch@champion", "no registered model 'echofm-nonesuch'"),
    ("models:/echofm-ef@nonesuch", "no version of echofm-ef has the alias 'nonesuch'"),
    ("models:/echofm-ef/99", "echofm-ef has no version 99"),
    ("runs:/abc/model", "name a model by models:/NAME@ALIAS"),
])
def test_a_model_that_cannot_score_stops_before_any_work(registry, synthetic, tmp_path, capsys, uri, message) -> None:
    tracking_uri, models = registry
    out = tmp_path / "out"
    assert main(_argv(synthetic / "archive", out, tracking_uri, [models["ef"], uri])) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_model_of_no_registered_task_is_refused(registry, synthetic, tmp_path, capsys) -> None:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from echofm.store import tracking_uri_scope
    from tests.factories.predict import Doubler

    tracking_uri, _ = registry
    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]), outputs=Schema([ColSpec("double", "score")]))
    with tracking_uri_scope(tracking_uri), mlflow.start_run():
        # Requirements given: MLflow would otherwise infer them in a subprocess (~25 s).
        mlflow.pyfunc.log_model(name="model", python_model=Doubler(), signature=signature, pip_requirements=["mlflow"],
                                registered_model_name="not-an-echo-task")
    out = tmp_path / "out"
    assert main(_argv(synthetic / "archive", out, tracking_uri, ["models:/not-an-echo-task/1"])) == 2
    assert "answers no registered task" in capsys.readouterr().err and not out.exists()


def _post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mlflow_models_serve_answers_raw_clips_and_refuses_malformed_ones(registry, tmp_path) -> None:
    import mlflow

    from echofm.store import tracking_uri_scope

    tracking_uri, models = registry
    clip = np.random.default_rng(0).integers(0, 256, size=(16, 40, 48), dtype=np.uint8)
    with tracking_uri_scope(tracking_uri):
        expected = mlflow.pyfunc.load_model(models["ef"]).predict(clip[None])["ef.value"].iloc[0]
    with mlflow_model_server(models["ef"], tracking_uri, tmp_path / "serve.log") as url:
        status, answer = _post(url, {"inputs": [clip.tolist()]})
        assert status == 200, answer
        assert answer["predictions"][0]["ef.value"] == pytest.approx(expected, rel=1e-5)
        colour = np.repeat(clip[..., None], 3, axis=-1)
        status, answer = _post(url, {"inputs": [colour.tolist()]})
        assert status == 200 and answer["predictions"][0]["ef.value"] == pytest.approx(expected, rel=1e-5)

        # MLflow answers 400 with "Failed to predict data ... Error: <our one line>"; an empty
        # batch is refused by MLflow's own schema check before the model sees it.
        for body, problem in [
            ({"inputs": [(clip / 255.0).tolist()]}, "must be uint8 (integers 0-255), got numbers with a fraction"),
            ({"inputs": [clip[:8].tolist()]}, "clip 0: clip has 8 frames, at least 16 needed"),
            ({"inputs": clip.tolist()}, "one clip [T, H, W] goes in a batch of one"),
            ({"inputs": []}, "Failed to enforce schema of data '[]'"),
        ]:
            status, answer = _post(url, body)
            assert status == 400, (problem, answer)
            assert problem in answer["message"] and "Traceback" not in answer["message"], answer
