"""Prefect flow `ingest_archive`: archive -> QC -> view filter -> 32-frame clips in shards + manifest.

Thin orchestration over `echofm.ingest`: one task plans (discover, resume), one task per *batch*
of files ingests (never one per file: Prefect cannot carry 290K task runs), one task merges the
manifest and validates its contract. Batches run on a process pool over the local cores by
default, or on a Dask cluster when `dask_address` is given (prefect-dask). The run ends with a
summary artifact and an `echofm.ingest.completed` event that can trigger pretraining.

No raw SOURCE path is stored in the Prefect database. The `source` parameter is either a
`pydantic.SecretStr` (what `echofm ingest` and the pipeline pass: Prefect persists it as
`**********`) or `block:NAME`, the name of a Prefect `Secret` block holding the path (what
deployments pass; block values are stored encrypted). A plain path from a deployment or an API
call is refused. Exceptions leave the tasks through `echofm.boundary.project_errors`: this
project's text only, no chained library messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from pydantic import SecretStr

from echofm.boundary import project_errors
from echofm.data import storage
from echofm.ingest.batch import BatchResult
from echofm.ingest.config import IngestConfig, IngestOptions
from echofm.ingest.discover import SourceError
from echofm.ingest.run import BatchSpec, IngestOutcome, IngestPlan, finalize_ingest, plan_ingest, run_batch, sole_writer
from echofm.ingest.summary import IngestSummary, summarize, summary_markdown

COMPLETED_EVENT = "echofm.ingest.completed"


def batch_task_runner(*, workers: int | None, dask_address: str | None) -> TaskRunner[Any]:
    """Where batches run: the Dask cluster at `dask_address`, else a local process pool; one
    worker runs in this process (a pool of one would only add a process start, ~10 s of imports)."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return ThreadPoolTaskRunner(max_workers=1)
    return ProcessPoolTaskRunner(max_workers=workers)


@contextmanager
def api_shared_with_workers() -> Iterator[None]:
    """Make batch workers in other processes report to this run's API.

    With the ephemeral API (no PREFECT_API_URL), each worker process would otherwise start its own
    temporary server (tens of seconds each on a busy machine) and its task runs would not appear
    under this flow run. The URL travels in the settings that the process pool and prefect-dask
    hand to their workers.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: str(get_client(sync_client=True).api_url)}):
        yield


SOURCE_BLOCK_PREFIX = "block:"


class SourceNotABlock(SourceError):
    """A plain SOURCE path came from a deployment or the API, where Prefect stores it as given."""

    reason = "source_not_a_block"


def resolve_source(source: str | SecretStr) -> str:
    """The SOURCE path behind the flow's `source` parameter (see the module docstring)."""
    if isinstance(source, SecretStr):
        return source.get_secret_value()
    if source.startswith(SOURCE_BLOCK_PREFIX):
        from prefect.blocks.system import Secret

        try:
            return str(Secret.load(source[len(SOURCE_BLOCK_PREFIX) :]).get())
        except ValueError:
            raise SourceError("no Prefect Secret block of that name holds the SOURCE path") from None
    raise SourceNotABlock(
        "a plain SOURCE path is stored as given in the Prefect database; save it in a Secret block "
        "and pass source=block:NAME"
    )


@task(name="plan-ingest", cache_policy=NO_CACHE)
def plan_task(source: SecretStr, output: str, config: IngestConfig) -> IngestPlan:
    with project_errors("plan-ingest"):
        return plan_ingest(source.get_secret_value(), output, config)


# No retries: a batch fails as a task only for systemic reasons (OUTPUT unwritable); a file's own
# problems are rows, not exceptions.
@task(name="ingest-batch", cache_policy=NO_CACHE, task_run_name="ingest-batch-{batch.batch_id}")
def batch_task(source: str, output: str, config: IngestConfig, batch: BatchSpec) -> BatchResult:
    with project_errors("ingest-batch"):
        result = run_batch(source, output, config, batch)
    # The rows are in the batch's Parquet part already; return counts, not the rows, so the
    # process pool / Dask moves a few hundred bytes per batch.
    result.rows = []
    return result


@task(name="finalize-ingest", cache_policy=NO_CACHE)
def finalize_task(plan: IngestPlan, results: list[BatchResult], workers: int) -> tuple[IngestSummary, IngestOutcome]:
    with project_errors("finalize-ingest"):
        outcome = finalize_ingest(plan, results)
    summary = summarize(
        outcome.new_rows,
        seconds=outcome.seconds,
        manifest_rows=outcome.n_manifest_rows,
        workers=workers,
        stage_seconds=outcome.stage_seconds,
    )
    # The flow needs counts, not the rows (hundreds of thousands on a first run).
    return summary, replace(outcome, new_rows=[])


def _publish(summary: IngestSummary, outcome: IngestOutcome, output: Path | str, min_new_clips: int) -> None:
    output_name = storage.name(output)
    create_markdown_artifact(
        markdown=summary_markdown(summary, title=f"Ingestion into {output_name}"),
        key="echofm-ingest-summary",
        description="counts by status, reason and view; throughput",
    )
    create_table_artifact(
        table=[{"status": status, "files": count} for status, count in summary.by_status.items()]
        + [{"status": f"reason: {reason}", "files": count} for reason, count in summary.by_reason.items()],
        key="echofm-ingest-counts",
        description="files by status and reason in this run",
    )
    emit_event(
        event=COMPLETED_EVENT,
        # Automations match resource labels, not payload values: the threshold decision travels
        # as a label so a deployment trigger can fire on "enough new clips" alone.
        resource={
            "prefect.resource.id": f"echofm.archive.{output_name}",
            "prefect.resource.name": output_name,
            "echofm.enough-new-clips": str(summary.clips >= min_new_clips).lower(),
        },
        payload={
            "new_accepted": summary.clips,
            "new_files": summary.files,
            "manifest_rows": outcome.n_manifest_rows,
            "output": str(output),
            "manifest": str(outcome.manifest_path),
            "shards": str(storage.join(output, "shards")),
        },
    )


@flow(name="ingest-archive")
# `str` first: Prefect validates parameters with pydantic, which would turn "block:NAME" into a
# SecretStr (and accept a plain path unrefused) were SecretStr the first member of the union.
def ingest_archive(source: str | SecretStr, output: str, options: IngestOptions | None = None) -> dict[str, Any]:
    """Ingest the archive at `source` into `output` (shards/, manifest.parquet, qc/).

    source: the SOURCE path as a `SecretStr`, or `block:NAME` of a Prefect Secret block holding
    it (see the module docstring). Re-running adds only files not yet recorded; a killed run
    resumes. One run per OUTPUT at a time: a second one raises `OutputLocked` at once. Raises `SourceError`, `OutputError`, `ContractViolation` or a `DeidError` (no
    secret, a secret or path map inside OUTPUT) for systemic failures; a file's problems are
    rows. Returns the run summary (counts, throughput).
    """
    options = options or IngestOptions()
    with sole_writer(resolve_source(source), output):
        return _ingest_locked(source, output, options)


def _ingest_locked(source: SecretStr | str, output: str, options: IngestOptions) -> dict[str, Any]:
    logger = get_run_logger()
    plan = plan_task(SecretStr(resolve_source(source)), output, options.to_config())
    logger.info(
        "%d files discovered, %d already recorded, %d batches to run",
        plan.n_discovered, plan.n_already_recorded, len(plan.batches),
    )
    results: list[BatchResult] = []
    if plan.batches:
        workers = min(options.workers or os.cpu_count() or 1, len(plan.batches))
        with api_shared_with_workers(), batch_task_runner(workers=workers, dask_address=options.dask_address) as runner:
            futures = [
                runner.submit(
                    batch_task,
                    {"source": str(plan.source), "output": str(plan.output), "config": plan.config, "batch": batch},
                )
                for batch in plan.batches
            ]
            results = [future.result() for future in futures]
    # The batches (every file of the run) are done with: the merge needs the output and the clock.
    summary, outcome = finalize_task(replace(plan, batches=()), results, options.workers or os.cpu_count() or 1)
    _publish(summary, outcome, plan.output, options.min_new_clips_for_pretraining)
    return summary.as_dict()
