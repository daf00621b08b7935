"""A fine-tuned model as an MLflow pyfunc that takes raw clips.

Input: uint8 grey `[N, T, H, W]`, uint8 `[N, T, H, W, C]` (C = 1 grey or 3 RGB), or N clips
`[T, H, W(, C)]` of different lengths and sizes as a 1-D object array (a plain list too when the
Python model is called directly; MLflow's loader only takes arrays); any T >= 16 and any H, W.
Inside: frames taken evenly over the clip, resize-pad to the
shard size then the encoder's size, grey to three channels, the pretraining normalisation (all
from the checkpoint's `InputSpec`, see `echofm.preprocess.clips`).

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

from echofm.preprocess.clips import ClipInputError, InputSpec, fit_raw_clip, to_model_input
from echofm.downstream.model import DownstreamModel, load_downstream

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
    masks = [unpad_masks((p >= threshold).astype(np.float32), clip.shape[1], clip.shape[2])
             for p, clip in zip(out, clips)]
    if len({m.shape for m in masks}) == 1:
        return {"masks": np.stack(masks), "frame_indices": np.stack(indices).astype(np.int64)}
    # Clips of different sizes: one mask array per clip, at that clip's size.
    ragged = np.empty(len(masks), dtype=object)
    ragged[:] = masks
    return {"masks": ragged, "frame_indices": np.stack(indices).astype(np.int64)}


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
    from echofm.pretrain.tracker import package_version

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"echofm-pipeline=={package_version()}"]
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=EchoFMPyfunc(),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        signature=signature_for(model),
        input_example=input_example(model.inputs),
        pip_requirements=requirements,
        registered_model_name=registered_model_name,
    )
