"""A fine-tuned model as an MLflow pyfunc that takes raw clips.

Input: uint8 `[N, T, H, W, C]` (C = 1 grey or 3 RGB; the project's clip layout with a batch axis),
any T >= 16 and any H, W; the Python model also accepts grey `[N, T, H, W]` when called
directly, but MLflow's schema check fixes the rank at 5, so through `mlflow.pyfunc.load_model`
pass grey clips as `[..., 1]`. Inside: frames taken evenly over the clip, resize-pad to the
shard size then the encoder's size, grey to three channels, the pretraining normalisation (all
from the checkpoint's `InputSpec`, see `echofm.train.clips`).

Output per task:
- ef: DataFrame `ef` (percent).
- view: DataFrame `view` (class name), `confidence`, and `prob_<class>` per class.
- reduced_ef: DataFrame `reduced_ef_probability` and `reduced_ef` (probability >= threshold).
- segmentation: dict `masks` uint8 `[N, T', H, W]` (LV masks at the input's size for the T'
  frames the model saw) and `frame_indices` int64 `[N, T']` (which input frames those are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from echofm.train.clips import ClipInputError, InputSpec, fit_raw_clip, to_model_input
from echofm.train.downstream import DownstreamModel, load_downstream

CHECKPOINT_ARTIFACT = "checkpoint"
DEFAULT_THRESHOLD = 0.5
BATCH_SIZE = 8


def unpad_masks(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """Undo `resize_pad` on mask probabilities `[T, s, s]`: uint8 masks `[T, height, width]`."""
    size = probabilities.shape[-1]
    scale = size / max(height, width)
    new_h, new_w = min(size, max(1, round(height * scale))), min(size, max(1, round(width * scale)))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = np.empty((probabilities.shape[0], height, width), dtype=np.uint8)
    for i, frame in enumerate(probabilities):
        crop = np.ascontiguousarray(frame[top : top + new_h, left : left + new_w], dtype=np.float32)
        out[i] = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
    return out


def predict_clips(model: DownstreamModel, clips: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """Predictions for raw clips uint8 `[N, T, H, W(, C)]` (see the module doc for the output)."""
    clips = np.asarray(clips)
    if clips.ndim == 4:
        clips = clips[..., None]
    if clips.ndim != 5 or clips.dtype != np.uint8:
        raise ClipInputError(f"expected uint8 [N, T, H, W(, C)], got {clips.dtype} {clips.shape}")
    spec: InputSpec = model.inputs
    fitted, indices = zip(*(fit_raw_clip(clip, spec) for clip in clips))
    decoded = []
    with torch.no_grad():
        for start in range(0, len(fitted), BATCH_SIZE):
            video = to_model_input(np.stack(fitted[start : start + BATCH_SIZE]), spec)
            decoded.append(model.task.decode(model(video)))
    out = np.concatenate(decoded)
    task = model.task
    if task.task == "ef":
        return pd.DataFrame({"ef": out.astype(np.float64)})
    if task.task == "view":
        best = out.argmax(axis=1)
        frame = pd.DataFrame({"view": [task.classes[i] for i in best], "confidence": out.max(axis=1).astype(np.float64)})
        for i, name in enumerate(task.classes):
            frame[f"prob_{name}"] = out[:, i].astype(np.float64)
        return frame
    if task.task == "reduced_ef":
        return pd.DataFrame({"reduced_ef_probability": out.astype(np.float64), "reduced_ef": out >= threshold})
    height, width = clips.shape[2], clips.shape[3]
    masks = np.stack([unpad_masks((p >= threshold).astype(np.float32), height, width) for p in out])
    return {"masks": masks, "frame_indices": np.stack(indices).astype(np.int64)}


class EchoFMPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow face of a fine-tuned checkpoint (artifact `checkpoint`, a `model.pt`)."""

    def load_context(self, context: Any) -> None:
        loaded = load_downstream(context.artifacts[CHECKPOINT_ARTIFACT])
        self.model = loaded.model
        self.meta = loaded.meta

    # No type hints on predict: MLflow would try to derive a schema from them and warn; the
    # explicit tensor signature (`signature_for`) is the contract.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """uint8 clips `[N, T, H, W(, C)]` -> the task's predictions (module doc)."""
        threshold = float((params or {}).get("threshold", DEFAULT_THRESHOLD))
        return predict_clips(self.model, np.asarray(model_input), threshold)


def input_example(spec: InputSpec, *, channels: int = 1) -> np.ndarray:
    """A small raw clip batch `[1, min_frames, 48, 64, channels]` uint8 (deterministic)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(1, spec.min_frames, 48, 64, channels), dtype=np.uint8)


def signature_for(model: DownstreamModel) -> Any:
    """Explicit tensor signature: uint8 `[-1, -1, -1, -1, -1]` in, the task's outputs out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1, -1))])
    task = model.task
    if task.task == "ef":
        outputs = Schema([ColSpec("double", "ef")])
    elif task.task == "view":
        outputs = Schema([ColSpec("string", "view"), ColSpec("double", "confidence")]
                         + [ColSpec("double", f"prob_{name}") for name in task.classes])
    elif task.task == "reduced_ef":
        outputs = Schema([ColSpec("double", "reduced_ef_probability"), ColSpec("boolean", "reduced_ef")])
    else:
        outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1), "masks"),
                          TensorSpec(np.dtype(np.int64), (-1, -1), "frame_indices")])
    params = ParamSchema([ParamSpec("threshold", "double", DEFAULT_THRESHOLD)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_pyfunc(model: DownstreamModel, checkpoint: Path, *, registered_model_name: str | None = None) -> Any:
    """Log the checkpoint as a pyfunc model named "model" in the active run; returns ModelInfo."""
    import echofm

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"echofm-pipeline=={echofm.__version__}"]
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=EchoFMPyfunc(),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        signature=signature_for(model),
        input_example=input_example(model.inputs),
        pip_requirements=requirements,
        registered_model_name=registered_model_name,
    )
