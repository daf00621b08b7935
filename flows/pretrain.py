"""Prefect flow `pretrain`: shards -> torchrun DDP job (MAE + triplet) -> encoder in the MLflow registry.

Thin orchestration over `echofm.pretrain`: one task runs the torchrun job on this node through
`echofm.pretrain.launch` (the same launcher `echofm pretrain` uses) and streams its output into the
flow run's log. Process layout (processes per node, nodes, rendezvous) are flow parameters, so
the same flow drives a multi-node job when each node's work pool runs it with its node rank.

A job that dies for infrastructure reasons (a killed worker, a lost node, an OOM kill) is retried,
and a retry resumes from the last checkpoint in the run directory. A diverged job (NaN/inf loss)
is not retried: it would diverge again. When the encoder is registered the flow emits
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
from pydantic import BaseModel, ConfigDict, Field

from echofm.data.augment import AugmentConfig
from echofm.pretrain.checkpointing import latest_checkpoint
from echofm.pretrain.config import PretrainConfig
from echofm.pretrain.launch import LaunchSpec, TrainingDiverged, TrainingJobFailed, launch_pretraining

REGISTERED_EVENT = "echofm.encoder.registered"


class PretrainOptions(BaseModel):
    """Run options (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str = Field(default="tiny", description="model preset: tiny, base or large")
    steps: int | None = Field(default=None, ge=1, description="optimiser steps (or give epochs)")
    epochs: int | None = Field(default=None, ge=1, description="passes over the training clips")
    batch_size: int = Field(default=8, ge=1, description="clips per process per micro-batch")
    accum_steps: int = Field(default=1, ge=1, description="micro-batches per optimiser step")
    base_lr: float = Field(default=1.5e-4, gt=0, description="lr per 256 clips of effective batch")
    precision: str = Field(default="auto", pattern="^(auto|bf16|fp16|fp32)$")
    img_size: int | None = Field(default=None, ge=16, description="frame side (default: the preset's)")
    num_frames: int | None = Field(default=None, ge=4, description="frames per clip (default: the preset's)")
    num_workers: int = Field(default=2, ge=0, description="data-loader processes per rank")
    augment: bool = Field(default=True, description="per-clip intensity and affine augmentation")
    holdout_clips: int = Field(default=8, ge=0, description="held-out clips for figures and the collapse monitor")
    ckpt_every: int = Field(default=100, ge=1)
    eval_every: int = Field(default=100, ge=0)
    seed: int = Field(default=0)
    register_model: bool = Field(default=True, description="register the encoder as echofm-encoder@challenger")
    experiment_name: str = Field(default="echofm-pretrain")
    nproc_per_node: int = Field(default=1, ge=1, description="processes per node (GPUs, or CPU ranks)")
    nnodes: int = Field(default=1, ge=1)
    node_rank: int = Field(default=0, ge=0)
    rdzv_endpoint: str | None = Field(default=None, description="HOST:PORT of the c10d rendezvous (multi-node)")
    rdzv_id: str = Field(default="echofm-pretrain", description="job id shared by every node")
    retries: int = Field(default=2, ge=0, le=10, description="resumed retries after an infrastructure failure")
    retry_delay_seconds: int = Field(default=30, ge=0, description="pause before a retry (lets a node come back)")
    resume: bool = Field(default=False, description="continue the run directory's last checkpoint")

    def to_config(self) -> PretrainConfig:
        return PretrainConfig(
            preset=self.preset,
            steps=self.steps,
            epochs=self.epochs,
            batch_size=self.batch_size,
            accum_steps=self.accum_steps,
            base_lr=self.base_lr,
            precision=self.precision,
            img_size=self.img_size,
            num_frames=self.num_frames,
            num_workers=self.num_workers,
            augment=AugmentConfig() if self.augment else None,
            holdout_clips=self.holdout_clips,
            ckpt_every=self.ckpt_every,
            eval_every=self.eval_every,
            seed=self.seed,
            register_model=self.register_model,
            experiment_name=self.experiment_name,
        )

    def to_spec(self) -> LaunchSpec:
        return LaunchSpec(
            nproc_per_node=self.nproc_per_node,
            nnodes=self.nnodes,
            node_rank=self.node_rank,
            rdzv_endpoint=self.rdzv_endpoint,
            rdzv_id=self.rdzv_id,
        )


def is_infrastructure_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a crashed or killed job; never a diverged one or a bug in the options."""
    error = state.data
    return isinstance(error, TrainingJobFailed) and not isinstance(error, TrainingDiverged)


@task(name="torchrun-pretrain", cache_policy=NO_CACHE, retry_condition_fn=is_infrastructure_failure)
def torchrun_task(options: PretrainOptions, shards: str, out: str) -> dict[str, Any]:
    logger = get_run_logger()
    checkpoint = latest_checkpoint(Path(out) / "checkpoints")
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
    options = options or PretrainOptions(steps=100)
    options.to_config()  # invalid options fail here, before any process starts
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
