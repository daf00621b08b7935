"""Prefect flow `finetune-and-register`: fine-tune -> evaluate -> register -> promote.

Thin orchestration over `echofm.downstream` and `echofm.registry`: four tasks, each a separate step that can be retried or
re-run on its own, passing paths and one `models:/NAME/VERSION` URI between them, never arrays.

1. `finetune`: trains the head/strategy on the pretrained encoder and on a random one (same split),
   writes `model.pt` + `result.json`.
2. `evaluate`: re-scores the saved checkpoint on the test split (the file that gets registered is
   the file that was scored).
3. `register`: logs the run and the raw-clip pyfunc to MLflow, registers `echofm-<task>`, alias
   `challenger`; emits `echofm.downstream.registered`.
4. `promote`: moves `champion` to that version only if it beats the current champion by the
   thresholds of its task (`Task.promotion`, `echofm.downstream.tasks`) (or there is none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from echofm.downstream.finetune import FinetuneConfig
from echofm.downstream.splits import SplitConfig

REGISTERED_EVENT = "echofm.downstream.registered"


class FinetuneOptions(BaseModel):
    """Fine-tuning options (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str = Field(default="linear", pattern="^(linear|mlp|attentive|full|progressive)$",
                          description="frozen encoder + linear/mlp/attentive head, full fine-tuning, or progressive unfreezing")
    head: str | None = Field(default=None, pattern="^(linear|mlp|attentive)$", description="head for full/progressive")
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=8, ge=1)
    lr: float | None = Field(default=None, gt=0, description="default 1e-3 frozen, 3e-4 full/progressive")
    layer_decay: float = Field(default=0.75, gt=0, le=1, description="layer-wise lr decay")
    unfreeze_every: int = Field(default=1, ge=1, description="progressive: epochs per newly unfrozen block")
    val_fraction: float = Field(default=0.15, ge=0, lt=1)
    test_fraction: float = Field(default=0.15, ge=0, lt=1)
    seed: int = Field(default=0)
    compare_random_init: bool = Field(default=True, description="also train on a random encoder (the baseline)")
    device: str = Field(default="auto")
    promote: bool = Field(default=True, description="run the promotion step after registering")

    def to_config(self, task: str) -> FinetuneConfig:
        return FinetuneConfig(
            task=task, strategy=self.strategy, head=self.head, epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, layer_decay=self.layer_decay, unfreeze_every=self.unfreeze_every, seed=self.seed,
            compare_random_init=self.compare_random_init, device=self.device,
            split=SplitConfig(val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed),
        )


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(config: FinetuneConfig, encoder: str, shards: str, labels: str, manifest: str | None,
                  out: str, tracking_uri: str) -> dict[str, Any]:
    from echofm.downstream.finetune import finetune

    result = finetune(config, encoder=encoder, shards=shards, labels=labels, manifest=manifest, out_dir=out,
                      tracking_uri=tracking_uri)
    get_run_logger().info("%s test metrics: pretrained %s, random init %s", config.task, result.test_metrics,
                          result.random_init.metrics.get("test") if result.random_init else None)
    return {"checkpoint": str(result.checkpoint), "pretrained": result.pretrained.metrics,
            "random_init": result.random_init.metrics if result.random_init else None, "counts": result.counts}


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(checkpoint: str, shards: str, labels: str, manifest: str | None) -> dict[str, float]:
    from echofm.downstream.evaluate import evaluate

    return evaluate(checkpoint, shards=shards, labels=labels, manifest=manifest, split="test")


@task(name="register", cache_policy=NO_CACHE)
def register_task(checkpoint: str, labels: str, tracking_uri: str) -> str:
    from echofm.data.loader import file_digest
    from echofm.registry.register import log_and_register

    registered = log_and_register(checkpoint, tracking_uri=tracking_uri, labels_digest=file_digest(labels))
    emit_event(
        event=REGISTERED_EVENT,
        resource={"prefect.resource.id": f"mlflow.model-version.{registered.name}.{registered.version}",
                  "prefect.resource.name": registered.name},
        payload={"model_uri": registered.model_uri, "run_id": registered.run_id, "alias": "challenger"},
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
    task: str,
    encoder: str,
    shards: str,
    labels: str,
    out: str,
    manifest: str | None = None,
    tracking_uri: str | None = None,
    options: FinetuneOptions | None = None,
) -> dict[str, Any]:
    """Fine-tune `encoder` (RUN_DIR, checkpoint or models:/echofm-encoder@champion) for `task`
    (ef | view | reduced_ef | segmentation), register the result, and try to promote it.

    Returns the model URI, both arms' metrics, the re-scored test metrics and the promotion
    decision (None when `options.promote` is off).
    """
    from echofm.store import default_tracking_uri

    options = options or FinetuneOptions()
    config = options.to_config(task)  # invalid options fail here, before any work
    tracking_uri = tracking_uri or default_tracking_uri(encoder, out)
    trained = finetune_task(config, encoder, shards, labels, manifest, out, tracking_uri)
    scored = evaluate_task(trained["checkpoint"], shards, labels, manifest)
    model_uri = register_task(trained["checkpoint"], labels, tracking_uri)
    decision = promote_task(model_uri, tracking_uri) if options.promote else None
    return {"task": task, "model_uri": model_uri, "tracking_uri": tracking_uri, "checkpoint": trained["checkpoint"],
            "pretrained": trained["pretrained"], "random_init": trained["random_init"], "test": scored,
            "promotion": decision, "out": str(Path(out))}
