"""A fine-tuned model as an MLflow pyfunc that takes raw clips.

Input: uint8 grey `[N, T, H, W]`, uint8 `[N, T, H, W, C]` (C = 1 grey or 3 RGB), or N clips
`[T, H, W(, C)]` of different lengths and sizes as a 1-D object array (a plain list too when the
Python model is called directly; MLflow's loader only takes arrays); any T >= 16 and any H, W.
Inside: frames taken evenly over the clip, resize-pad to the
shard size then the encoder's size, grey to three channels, the pretraining normalisation (all
from the checkpoint's `InputSpec`, see `echofm.preprocess.clips`).

Output per kind of task (`echofm.downstream.objectives`; one column group named after the task):
- regression (ef): DataFrame with one column per output (`ef`, in percent).
- multiclass (view): DataFrame `<task>` (class name), `confidence`, and `prob_<class>` per class.
- binary (reduced_ef): DataFrame `<task>_probability` and `<task>` (probability >= threshold).
- segmentation: dict `masks` uint8 `[N, T', H, W]` (LV masks at the input's size for the T'
  frames the model saw) and `frame_indices` int64 `[N, T']` (which input frames those are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from echofm.downstream.model import DownstreamModel, load_downstream
from echofm.preprocess.clips import ClipInputError, InputSpec, fit_raw_clip, to_model_input
from echofm.store import pip_requirements

CHECKPOINT_ARTIFACT = "checkpoint"
DEFAULT_THRESHOLD = 0.5
BATCH_SIZE = 8


def as_clip_list(clips: Any) -> list[np.ndarray]:
    """Raw clip input (module doc) as a list of uint8 `[T, H, W, C]` arrays; ClipInputError otherwise."""
    if isinstance(clips, np.ndarray) and clips.dtype != object:
        batch = clips[..., None] if clips.ndim == 4 else clips
        if batch.ndim != 5 or batch.dtype != np.uint8 or batch.shape[-1] not in (1, 3):
            raise ClipInputError(f"expected uint8 [N, T, H, W] or [N, T, H, W, C], got {clips.dtype} {clips.shape}")
        return list(batch)
    out = []
    for clip in clips:
        clip = np.asarray(clip)
        clip = clip[..., None] if clip.ndim == 3 else clip
        if clip.ndim != 4 or clip.dtype != np.uint8 or clip.shape[-1] not in (1, 3):
            raise ClipInputError(f"each clip must be uint8 [T, H, W] or [T, H, W, C], got {clip.dtype} {clip.shape}")
        out.append(clip)
    if not out:
        raise ClipInputError("no clips given")
    return out


def predict_clips(model: DownstreamModel, clips: Any, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """Predictions for raw clips (see the module doc for the input forms and the output)."""
    clips = as_clip_list(clips)
    spec: InputSpec = model.inputs
    fitted, indices = zip(*(fit_raw_clip(clip, spec) for clip in clips))
    decoded = []
    with torch.no_grad():
        for start in range(0, len(fitted), BATCH_SIZE):
            video = to_model_input(np.stack(fitted[start : start + BATCH_SIZE]), spec)
            decoded.append(model.task.decode(model(video)))
    out = np.concatenate(decoded)
    return model.task.objective.outputs(model.task, out, clips, np.stack(indices), threshold)


class EchoFMPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow face of a fine-tuned checkpoint (artifact `checkpoint`, a `model.pt`)."""

    def load_context(self, context: Any) -> None:
        loaded = load_downstream(context.artifacts[CHECKPOINT_ARTIFACT])
        self.model = loaded.model
        self.meta = loaded.meta

    # No type hints on predict: MLflow would try to derive a schema from them and warn; the
    # explicit signature (`signature_for`) is the contract.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """Raw clips (module doc) -> the task's predictions."""
        threshold = float((params or {}).get("threshold", DEFAULT_THRESHOLD))
        return predict_clips(self.model, model_input, threshold)


def input_example(spec: InputSpec, *, channels: int = 1) -> np.ndarray:
    """A small raw clip batch `[1, min_frames, 48, 64, channels]` uint8 (deterministic)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(1, spec.min_frames, 48, 64, channels), dtype=np.uint8)


def signature_for(model: DownstreamModel) -> Any:
    """Explicit signature: raw clips in (object tensor `[-1]`), the task's outputs out.

    The input is declared as MLflow's "ragged" tensor (object, `(-1,)`), the one tensor spec
    whose rank MLflow does not fix: a uint8 spec pins the rank, which would refuse either grey
    `[N, T, H, W]` or `[N, T, H, W, C]`, and every list of clips of different sizes. The real
    contract is checked by `as_clip_list`, with a specific error, and written in the model card.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(object), (-1,))])
    columns = model.task.objective.output_columns(model.task)
    if all(len(column) == 2 for column in columns):
        outputs = Schema([ColSpec(kind, name) for name, kind in columns])
    else:
        outputs = Schema([TensorSpec(dtype, shape, name) for name, dtype, shape in columns])
    params = ParamSchema([ParamSpec("threshold", "double", DEFAULT_THRESHOLD)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_pyfunc(model: DownstreamModel, checkpoint: Path, *, registered_model_name: str | None = None) -> Any:
    """Log the checkpoint as a pyfunc model named "model" in the active run; returns ModelInfo."""
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=EchoFMPyfunc(),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        signature=signature_for(model),
        input_example=input_example(model.inputs),
        pip_requirements=pip_requirements(),
        registered_model_name=registered_model_name,
    )
