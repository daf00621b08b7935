"""Prefect flow `score-archive`: the clips and studies of an ingested archive through the models.

Thin orchestration over `echofm.predict`: one task resolves and checks the models (every model
error before any scoring), one task scores OUT's accepted clips incrementally and writes
OUT/predictions.parquet and OUT/study_predictions.parquet. Progress (clips scored / total) is a
progress artifact and log lines; the run ends with the summary as markdown and table artifacts
and an `echofm.predictions.completed` event. Without `models`, the current champion of every
task that has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from echofm.predict.config import ScoreOptions
from echofm.predict.models import ScoringModel
from echofm.predict.summary import ScoreSummary

COMPLETED_EVENT = "echofm.predictions.completed"
# Log a progress line each time this share of the clips more is done (and at the end).
LOG_EVERY = 0.1


@task(name="resolve-models", cache_policy=NO_CACHE)
def resolve_task(models: list[str] | None, tracking_uri: str) -> tuple[ScoringModel, ...]:
    from echofm.predict.models import champion_uris
    from echofm.predict.scoring import prepare_models

    resolved = prepare_models(models or champion_uris(tracking_uri=tracking_uri), tracking_uri=tracking_uri)
    get_run_logger().info("scoring with %s", ", ".join(f"{m.label} ({', '.join(m.tasks)})" for m in resolved))
    return resolved


class ProgressReport:
    """Clips scored / total as a progress artifact and, every `LOG_EVERY` of the total, a log line."""

    def __init__(self) -> None:
        self.artifact = create_progress_artifact(0.0, key="echofm-scoring-progress", description="clips scored / total")
        self.logged = -1.0

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        update_progress_artifact(self.artifact, 100.0 * share, description=f"{done} / {total} clips scored")
        if share - self.logged >= LOG_EVERY or done == total:
            get_run_logger().info("scored %d / %d clips (%.0f%%)", done, total, 100.0 * share)
            self.logged = share


@task(name="score-clips", cache_policy=NO_CACHE)
def score_task(output: str, models: tuple[ScoringModel, ...], tracking_uri: str, options: ScoreOptions) -> ScoreSummary:
    from echofm.predict.scoring import score_archive as score
    from echofm.predict.summary import summarize

    outcome = score(output, models, tracking_uri=tracking_uri, options=options, progress=ProgressReport())
    return summarize(outcome, output)


def _publish(summary: ScoreSummary, output: Path, models: tuple[ScoringModel, ...]) -> None:
    create_markdown_artifact(markdown=summary.markdown(f"Predictions for {output.name}"), key="echofm-predictions-summary",
                             description="models, clips scored, studies, files without a clip")
    create_table_artifact(table=summary.table(), key="echofm-predictions-counts", description="the scoring run in counts")
    emit_event(
        event=COMPLETED_EVENT,
        resource={"prefect.resource.id": f"echofm.predictions.{output.name}", "prefect.resource.name": output.name},
        payload={"output": str(output), "predictions": summary.predictions, "studies": summary.studies_table,
                 "clips": summary.clips, "scored": summary.scored, "models": [m.version_uri for m in models]},
    )


@flow(name="score-archive")
def score_archive(output: str, models: list[str] | None = None, tracking_uri: str | None = None,
                  options: ScoreOptions | None = None) -> dict[str, Any]:
    """Score the ingestion output `output` (manifest.parquet + shards/) with `models`
    (`models:/NAME@ALIAS` or `models:/NAME/VERSION`; default: every task's champion) from the
    registry at `tracking_uri` (default MLFLOW_TRACKING_URI). Re-runs score only what changed.
    Returns the summary (counts, paths)."""
    from echofm.store import required_tracking_uri

    tracking_uri = required_tracking_uri(tracking_uri)
    resolved = resolve_task(models, tracking_uri)
    summary = score_task(output, resolved, tracking_uri, options or ScoreOptions())
    _publish(summary, Path(output).resolve(), resolved)
    return summary.as_dict()
