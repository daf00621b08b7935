"""The registered view model as ingestion's view classifier.

Ingestion names its classifier by a "module:callable" spec, so each worker process builds its
own: `echofm.registry.views:champion_view_classifier` is the champion of the `view` task.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from echofm.downstream.evaluate import load_model
from echofm.downstream.task import column_name
from echofm.downstream.tasks import TASKS
from echofm.errors import RegistryError
from echofm.ingest.views import CANONICAL_VIEWS, ViewPrediction
from echofm.registry.pyfunc import predict_clips
from echofm.store import CHAMPION

VIEW_TASK = TASKS["view"]
CHAMPION_VIEW_MODEL = f"models:/{VIEW_TASK.model_name}@{CHAMPION}"


class RegistryViewClassifier:
    """The registered view model as an ingestion `ViewClassifier` (`echofm.ingest.views`).

    `classify(meta, frames)` runs on the masked, resized first window uint8 `[T, H, W, C]`;
    `classify_frames(frames)` returns `(view, confidence)`. Views the model was not trained on
    cannot come out; a class name outside the canonical list is reported as OTHER_CARDIAC.
    Load lazily, so a worker process builds its own copy on first use.
    """

    needs_pixels = True

    def __init__(self, model_uri: str = CHAMPION_VIEW_MODEL, *, tracking_uri: str | None = None) -> None:
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            self._model = load_model(self.model_uri, tracking_uri=self.tracking_uri).eval()
        return self._model

    def classify_frames(self, frames: np.ndarray) -> tuple[str, float]:
        frame = predict_clips(self._load(), np.asarray(frames)[None])
        return (str(frame[column_name(VIEW_TASK.name, "class")].iloc[0]),
                float(frame[column_name(VIEW_TASK.name, "confidence")].iloc[0]))

    def classify(self, meta: Any, frames: np.ndarray | None = None) -> ViewPrediction:
        if frames is None:
            raise RegistryError("the registry view classifier needs pixels")
        view, confidence = self.classify_frames(frames)
        view = view if view in CANONICAL_VIEWS else "OTHER_CARDIAC"
        return ViewPrediction(view, f"model:{self.model_uri}", min(max(confidence, 0.0), 1.0))


def champion_view_classifier() -> RegistryViewClassifier:
    """Factory for ingestion's "module:callable" spec (tracking URI from MLFLOW_TRACKING_URI)."""
    return RegistryViewClassifier()
