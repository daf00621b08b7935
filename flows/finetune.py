"""Prefect flow `finetune-and-register`: fine-tune -> evaluate -> register -> promote.

Thin orchestration over `echofm.downstream` and `echofm.registry`: four tasks, each a separate
step that can be retried or re-run on its own, passing paths and one `models:/NAME/VERSION` URI
between them, never arrays. The options are `echofm.downstream.config.FinetuneOptions`, the same
model `echofm finetune` builds its flags from.

1. `finetune`: trains the head/strategy on the pretrained encoder and on each baseline of
   `options.compare` (a random one by default; imported ImageNet/Kinetics/published EchoFM
   weights too), same split, writes `model.pt` + `result.json`.
2. `evaluate`: re-scores the saved checkpoint on the test split (the file that gets registered is
   the file that was scored).
3. `register`: logs the run and the raw-clip pyfunc to MLflow, registers the task's model
   (`echofm-<task>`), alias `challenger`; emits `echofm.downstream.registered`.
4. `promote`: moves `champion` to that version only if it beats the current champion by the
   thresholds of its task (`Task.promotion`, `echofm.downstream.tasks`) (or there is none).

Several tasks (`task=["ef", "view"]`) make one multi-task model (`echofm.downstream.multitask`,
options `joint`), compared per task with single-task models and a random encoder, re-scored on
every task, registered as `echofm-multitask-<tasks>` and promoted per task against the
single-task champions.

Labels that name files by path join through the de-identification secret: the `secret_file`
parameter or `ECHOFM_DEID_SECRET`, read inside the tasks (the secret itself never is a
parameter). Exceptions leave the tasks as `echofm.boundary.project_errors` makes them: this
project's text only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import Field

from echofm.boundary import project_errors
from echofm.downstream.config import FinetuneConfig, FinetuneOptions
from echofm.downstream.multitask.config import JointOptions, MultitaskConfig
from echofm.downstream.tasks import TaskName
from echofm.ingest.config import SECRET_FILE_HELP
from echofm.io.deid import optional_secret
from echofm.store import CHALLENGER

REGISTERED_EVENT = "echofm.downstream.registered"


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(config: FinetuneConfig | MultitaskConfig, encoder: str, shards: str, labels: str, manifest: str | None,
                  out: str, tracking_uri: str, secret_file: str | None = None) -> dict[str, Any]:
    from echofm.downstream.finetune import finetune
    from echofm.downstream.multitask.train import finetune_multitask

    secret = optional_secret(secret_file)
    if isinstance(config, MultitaskConfig):
        with project_errors("finetune"):
            joint = finetune_multitask(config, encoder=encoder, shards=shards, labels=labels, manifest=manifest,
                                       out_dir=out, tracking_uri=tracking_uri, secret=secret)
        get_run_logger().info("%s test metrics by task (multi-task, single-task, random init): %s",
                              ",".join(config.tasks), joint.comparison())
        return {"checkpoint": str(joint.checkpoint), "pretrained": joint.multitask.metrics,
                "random_init": joint.random_init.metrics if joint.random_init else None,
                "baselines": {name: arm.metrics for name, arm in joint.baselines.items()},
                "single_task": {t: arm.metrics for t, arm in joint.single_task.items()},
                "comparison": joint.comparison(), "counts": joint.counts}
    with project_errors("finetune"):
        result = finetune(config, encoder=encoder, shards=shards, labels=labels, manifest=manifest, out_dir=out,
                          tracking_uri=tracking_uri, secret=secret)
    comparison = result.summary()["comparison"]
    get_run_logger().info("%s test metrics by arm: %s", config.task, comparison["test"])
    return {"checkpoint": str(result.checkpoint), "pretrained": result.pretrained.metrics,
            "random_init": result.random_init.metrics if result.random_init else None,
            "baselines": {name: arm.metrics for name, arm in result.baselines.items()},
            "comparison": comparison, "counts": result.counts}


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(checkpoint: str, shards: str, labels: str, manifest: str | None, multitask: bool,
                  secret_file: str | None = None) -> dict[str, Any]:
    """The test metrics of the saved checkpoint (by task for a multi-task model)."""
    from echofm.downstream.evaluate import evaluate, evaluate_tasks

    with project_errors("evaluate"):
        if multitask:
            return evaluate_tasks(checkpoint, shards=shards, labels=labels, manifest=manifest, split="test",
                                  secret=optional_secret(secret_file))
        return evaluate(checkpoint, shards=shards, labels=labels, manifest=manifest, split="test",
                        secret=optional_secret(secret_file))


@task(name="register", cache_policy=NO_CACHE)
def register_task(checkpoint: str, labels: str, tracking_uri: str) -> str:
    from echofm.data.loader import file_digest
    from echofm.registry.register import log_and_register

    registered = log_and_register(checkpoint, tracking_uri=tracking_uri, labels_digest=file_digest(labels))
    emit_event(
        event=REGISTERED_EVENT,
        resource={"prefect.resource.id": f"mlflow.model-version.{registered.name}.{registered.version}",
                  "prefect.resource.name": registered.name},
        payload={"model_uri": registered.model_uri, "run_id": registered.run_id, "alias": CHALLENGER},
    )
    return registered.model_uri


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(model_uri: str, tracking_uri: str) -> dict[str, Any]:
    from echofm.registry.promote import promote
    from echofm.store import parse_model_uri

    name, version = parse_model_uri(model_uri)
    decision = promote(name, tracking_uri=tracking_uri, expected_challenger=version)
    get_run_logger().info("promotion of %s: %s", model_uri, decision.reason)
    return decision.to_dict()


@flow(name="finetune-and-register")
def finetune_and_register(
    task: TaskName | list[TaskName],
    encoder: str,
    shards: str,
    labels: str,
    out: str,
    manifest: str | None = None,
    tracking_uri: str | None = None,
    options: FinetuneOptions | None = None,
    promote: bool = True,
    joint: JointOptions | None = None,
    secret_file: Annotated[str | None, Field(description=SECRET_FILE_HELP)] = None,
) -> dict[str, Any]:
    """Fine-tune `encoder` (RUN_DIR, checkpoint, export folder, models:/echofm-encoder@champion
    or a published checkpoint: anything `echofm.model.load_pretrained` reads) for `task`
    (a registered task, `echofm.downstream.tasks`; several: one multi-task model with the
    `joint` options), register the result, and with `promote` try to promote it.

    Returns the model URI, every arm's metrics (side by side under `comparison`; by task for a
    multi-task model, with the single-task comparison), the re-scored test metrics and the
    promotion decision (None when `promote` is off).
    """
    from echofm.store import default_tracking_uri

    options = options or FinetuneOptions()
    tasks = [task] if isinstance(task, str) else list(task)
    config = (MultitaskConfig.build(tasks, options, joint or JointOptions()) if len(tasks) > 1
              else options.for_task(tasks[0]))
    tracking_uri = tracking_uri or default_tracking_uri(encoder, out)
    trained = finetune_task(config, encoder, shards, labels, manifest, out, tracking_uri, secret_file)
    scored = evaluate_task(trained["checkpoint"], shards, labels, manifest, len(tasks) > 1, secret_file)
    model_uri = register_task(trained["checkpoint"], labels, tracking_uri)
    decision = promote_task(model_uri, tracking_uri) if promote else None
    return {"task": task, "model_uri": model_uri, "tracking_uri": tracking_uri, "checkpoint": trained["checkpoint"],
            "pretrained": trained["pretrained"], "random_init": trained["random_init"],
            "baselines": trained["baselines"], "single_task": trained.get("single_task"),
            "comparison": trained["comparison"], "counts": trained.get("counts"), "test": scored,
            "promotion": decision, "out": str(Path(out))}
