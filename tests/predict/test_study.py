"""The study table on a hand-built case whose per-clip values, and so whose aggregates, are known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from echofm.predict.columns import prediction_schema
from echofm.predict.derived import area_length_volume, biplane_volume, ejection_fraction
from echofm.predict.models import OutputColumn, ScoringModel
from echofm.predict.study import study_table

VIEWS = ("A2C", "A4C", "PLAX")


def _model(task: str, *outputs: OutputColumn) -> ScoringModel:
    return ScoringModel(uri=f"models:/echofm-{task}/3", name=f"echofm-{task}", version="3", tasks=(task,), outputs=outputs)


MODELS = (
    _model("ef", OutputColumn("ef.value", "double")),
    _model("view", OutputColumn("view.class", "string"), OutputColumn("view.confidence", "double"),
           *(OutputColumn(f"view.prob_{v}", "double") for v in VIEWS)),
    _model("reduced_ef", OutputColumn("reduced_ef.probability", "double"), OutputColumn("reduced_ef.positive", "boolean")),
    _model("segmentation", OutputColumn("segmentation.masks", "uint8", (-1, -1, -1, -1)),
           OutputColumn("segmentation.frame_indices", "int64", (-1, -1))),
)


def _clip(clip_id: str, study: str | None, view: str, ef: float, p_reduced: float,
          planes: tuple[float, float, float, float]) -> dict[str, object]:
    """One clip's row of the prediction table; ingestion knew no view (the view model's counts)."""
    row: dict[str, object] = {name: None for name in prediction_schema(MODELS).names}
    ed_area, es_area, ed_length, es_length = planes
    single = ejection_fraction(area_length_volume(ed_area, ed_length), area_length_volume(es_area, es_length))
    row.update({
        "clip_id": clip_id, "study_id": study, "patient_id": None if study is None else "p1", "view": "unknown",
        "ef.value": ef, "view.class": view, "view.confidence": 0.9,
        **{f"view.prob_{v}": 0.9 if v == view else 0.05 for v in VIEWS},
        "reduced_ef.probability": p_reduced, "reduced_ef.positive": p_reduced >= 0.5,
        "segmentation.derived.ed_area_px": ed_area, "segmentation.derived.es_area_px": es_area,
        "segmentation.derived.ed_length_px": ed_length, "segmentation.derived.es_length_px": es_length,
        "segmentation.derived.ef_area_length": single,
    })
    for task in ("ef", "view", "reduced_ef", "segmentation"):
        row[f"{task}.model"], row[f"{task}.model_version"] = f"echofm-{task}", "3"
    return row


A4C_PLANE = (1000.0, 600.0, 50.0, 40.0)
A2C_PLANE = (900.0, 500.0, 48.0, 42.0)
CLIPS = pd.DataFrame([
    _clip("c1", "s1", "A4C", 50.0, 0.2, A4C_PLANE),
    _clip("c2", "s1", "A2C", 60.0, 0.4, A2C_PLANE),
    _clip("c3", "s1", "PLAX", 10.0, 0.99, (10.0, 9.0, 5.0, 5.0)),  # no EF from a parasternal view
    _clip("c4", "s2", "PLAX", 15.0, 0.9, (10.0, 9.0, 5.0, 5.0)),
    _clip("c5", None, "A4C", 30.0, 0.7, A4C_PLANE),  # a video file: no study pseudonym
])


def test_study_values_aggregate_the_views_each_task_reads() -> None:
    table, without_study = study_table(CLIPS, MODELS)
    studies = {row["study_id"]: row for row in table.to_pylist()}
    assert without_study == 1 and sorted(studies) == ["s1", "s2"]

    s1 = studies["s1"]
    assert s1["n_clips"] == 3 and s1["views"] == ["A2C", "A4C", "PLAX"] and s1["views_from"] == "view model echofm-view v3"
    assert (s1["clips.A4C"], s1["clips.A2C"], s1["clips.PLAX"], s1["clips.unknown"]) == (1, 1, 1, 0)
    # EF and reduced EF over the apical clips only: PLAX's 10 % and 0.99 do not enter.
    assert s1["ef.views"] == ["A2C", "A4C"] and s1["ef.n_clips"] == 2
    assert s1["ef.value_mean"] == pytest.approx(55.0) and s1["ef.value_std"] == pytest.approx(math.sqrt(50.0))
    assert s1["reduced_ef.probability_mean"] == pytest.approx(0.3) and s1["reduced_ef.positive"] is False
    assert (s1["ef.model"], s1["ef.model_version"]) == ("echofm-ef", "3")
    # Biplane: V = 8 A4 A2 / (3 pi min(L4, L2)): EF = 1 - (600 * 500 / 40) / (1000 * 900 / 48) = 60 %.
    assert s1["segmentation.derived.ef_biplane"] == pytest.approx(60.0)
    assert s1["segmentation.derived.ef_biplane"] == pytest.approx(ejection_fraction(
        biplane_volume(1000, 900, 48), biplane_volume(600, 500, 40)))
    assert s1["segmentation.views"] == ["A2C", "A4C"]

    # A study without an apical clip has no EF, and says so with nulls rather than numbers.
    s2 = studies["s2"]
    assert s2["ef.n_clips"] == 0 and s2["ef.value_mean"] is None and s2["ef.value_std"] is None
    assert s2["segmentation.derived.ef_biplane"] is None and s2["reduced_ef.positive"] is None


def test_one_plane_gives_a_single_plane_ef_but_no_biplane() -> None:
    one_plane = CLIPS[CLIPS["clip_id"].isin(["c1"])]
    (row,) = study_table(one_plane, MODELS)[0].to_pylist()
    assert row["segmentation.derived.ef_biplane"] is None
    assert row["segmentation.derived.ef_area_length_mean"] == pytest.approx(
        CLIPS.loc[0, "segmentation.derived.ef_area_length"]) and row["segmentation.derived.ef_area_length_std"] is None


def test_without_a_view_model_the_ingestion_view_counts() -> None:
    models = tuple(m for m in MODELS if m.name != "echofm-view")
    clips = CLIPS.drop(columns=[c for c in CLIPS if c.startswith("view.")]).assign(view="A4C")
    table, _ = study_table(clips, models)
    s1 = next(row for row in table.to_pylist() if row["study_id"] == "s1")
    assert s1["views_from"] == "ingestion" and s1["clips.A4C"] == 3 and s1["ef.value_mean"] == pytest.approx(40.0)
