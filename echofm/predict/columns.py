"""The columns of `OUT/predictions.parquet`: the clip's identity, then one group per task.

A group is every column `<task>.<field>` (`echofm.downstream.task.column_name`) plus
`<task>.model` and `<task>.model_version`, the registered model that produced it. What a group
holds follows from the model's signature and the task's kind (`GROUP_TABLES`, keyed by kind):

- a kind whose outputs are one value (or one list) per clip, as regression, binary and
  multiclass are: each output is a column of the same name and type (`ScalarTable`);
- segmentation (`SegmentationTable`): the masks go to `OUT/masks/<task>/<clip_id>.npz`
  (`masks` uint8 `[T', 224, 224]`, `frame_indices`) and the group holds `frame_indices` (the
  shard frames the masks cover), `area_px` (LV area per frame), `mask_file` (relative to OUT) and
  the measurements derived from the masks (`echofm.predict.derived`) under `derived.`.

A new kind whose outputs are not per-clip values registers its own table here.
Every field carries a description in the Parquet schema.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from echofm.downstream.task import Task, column_name
from echofm.downstream.tasks import TASKS
from echofm.predict.derived import measure_cycle
from echofm.predict.models import OutputColumn, ScoringModel, UnknownTaskModel

MASKS_DIRNAME = "masks"
MODEL_FIELD, VERSION_FIELD = "model", "model_version"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "double": pa.float64(), "float": pa.float64(), "float64": pa.float64(), "float32": pa.float64(),
    "long": pa.int64(), "integer": pa.int64(), "int64": pa.int64(), "int32": pa.int64(), "uint8": pa.int64(),
    "boolean": pa.bool_(), "bool": pa.bool_(), "string": pa.string(), "object": pa.string(), "str": pa.string(),
}


def described(name: str, kind: pa.DataType, description: str) -> pa.Field:
    return pa.field(name, kind, metadata={"description": description})


BASE_FIELDS: tuple[pa.Field, ...] = (
    described("clip_id", pa.string(), "the clip: manifest clip_id, its key in the shards"),
    described("patient_id", pa.string(), "keyed pseudonym of the patient (manifest), never the PatientID"),
    described("study_id", pa.string(), "keyed pseudonym of the study (manifest)"),
    described("series_id", pa.string(), "keyed pseudonym of the series (manifest)"),
    described("view", pa.string(), "view given at ingestion (manifest)"),
    described("window_index", pa.int64(), "which window of its source cine the clip is, 0-based"),
)
BASE_COLUMNS: tuple[str, ...] = tuple(f.name for f in BASE_FIELDS)


class GroupTable:
    """How the outputs of a model for one task become columns of the prediction table."""

    def check(self, model: ScoringModel, task: Task) -> None:
        """UnknownTaskModel when the model's outputs for `task` cannot fill this table."""

    def fields(self, model: ScoringModel, task: Task) -> list[pa.Field]:
        raise NotImplementedError

    def rows(self, model: ScoringModel, task: Task, outputs: dict[str, Any], clip_ids: Sequence[str],
             output_dir: Path) -> dict[str, list[Any]]:
        """One list per field (`fields`), one value per clip of `clip_ids`."""
        raise NotImplementedError


def _arrow_type(column: OutputColumn, uri: str) -> pa.DataType:
    try:
        scalar = _ARROW_TYPES[column.type]
    except KeyError:
        raise UnknownTaskModel(f"{uri}: output {column.name} has type {column.type}, which no table column holds") from None
    return scalar if column.per_clip_rank == 0 else pa.list_(scalar)


class ScalarTable(GroupTable):
    """One table column per output: a value (or a list) per clip, as the model returns it."""

    def check(self, model: ScoringModel, task: Task) -> None:
        for column in model.columns_of(task.name):
            if column.per_clip_rank > 1:
                raise UnknownTaskModel(f"{model.uri}: output {column.name} is an array per clip; a {task.kind} "
                                       "task's columns hold one value or one list per clip")
            _arrow_type(column, model.uri)
        reserved = {column_name(task.name, MODEL_FIELD), column_name(task.name, VERSION_FIELD)}
        if reserved & {column.name for column in model.columns_of(task.name)}:
            raise UnknownTaskModel(f"{model.uri}: outputs may not be named {sorted(reserved)}")

    def fields(self, model: ScoringModel, task: Task) -> list[pa.Field]:
        return [described(c.name, _arrow_type(c, model.uri), f"{task.title}: model output") for c in model.columns_of(task.name)]

    def rows(self, model: ScoringModel, task: Task, outputs: dict[str, Any], clip_ids: Sequence[str],
             output_dir: Path) -> dict[str, list[Any]]:
        return {c.name: np.asarray(outputs[c.name]).tolist() for c in model.columns_of(task.name)}


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Compressed npz written to a temporary name, then renamed: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez_compressed(out, **arrays)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


class SegmentationTable(GroupTable):
    """Masks to files, the LV area curve and the measurements derived from it (module doc)."""

    OUTPUTS = ("masks", "frame_indices")
    DERIVED: tuple[tuple[str, pa.DataType, str], ...] = (
        ("derived.ed_frame", pa.int64(), "end-diastolic frame (largest LV area), shard frame index"),
        ("derived.es_frame", pa.int64(), "end-systolic frame (smallest LV area), shard frame index"),
        ("derived.ed_area_px", pa.float64(), "LV area at ED, pixels of the 224 x 224 clip"),
        ("derived.es_area_px", pa.float64(), "LV area at ES, pixels of the 224 x 224 clip"),
        ("derived.ed_length_px", pa.float64(), "LV long axis at ED (mask extent along its principal axis), pixels"),
        ("derived.es_length_px", pa.float64(), "LV long axis at ES, pixels"),
        ("derived.ef_area_length", pa.float64(), "EF (%) by the single-plane area-length method"),
    )

    def check(self, model: ScoringModel, task: Task) -> None:
        have = {c.name for c in model.columns_of(task.name)}
        missing = [column_name(task.name, f) for f in self.OUTPUTS if column_name(task.name, f) not in have]
        if missing:
            raise UnknownTaskModel(f"{model.uri}: a segmentation model returns {missing} too")

    def fields(self, model: ScoringModel, task: Task) -> list[pa.Field]:
        derived = "derived from the predicted masks, not a model output: "
        return [
            described(column_name(task.name, "frame_indices"), pa.list_(pa.int64()), "shard frames the masks cover"),
            described(column_name(task.name, "area_px"), pa.list_(pa.int64()), "LV area per frame of frame_indices, pixels"),
            described(column_name(task.name, "mask_file"), pa.string(), "npz of the masks (masks, frame_indices), relative to OUT"),
        ] + [described(column_name(task.name, name), kind, derived + text) for name, kind, text in self.DERIVED]

    def rows(self, model: ScoringModel, task: Task, outputs: dict[str, Any], clip_ids: Sequence[str],
             output_dir: Path) -> dict[str, list[Any]]:
        masks, frames = outputs[column_name(task.name, "masks")], np.asarray(outputs[column_name(task.name, "frame_indices")])
        columns: dict[str, list[Any]] = {f.name: [] for f in self.fields(model, task)}
        for clip_id, clip_masks, clip_frames in zip(clip_ids, masks, frames, strict=True):
            relative = f"{MASKS_DIRNAME}/{task.name}/{clip_id}.npz"
            clip_masks = np.asarray(clip_masks, dtype=np.uint8)
            _write_npz(output_dir / relative, masks=clip_masks, frame_indices=clip_frames.astype(np.int64))
            cycle = measure_cycle(clip_masks)
            values = {
                "frame_indices": clip_frames.astype(np.int64).tolist(),
                "area_px": cycle.area_px.tolist(),
                "mask_file": relative,
                "derived.ed_frame": int(clip_frames[cycle.ed]),
                "derived.es_frame": int(clip_frames[cycle.es]),
                "derived.ed_area_px": cycle.ed_area_px,
                "derived.es_area_px": cycle.es_area_px,
                "derived.ed_length_px": cycle.ed_length_px,
                "derived.es_length_px": cycle.es_length_px,
                "derived.ef_area_length": cycle.ef_area_length,
            }
            for name, value in values.items():
                columns[column_name(task.name, name)].append(value)
        return columns


GROUP_TABLES: dict[str, GroupTable] = {"segmentation": SegmentationTable()}
DEFAULT_TABLE = ScalarTable()


def group_table(task: Task) -> GroupTable:
    return GROUP_TABLES.get(task.kind, DEFAULT_TABLE)


def check_groups(model: ScoringModel) -> None:
    """UnknownTaskModel when some task group of `model` cannot fill its table columns."""
    for name in model.tasks:
        group_table(TASKS[name]).check(model, TASKS[name])


def group_fields(model: ScoringModel, task: str) -> list[pa.Field]:
    """The columns of `task`'s group as `model` fills them, its name and version last."""
    definition = TASKS[task]
    return group_table(definition).fields(model, definition) + [
        described(column_name(task, MODEL_FIELD), pa.string(), f"registered model that produced the {task} columns"),
        described(column_name(task, VERSION_FIELD), pa.string(), "its version"),
    ]


def group_rows(model: ScoringModel, task: str, outputs: dict[str, Any], clip_ids: Sequence[str],
               output_dir: Path) -> dict[str, list[Any]]:
    """`task`'s group for `clip_ids` from the model's outputs for them (module doc)."""
    definition = TASKS[task]
    rows = group_table(definition).rows(model, definition, outputs, clip_ids, output_dir)
    rows[column_name(task, MODEL_FIELD)] = [model.name] * len(clip_ids)
    rows[column_name(task, VERSION_FIELD)] = [model.version] * len(clip_ids)
    return rows


def prediction_schema(models: Sequence[ScoringModel]) -> pa.Schema:
    """The clip table: the base fields, then each task's group in registry order."""
    by_task = {task: model for model in models for task in model.tasks}
    fields = list(BASE_FIELDS)
    for task in TASKS.names():
        if task in by_task:
            fields.extend(group_fields(by_task[task], task))
    return pa.schema(fields)
