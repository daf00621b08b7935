"""Score every accepted clip of an ingestion output with registered models, incrementally.

    models = prepare_models(["models:/echofm-ef@champion"], tracking_uri=uri)   # checked first
    outcome = score_archive(OUT, models, tracking_uri=uri)

`plan_scoring` reads OUT/manifest.parquet and what earlier runs wrote: a clip's group of a task
is kept when the same model name and version produced it, so a re-run scores nothing and adds no
row, a grown archive scores its new clips alone, and a new champion re-scores its own group only.
`run_scoring` streams the clips to score from the shards (`echofm.predict.stream`), runs every
model that needs a batch on it (one read of the shards for all models), and saves each group's
new rows as a part every `checkpoint_every` clips, so an interrupted run keeps its work;
`finish_scoring` merges table and parts into OUT/predictions.parquet (atomic replace) and
rebuilds OUT/study_predictions.parquet. Only one run writes OUT's predictions at a time (a lock
file; a second run waits for the first).

No value of the tables is read from a file's header but the manifest's pseudonyms, and logs
carry counts only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from echofm.data.manifest import MANIFEST_FILENAME, manifest_parts, read_manifest, write_table_atomically
from echofm.data.shards import SHARDS_DIRNAME, ShardError
from echofm.downstream.task import column_name
from echofm.errors import PredictError
from echofm.predict.columns import (
    BASE_COLUMNS,
    MODEL_FIELD,
    VERSION_FIELD,
    check_groups,
    group_fields,
    group_rows,
    prediction_schema,
)
from echofm.predict.config import ScoreOptions
from echofm.predict.models import ScoringModel, resolve_models
from echofm.predict.study import study_table

log = logging.getLogger(__name__)

PREDICTIONS_FILENAME = "predictions.parquet"
STUDIES_FILENAME = "study_predictions.parquet"
PARTS_DIRNAME = ".predictions-parts"
LOCK_FILENAME = ".predictions.lock"

# A model's answer for a batch: uint8 clips [B, T, H, W, C] in, a DataFrame or dict of columns out.
Predictor = Callable[[Any], Any]
Progress = Callable[[int, int], None]


class ScoringError(PredictError, RuntimeError):
    """OUT cannot be scored: no manifest, a shard the manifest names is missing or unreadable,
    or a model's answer lacks a column its signature promised."""


def prepare_models(uris: Iterable[str], *, tracking_uri: str | None) -> tuple[ScoringModel, ...]:
    """The models of a run, resolved, pinned and checked against the prediction table
    (`resolve_models`, `check_groups`): every model error before any work."""
    models = resolve_models(uris, tracking_uri=tracking_uri)
    for model in models:
        check_groups(model)
    return models


def load_predictor(model: ScoringModel, *, tracking_uri: str | None, device: str, batch_size: int) -> Predictor:
    """The registered pyfunc of `model` (its pinned version), on `device`."""
    import mlflow

    from echofm.store import tracking_uri_scope

    with tracking_uri_scope(tracking_uri):
        pyfunc = mlflow.pyfunc.load_model(model.version_uri, model_config={"device": device, "batch_size": batch_size})
    return pyfunc.predict


@dataclass(frozen=True)
class ScorePlan:
    """What a run scores. clips: the base columns of every accepted clip, by clip_id;
    todo: per model (by label), the clip ids it scores; kept: per task, clips already answered
    by the same model version; shards: clip_id -> shard file."""

    output: Path
    models: tuple[ScoringModel, ...]
    clips: pd.DataFrame
    shards: dict[str, Path]
    todo: dict[str, frozenset[str]]
    kept: dict[str, pd.DataFrame]
    started_at: float = field(default_factory=time.time)

    @property
    def to_score(self) -> list[str]:
        """Clip ids some model scores, sorted."""
        return sorted(set().union(*self.todo.values())) if self.todo else []


@contextmanager
def scoring_lock(output: Path) -> Iterator[None]:
    """Hold OUT's prediction lock for the block (waits while another run holds it)."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / LOCK_FILENAME, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def accepted_clips(output: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Base columns of the manifest's accepted clips (sorted by clip_id) and their shards."""
    manifest = output / MANIFEST_FILENAME
    if not manifest_parts(manifest):
        raise ScoringError(f"OUT holds no {MANIFEST_FILENAME}: ingest the archive first")
    frame = read_manifest(manifest).to_pandas()
    accepted = frame[frame["status"] == "accepted"].sort_values("clip_id").reset_index(drop=True)
    shards = {c: output / SHARDS_DIRNAME / Path(str(s)).name for c, s in zip(accepted["clip_id"], accepted["shard"])}
    return accepted[list(BASE_COLUMNS)], shards


def _group_columns(model: ScoringModel, task: str) -> list[str]:
    return ["clip_id"] + [f.name for f in group_fields(model, task)]


def _recorded(output: Path, model: ScoringModel, task: str) -> pd.DataFrame:
    """Rows of `task`'s group that `model` (same name and version) already produced: in the
    table, then in parts a run saved (later rows win)."""
    wanted = _group_columns(model, task)
    frames = []
    table = output / PREDICTIONS_FILENAME
    sources = ([table] if table.is_file() else []) + sorted((output / PARTS_DIRNAME).glob(f"{task}-*.parquet"))
    for path in sources:
        if not set(wanted) <= set(pq.read_schema(path).names):
            continue
        frame = pq.read_table(path, columns=wanted).to_pandas()
        same = (frame[column_name(task, MODEL_FIELD)] == model.name) & (frame[column_name(task, VERSION_FIELD)] == model.version)
        frames.append(frame[same])
    if not frames:
        return pd.DataFrame(columns=wanted)
    return pd.concat(frames, ignore_index=True).drop_duplicates("clip_id", keep="last")


def plan_scoring(output: str | os.PathLike[str], models: Sequence[ScoringModel]) -> ScorePlan:
    """What a run over OUT has to do (module doc)."""
    output = Path(output).resolve()
    clips, shards = accepted_clips(output)
    ids = set(clips["clip_id"])
    kept, todo = {}, {}
    for model in models:
        need: set[str] = set()
        for task in model.tasks:
            recorded = _recorded(output, model, task)
            kept[task] = recorded[recorded["clip_id"].isin(ids)]
            need |= ids - set(kept[task]["clip_id"])
        todo[model.label] = frozenset(need)
    return ScorePlan(output=output, models=tuple(models), clips=clips, shards=shards, todo=todo, kept=kept)


def _as_columns(answer: Any, model: ScoringModel, n: int) -> dict[str, Any]:
    columns = {name: answer[name].to_numpy() for name in answer.columns} if isinstance(answer, pd.DataFrame) else dict(answer)
    missing = [c.name for c in model.outputs if c.name not in columns]
    if missing:
        raise ScoringError(f"{model.label} answered without {missing}, which its signature lists")
    short = [name for name, values in columns.items() if len(values) != n]
    if short:
        raise ScoringError(f"{model.label} answered {n} clips with other lengths for {short}")
    return columns


class PartWriter:
    """Each group's new rows, saved as a Parquet part every `every` clips (and at the end)."""

    def __init__(self, plan: ScorePlan, every: int) -> None:
        self.plan, self.every = plan, every
        self.pending: dict[str, list[dict[str, list[Any]]]] = {}
        self.since = 0
        self.parts = 0
        self.directory = plan.output / PARTS_DIRNAME

    def add(self, task: str, rows: dict[str, list[Any]], n_clips: int) -> None:
        self.pending.setdefault(task, []).append(rows)
        self.since += n_clips

    def batch_done(self) -> None:
        if self.since >= self.every:
            self.flush()

    def flush(self) -> None:
        by_task = {task: model for model in self.plan.models for task in model.tasks}
        self.directory.mkdir(exist_ok=True)
        for task, chunks in self.pending.items():
            schema = pa.schema([pa.field("clip_id", pa.string())] + group_fields(by_task[task], task))
            merged = {name: [v for chunk in chunks for v in chunk[name]] for name in schema.names}
            path = self.directory / f"{task}-{os.getpid()}-{self.parts:06d}.parquet"
            write_table_atomically(pa.Table.from_pydict(merged, schema=schema), path)
        self.parts += 1
        self.pending, self.since = {}, 0


def run_scoring(plan: ScorePlan, predictors: Sequence[Predictor], options: ScoreOptions,
                progress: Progress | None = None) -> int:
    """Score the plan's clips (module doc); returns how many clips went through a model."""
    from echofm.predict.stream import clip_batches

    wanted = {clip_id: plan.shards[clip_id] for clip_id in plan.to_score}
    total, done = len(wanted), 0
    if progress is not None:
        progress(0, total)
    parts = PartWriter(plan, options.checkpoint_every)
    seen: set[str] = set()
    try:
        for keys, frames in clip_batches(wanted, batch_size=options.batch_size, workers=options.loader_workers):
            for model, predict in zip(plan.models, predictors, strict=True):
                picked = [i for i, key in enumerate(keys) if key in plan.todo[model.label]]
                if not picked:
                    continue
                ids = [keys[i] for i in picked]
                answer = _as_columns(predict(frames[picked] if len(picked) < len(keys) else frames), model, len(ids))
                for task in model.tasks:
                    parts.add(task, {"clip_id": ids, **group_rows(model, task, answer, ids, plan.output)}, len(ids))
            seen.update(keys)
            done += len(keys)
            parts.batch_done()
            if progress is not None:
                progress(done, total)
    except (ShardError, OSError) as exc:
        raise ScoringError(f"cannot read the clips to score from {plan.output / SHARDS_DIRNAME}: {exc}") from exc
    finally:
        parts.flush()
    missing = sorted(set(wanted) - seen)
    if missing:
        raise ScoringError(f"{len(missing)} accepted clip(s) are missing from the shards the manifest names, "
                           f"e.g. {missing[0]} in {wanted[missing[0]].name}")
    return done


@dataclass(frozen=True)
class ScoreOutcome:
    """Where the tables are and what this run did. scored: clips through a model this run;
    kept: per task, clips whose group an earlier run had produced with the same version."""

    predictions_path: Path
    studies_path: Path
    n_clips: int
    scored: int
    kept: dict[str, int]
    n_studies: int
    clips_without_study: int
    seconds: float
    models: tuple[str, ...]


def finish_scoring(plan: ScorePlan, scored: int) -> ScoreOutcome:
    """Merge what is kept and what was saved into the tables; remove the parts (module doc)."""
    table = plan.clips.copy()
    for model in plan.models:
        for task in model.tasks:
            group = _recorded(plan.output, model, task)  # the table's kept rows and this run's parts
            table = table.merge(group, on="clip_id", how="left")
            missing = table[column_name(task, VERSION_FIELD)].isna().sum()
            if missing:
                raise ScoringError(f"{missing} clip(s) have no {task} answer from {model.label} after scoring")
    schema = prediction_schema(plan.models)
    clips_table = pa.Table.from_pandas(table[schema.names], schema=schema, preserve_index=False)
    write_table_atomically(clips_table, plan.output / PREDICTIONS_FILENAME)
    for part in (plan.output / PARTS_DIRNAME).glob("*.parquet"):
        part.unlink()
    studies, without_study = study_table(table, plan.models)
    write_table_atomically(studies, plan.output / STUDIES_FILENAME)
    return ScoreOutcome(
        predictions_path=plan.output / PREDICTIONS_FILENAME,
        studies_path=plan.output / STUDIES_FILENAME,
        n_clips=len(table),
        scored=scored,
        kept={task: len(rows) for task, rows in plan.kept.items()},
        n_studies=studies.num_rows,
        clips_without_study=without_study,
        seconds=time.time() - plan.started_at,
        models=tuple(model.label for model in plan.models),
    )


def score_archive(output: str | os.PathLike[str], models: Sequence[ScoringModel], *, tracking_uri: str | None,
                  options: ScoreOptions | None = None, progress: Progress | None = None,
                  predictors: Sequence[Predictor] | None = None) -> ScoreOutcome:
    """Plan, score and finish a run over OUT under its lock (module doc). `predictors`: the
    models' answers in memory instead of their registered pyfuncs (benchmarks)."""
    options = options or ScoreOptions()
    output = Path(output).resolve()
    with scoring_lock(output):
        plan = plan_scoring(output, models)
        log.info("%d accepted clips, %d to score with %s", len(plan.clips), len(plan.to_score),
                 ", ".join(model.label for model in models))
        if predictors is None:
            busy = [model for model in models if plan.todo[model.label]]
            loaded = {model.label: load_predictor(model, tracking_uri=tracking_uri, device=options.device,
                                                  batch_size=options.batch_size) for model in busy}
            predictors = [loaded.get(model.label, _idle) for model in models]
        # Run even with nothing to score: progress then reads 0 / 0, done.
        scored = run_scoring(plan, predictors, options, progress)
        return finish_scoring(plan, scored)


def _idle(clips: Any) -> Any:
    raise ScoringError("a model with no clip to score was asked to score")
