"""`OUT/study_predictions.parquet`: one row per study, aggregated from the clip predictions.

A clip's view is the view model's class when a view model scored the archive (`view.class`),
else the view given at ingestion; `views_from` says which. Per study:

- `n_clips`, `views` (present, sorted), `clips.<VIEW>` for every canonical view;
- per task with a study-level value (`Task.study_views` not None), over the study's clips in
  those views (every clip for an empty tuple): `<task>.n_clips`, `<task>.views` (the views that
  entered), the producing model, and
  - for a value per clip (regression, binary, multiclass): `<field>_mean` and `<field>_std` of
    each numeric column of the group (`ef.value_mean`, `reduced_ef.probability_mean`); binary adds
    `<task>.positive` (mean probability >= the task's threshold), multiclass `<task>.class`
    (highest mean probability);
  - for segmentation, derived from the masks: `derived.ef_area_length_mean` / `_std` (single
    plane, over A4C and A2C clips) and `derived.ef_biplane` when the study has both an A4C and
    an A2C clip (each plane's ED/ES areas and long axes averaged over its clips).

A spread is the sample standard deviation (NaN from one clip). Clips without a study pseudonym
(video files carry none) enter no study; `clips_without_study` counts them for the summary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from echofm.downstream.task import Task, column_name
from echofm.downstream.tasks import BIPLANE_VIEWS, TASKS
from echofm.io.views import CANONICAL_VIEWS
from echofm.predict.columns import MODEL_FIELD, VERSION_FIELD, described, prediction_schema
from echofm.predict.derived import biplane_ef
from echofm.predict.models import ScoringModel

VIEW_TASK = "view"
VIEW_CLASS = column_name(VIEW_TASK, "class")
_NUMERIC = (pa.float64(), pa.int64())
_SEGMENTATION_MEASURES = ("ed_area_px", "es_area_px", "ed_length_px", "es_length_px")


def _aggregated_tasks(models: Sequence[ScoringModel]) -> list[Task]:
    answered = {task for model in models for task in model.tasks}
    return [task for task in TASKS if task.name in answered and task.study_views is not None]


def _numeric_fields(schema: pa.Schema, task: str) -> list[str]:
    skip = {column_name(task, MODEL_FIELD), column_name(task, VERSION_FIELD)}
    return [f.name for f in schema if f.name.startswith(column_name(task, "")) and f.name not in skip and f.type in _NUMERIC]


def study_schema(models: Sequence[ScoringModel]) -> pa.Schema:
    """The study table's columns for an archive scored by `models` (module doc)."""
    clip_schema = prediction_schema(models)
    fields = [
        described("study_id", pa.string(), "keyed pseudonym of the study"),
        described("patient_id", pa.string(), "keyed pseudonym of the patient"),
        described("n_clips", pa.int64(), "scored clips of the study"),
        described("views", pa.list_(pa.string()), "views present (sorted)"),
        described("views_from", pa.string(), "where each clip's view came from: the view model or ingestion"),
    ] + [described(f"clips.{view}", pa.int64(), f"clips in view {view}") for view in CANONICAL_VIEWS]
    for task in _aggregated_tasks(models):
        name = task.name
        over = ", ".join(task.study_views) if task.study_views else "all clips"
        fields += [
            described(column_name(name, "n_clips"), pa.int64(), f"clips that entered the {name} values ({over})"),
            described(column_name(name, "views"), pa.list_(pa.string()), f"views that entered the {name} values"),
        ]
        if task.kind == "segmentation":
            derived = "derived from the predicted masks, not a model output: "
            fields += [
                described(column_name(name, "derived.ef_area_length_mean"), pa.float64(), derived + "single-plane area-length EF (%), mean"),
                described(column_name(name, "derived.ef_area_length_std"), pa.float64(), derived + "its spread (sample SD)"),
                described(column_name(name, "derived.ef_biplane"), pa.float64(),
                          derived + f"biplane area-length EF (%) when {' and '.join(BIPLANE_VIEWS)} are both present"),
            ]
        else:
            for field in _numeric_fields(clip_schema, name):
                fields += [described(f"{field}_mean", pa.float64(), f"mean of {field} over the clips that entered"),
                           described(f"{field}_std", pa.float64(), f"sample SD of {field} over them")]
            if task.kind == "binary":
                fields.append(described(column_name(name, "positive"), pa.bool_(),
                                        f"mean probability >= {task.threshold:g}"))
            if task.kind == "multiclass":
                fields.append(described(column_name(name, "class"), pa.string(), "class of highest mean probability"))
        fields += [described(column_name(name, MODEL_FIELD), pa.string(), "registered model of the clip values"),
                   described(column_name(name, VERSION_FIELD), pa.string(), "its version")]
    return pa.schema(fields)


def clip_views(clips: pd.DataFrame) -> tuple[pd.Series, str]:
    """Each clip's view for aggregation and where it came from (module doc)."""
    if VIEW_CLASS in clips:
        if not len(clips):
            return clips[VIEW_CLASS].astype(str), "view model"
        model, version = clips[column_name(VIEW_TASK, MODEL_FIELD)].iloc[0], clips[column_name(VIEW_TASK, VERSION_FIELD)].iloc[0]
        return clips[VIEW_CLASS].astype(str), f"view model {model} v{version}"
    return clips["view"].fillna("unknown").astype(str), "ingestion"


def _spread(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if values.notna().sum() > 1 else math.nan


def _task_values(task: Task, rows: pd.DataFrame, numeric: list[str]) -> dict[str, object]:
    name = task.name
    values: dict[str, object] = {
        column_name(name, "n_clips"): len(rows),
        column_name(name, "views"): sorted(set(rows["_view"])),
        column_name(name, MODEL_FIELD): rows[column_name(name, MODEL_FIELD)].iloc[0] if len(rows) else None,
        column_name(name, VERSION_FIELD): rows[column_name(name, VERSION_FIELD)].iloc[0] if len(rows) else None,
    }
    if task.kind == "segmentation":
        ef = rows[column_name(name, "derived.ef_area_length")].astype(float)
        values[column_name(name, "derived.ef_area_length_mean")] = float(ef.mean()) if len(rows) else math.nan
        values[column_name(name, "derived.ef_area_length_std")] = _spread(ef)
        planes = []
        for view in BIPLANE_VIEWS:
            plane = rows[rows["_view"] == view]
            planes.append(tuple(float(plane[column_name(name, f"derived.{m}")].mean()) for m in _SEGMENTATION_MEASURES))
        both = all(len(rows[rows["_view"] == view]) for view in BIPLANE_VIEWS)
        values[column_name(name, "derived.ef_biplane")] = biplane_ef(*planes) if both else math.nan
        return values
    for field in numeric:
        column = rows[field].astype(float)
        values[f"{field}_mean"] = float(column.mean()) if len(rows) else math.nan
        values[f"{field}_std"] = _spread(column)
    if task.kind == "binary":
        mean = values.get(f"{column_name(name, 'probability')}_mean", math.nan)
        values[column_name(name, "positive")] = bool(mean >= task.threshold) if np.isfinite(mean) else None
    if task.kind == "multiclass":
        probabilities = {f: values[f"{f}_mean"] for f in numeric if f.startswith(column_name(name, "prob_"))}
        finite = {f: v for f, v in probabilities.items() if np.isfinite(v)}
        values[column_name(name, "class")] = (max(finite, key=finite.get).removeprefix(column_name(name, "prob_"))
                                              if finite else None)
    return values


def study_table(clips: pd.DataFrame, models: Sequence[ScoringModel]) -> tuple[pa.Table, int]:
    """The study table of the clip predictions `clips` (one row per clip, the columns of
    `prediction_schema(models)`), and how many clips had no study pseudonym."""
    schema = study_schema(models)
    clip_schema = prediction_schema(models)
    views, source = clip_views(clips)
    clips = clips.assign(_view=views)
    in_study = clips[clips["study_id"].notna()]
    tasks = [(task, _numeric_fields(clip_schema, task.name)) for task in _aggregated_tasks(models)]
    rows = []
    for study_id, group in in_study.groupby("study_id", sort=True):
        counts = group["_view"].value_counts()
        row: dict[str, object] = {
            "study_id": study_id,
            "patient_id": group["patient_id"].dropna().iloc[0] if group["patient_id"].notna().any() else None,
            "n_clips": len(group),
            "views": sorted(counts.index),
            "views_from": source,
            **{f"clips.{view}": int(counts.get(view, 0)) for view in CANONICAL_VIEWS},
        }
        for task, numeric in tasks:
            entered = group if not task.study_views else group[group["_view"].isin(task.study_views)]
            row.update(_task_values(task, entered, numeric))
        # No value is a null, not a NaN: a reader's `isna` and Arrow's null count agree.
        rows.append({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    return table, int(clips["study_id"].isna().sum())
