"""Prefect flow `echofm-pipeline`: ingest -> pretrain -> fine-tune -> evaluate -> register/promote.

Reuses the stage flows as subflows, so each stage shows up in the UI as its own flow run with its
own logs, artifacts and events, exactly as when a stage is deployed on its own. Everything passed
between stages is a path or a model URI. MLflow records go to `MLFLOW_TRACKING_URI` when it is
set (a server at scale), else to the pretraining run's SQLite store, which fine-tuning then
shares, so the encoder and the downstream models sit in one registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_markdown_artifact
from pydantic import Field, SecretStr

from echofm.report import loss_history, pipeline_report
from echofm.downstream.config import FinetuneOptions
from echofm.downstream.dataset import probe_label_table
from echofm.downstream.multitask.config import TASK_SEPARATOR, JointOptions, multitask_model_name
from echofm.downstream.tasks import PIPELINE_TASKS, TASKS, TaskName
from echofm.ingest.config import IngestOptions
from echofm.io.deid import optional_secret
from echofm.pretrain.config import PretrainOptions
from echofm.registry.promote import promote_encoder, registered_versions
from echofm.store import ENCODER_MODEL_NAME, resolve_tracking_uri
from flows.finetune import finetune_and_register
from flows.ingest import ingest_archive
from flows.pretrain import pretrain


@task(name="probe-labels", cache_policy=NO_CACHE)
def probe_labels_task(output: str, labels: str, path: str, secret_file: str | None = None) -> str:
    """The labels of the ingested clips as the pretraining report's probe table (no pseudonyms);
    labels named by path join under the secret ingestion used."""
    table = probe_label_table(Path(output) / "manifest.parquet", labels, secret=optional_secret(secret_file))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return path


@task(name="promote-encoder", cache_policy=NO_CACHE)
def promote_encoder_task(name: str, version: str, downstream: list[dict[str, Any]], tracking_uri: str) -> dict[str, Any]:
    return promote_encoder(name, version, downstream, tracking_uri=tracking_uri)


def model_name_of(entry: str | list[str]) -> str:
    """The registered model a `tasks` entry makes (a task's own, or the multi-task one)."""
    return TASKS[entry].model_name if isinstance(entry, str) else multitask_model_name(entry)


def entry_key(entry: str | list[str]) -> str:
    return entry if isinstance(entry, str) else TASK_SEPARATOR.join(entry)


@flow(name="echofm-pipeline")
def echo_pipeline(
    source: Annotated[
        str | SecretStr,
        Field(description="archive to ingest: block:NAME of a Prefect Secret block holding its path (the path itself "
                          "would be stored in the Prefect database)"),
    ],
    output: Annotated[str, Field(description="ingestion output: shards/, manifest.parquet, qc/")],
    runs: Annotated[str, Field(description="where the pretraining and fine-tuning runs are written")],
    labels: Annotated[str | None, Field(description="labels CSV/Parquet for fine-tuning; none: stop after pretraining")] = None,
    tasks: Annotated[list[TaskName | list[TaskName]], Field(
        min_length=0, description="downstream tasks to fine-tune; a list of tasks: one multi-task model")] = PIPELINE_TASKS,
    ingest: IngestOptions | None = None,
    pretraining: PretrainOptions | None = None,
    finetuning: FinetuneOptions | None = None,
    joint: JointOptions | None = None,
) -> dict[str, Any]:
    """Run every stage on `source`; returns each stage's result and the text summary.

    Single-task models are fine-tuned and promoted before multi-task ones, which are promoted
    against them. The encoder is judged by its single-task models (by the multi-task ones when
    there are none): a multi-task model that does not beat single-task champions of the same
    encoder says nothing against the encoder."""
    logger = get_run_logger()
    runs_dir = Path(runs)
    ingest_summary = ingest_archive(source, output, ingest)
    logger.info("ingestion: %s", ingest_summary.get("by_status"))

    pretrain_dir = runs_dir / "pretrain"
    pretraining = pretraining or PretrainOptions()
    if labels and pretraining.probe_labels is None:
        probes = probe_labels_task(output, labels, str(runs_dir / "probe-labels.parquet"),
                                   ingest.secret_file if ingest is not None else None)
        pretraining = pretraining.replace(probe_labels=probes)
    pretrained = pretrain(str(Path(output) / "shards"), str(pretrain_dir), pretraining)
    tracking_uri = resolve_tracking_uri(pretrain_dir)
    registered = pretrained.get("registered") or {}
    encoder = registered.get("model_uri") or str(pretrain_dir)

    downstream: dict[str, dict[str, Any]] = {}
    if labels:
        for entry in sorted(tasks, key=lambda entry: not isinstance(entry, str)):
            key = entry_key(entry)
            downstream[key] = finetune_and_register(
                task=entry,
                encoder=encoder,
                shards=str(Path(output) / "shards"),
                labels=labels,
                out=str(runs_dir / f"finetune-{key.replace(TASK_SEPARATOR, '+')}"),
                tracking_uri=tracking_uri,
                options=finetuning,
                # Labels named by path join under the secret ingestion used.
                secret_file=ingest.secret_file if ingest is not None else None,
                joint=joint,
            )

    encoder_promotion = None
    if registered.get("version") and downstream:
        single = [result for key, result in downstream.items() if key in TASKS]
        decisions = [result["promotion"] for result in (single or downstream.values()) if result.get("promotion")]
        encoder_promotion = promote_encoder_task(registered.get("name", ENCODER_MODEL_NAME), registered["version"],
                                                 decisions, tracking_uri)
        logger.info("encoder promotion: %s", encoder_promotion["reason"])

    losses = loss_history(tracking_uri, pretrained["run_id"]) if pretrained.get("run_id") else {}
    names = [ENCODER_MODEL_NAME, *(model_name_of(entry) for entry in tasks if entry_key(entry) in downstream)]
    registry = {name: versions for name in names if (versions := registered_versions(name, tracking_uri=tracking_uri))}
    summary = pipeline_report(
        ingest=ingest_summary, pretrain=pretrained, downstream=downstream, losses=losses, registry=registry,
        encoder_promotion=encoder_promotion,
    )
    create_markdown_artifact(markdown=f"```\n{summary}\n```", key="echofm-pipeline-summary",
                             description="clips by status, pretraining losses, downstream metrics, registry")
    return {
        "ingest": ingest_summary,
        "pretrain": pretrained,
        "downstream": downstream,
        "encoder_promotion": encoder_promotion,
        "losses": losses,
        "registry": registry,
        "tracking_uri": tracking_uri,
        "summary": summary,
    }
