"""Registered champions for the scoring tests: tiny models fine-tuned briefly on the downstream
archive (tests/factories/downstream.py), logged, registered and promoted in a real registry."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc

from echofm.downstream.finetune import FinetuneConfig, finetune
from echofm.downstream.splits import SplitConfig

from tests.factories.downstream import DownstreamArchive


def register_champions(archive: DownstreamArchive, tracking_uri: str, tasks: tuple[str, ...], out: Path) -> dict[str, str]:
    """One linear-probe model per task (one epoch), each its registered model's champion;
    returns task -> `models:/<name>@champion`."""
    from echofm.registry.promote import promote
    from echofm.registry.register import log_and_register
    from echofm.store import CHAMPION

    uris = {}
    for task in tasks:
        config = FinetuneConfig(task=task, strategy="linear", epochs=1, split=SplitConfig(seed=1))
        result = finetune(config, encoder=archive.encoder_path, shards=archive.shards, labels=archive.labels_path,
                          manifest=archive.manifest_path, out_dir=out / task)
        version = log_and_register(result, tracking_uri=tracking_uri)
        promote(version.name, tracking_uri=tracking_uri)
        uris[task] = f"models:/{version.name}@{CHAMPION}"
    return uris


class Doubler(mlflow.pyfunc.PythonModel):
    """A registrable model that answers no EchoFM task (its output is `score`, not `<task>.<field>`)."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input.rename(columns={"x": "score"}) * 2
