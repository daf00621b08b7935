"""Prefect flow `pretrain`: shards -> torchrun DDP job (MAE + triplet) -> encoder in the MLflow registry.

Thin orchestration over `echofm.pretrain`: one task runs the torchrun job on this node through
`echofm.pretrain.launch` (the same launcher `echofm pretrain` uses) and streams its output into the
flow run's log. Process layout (processes per node, nodes, rendezvous) are flow parameters, so
the same flow drives a multi-node job when each node's work pool runs it with its node rank.

The options are `echofm.pretrain.config.PretrainOptions` (run, process layout, retries), defined
once for this flow and `echofm pretrain`. A job that dies for infrastructure reasons (a killed
worker, a lost node, an OOM kill) is retried, and a retry resumes from the last checkpoint in the
run directory. A diverged job (NaN/inf loss) or one refused for its inputs is not retried: it
would stop the same way again. When the encoder is registered the flow emits
`echofm.encoder.registered` (payload: name, version, alias, model URI, MLflow run), which can
trigger the fine-tuning deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import task_run as current_task_run

from echofm.pretrain.checkpointing import CHECKPOINTS_DIR, latest_checkpoint
from echofm.pretrain.config import PretrainOptions
from echofm.pretrain.launch import TrainingJobFailed, launch_pretraining

REGISTERED_EVENT = "echofm.encoder.registered"


def is_infrastructure_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a crashed or killed job; never a diverged one or one a worker refused."""
    error = state.data
    return isinstance(error, TrainingJobFailed) and error.infrastructure


@task(name="torchrun-pretrain", cache_policy=NO_CACHE, retry_condition_fn=is_infrastructure_failure)
def torchrun_task(options: PretrainOptions, shards: str, out: str) -> dict[str, Any]:
    logger = get_run_logger()
    checkpoint = latest_checkpoint(Path(out) / CHECKPOINTS_DIR)
    # A retry continues the checkpoint the failed attempt left; the first attempt resumes only
    # when asked to.
    resume = checkpoint is not None and (options.resume or current_task_run.run_count > 1)
    if resume:
        logger.info("resuming from %s", checkpoint)
    return launch_pretraining(
        options.to_config(), shards, out, spec=options.to_spec(), resume=resume, on_line=logger.info
    )


@flow(name="pretrain")
def pretrain(shards: str, out: str, options: PretrainOptions | None = None) -> dict[str, Any]:
    """Pretrain on the shards in `shards`, writing the run into `out`; returns the job's result
    (`result.json`: final step, loss, clips/s, checkpoint, registered model)."""
    options = options or PretrainOptions()
    result = torchrun_task.with_options(
        retries=options.retries, retry_delay_seconds=options.retry_delay_seconds
    )(options, shards, out)
    registered = result.get("registered")
    if registered:
        emit_event(
            event=REGISTERED_EVENT,
            resource={
                "prefect.resource.id": f"mlflow.model-version.{registered['name']}.{registered['version']}",
                "prefect.resource.name": registered["name"],
            },
            payload={**registered, "run_id": result.get("run_id"), "checkpoint": result.get("checkpoint")},
        )
        get_run_logger().info("registered %s version %s as @%s", registered["name"], registered["version"], registered["alias"])
    return result
