"""A fine-tuned model as an MLflow pyfunc that takes raw clips.

Input (`as_clip_list`): a batch of clips, uint8 grey `[N, T, H, W]` or `[N, T, H, W, C]` (C = 1
grey or 3 RGB), or N clips `[T, H, W(, C)]` of different lengths and sizes as a 1-D object array
(a plain list too when the Python model is called directly; MLflow's loader only takes arrays);
any T >= 16 and any H, W. Through `mlflow models serve` the batch is MLflow's JSON tensor input,
`{"inputs": [clip, ...]}`, which MLflow parses into an object array of numbers: integers in
0-255 are taken as uint8, anything else is refused. Input that breaks the contract (wrong rank,
too few frames, values that are not uint8, no clip) raises an MLflow `INVALID_PARAMETER_VALUE`
error whose message names the problem, so the scoring server answers 400 with that one line.
Inside: frames taken evenly over the clip, resize-pad to the shard size then the encoder's size,
grey to three channels, the pretraining normalisation (all from the checkpoint's `InputSpec`, see
`echofm.preprocess.clips`).

Output: one column group `<task>.<field>` per task (`echofm.downstream.objectives`), a multi-task
model's groups side by side (`join_outputs`: one DataFrame, or with masks a dict of arrays, one
per column):
- regression (ef): DataFrame `ef.value` (percent), or one column per named output.
- multiclass (view): DataFrame `<task>.class`, `<task>.confidence`, `<task>.prob_<class>` per class.
- binary (reduced_ef): DataFrame `<task>.probability` and `<task>.positive` (probability >= threshold).
- segmentation: dict `<task>.masks` uint8 `[N, T', H, W]` (LV masks at the input's size for the
  T' frames the model saw) and `<task>.frame_indices` int64 `[N, T']` (which input frames those are).

Loading options (`mlflow.pyfunc.load_model(..., model_config=...)`): `device` (`auto`, the
default: the GPU when there is one; `cpu`, `cuda:1`, ...) and `batch_size` (clips per forward
pass, default `BATCH_SIZE`). On the CPU the answer for a clip does not depend on the batch it came
in (checked by the tests), so the same model version gives the same numbers bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from echofm.device import resolve_device
from echofm.downstream.model import DownstreamModel
from echofm.downstream.multitask.model import MultiTaskModel, load_fine_tuned
from echofm.downstream.objectives import join_outputs, joined_columns
from echofm.preprocess.clips import ClipInputError, InputSpec, fit_raw_clip, to_model_input
from echofm.store import pip_requirements

FineTunedModel = DownstreamModel | MultiTaskModel
CHECKPOINT_ARTIFACT = "checkpoint"
DEFAULT_THRESHOLD = 0.5
BATCH_SIZE = 8
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"device": "auto", "batch_size": BATCH_SIZE}
INPUT_FORMS = "uint8 [N, T, H, W] (grey) or [N, T, H, W, C] with C = 1 or 3"


def _as_uint8(values: np.ndarray, what: str) -> np.ndarray:
    """`values` as uint8: uint8 as is; an object array of numbers (MLflow's parse of JSON, which
    has no uint8) when every one is an integer in 0-255; ClipInputError naming the problem
    otherwise."""
    if values.dtype == np.uint8:
        return values
    if values.dtype != object:
        raise ClipInputError(f"{what} must be uint8, got {values.dtype}")
    try:
        numbers = np.array(values.tolist())
    except ValueError:
        raise ClipInputError(f"{what} is ragged: its frames or rows differ in size") from None
    if numbers.dtype.kind not in "iu":
        found = "numbers with a fraction" if numbers.dtype.kind == "f" else f"{numbers.dtype} values"
        raise ClipInputError(f"{what} must be uint8 (integers 0-255), got {found}")
    if numbers.size and (numbers.min() < 0 or numbers.max() > 255):
        raise ClipInputError(f"{what} must be uint8: values run from {numbers.min()} to {numbers.max()}, outside 0-255")
    return numbers.astype(np.uint8)


def _one_clip(clip: Any, index: int) -> np.ndarray:
    clip = np.asarray(clip, dtype=object if isinstance(clip, list) else None)
    if clip.ndim not in (3, 4) or (clip.ndim == 4 and clip.shape[-1] not in (1, 3)):
        raise ClipInputError(f"clip {index} must be [T, H, W] or [T, H, W, C] with C = 1 or 3, got shape {clip.shape}")
    clip = _as_uint8(clip, f"clip {index}")
    return clip[..., None] if clip.ndim == 3 else clip


def as_clip_list(clips: Any) -> list[np.ndarray]:
    """Raw clip input (module doc) as a list of uint8 `[T, H, W, C]` arrays; ClipInputError
    naming the problem otherwise (a clip's frame count is checked by `fit_raw_clip`)."""
    if isinstance(clips, np.ndarray) and clips.dtype == object and clips.ndim > 1:
        clips = _as_uint8(clips, "the clip batch")  # numbers from JSON: one regular array
    if isinstance(clips, np.ndarray) and clips.dtype != object:
        if clips.size == 0 or not len(clips):
            raise ClipInputError(f"no clips given (shape {clips.shape}): expected {INPUT_FORMS}, N >= 1")
        if clips.ndim not in (4, 5) or (clips.ndim == 5 and clips.shape[-1] not in (1, 3)):
            hint = " (one clip [T, H, W] goes in a batch of one: [[...]])" if clips.ndim == 3 else ""
            raise ClipInputError(f"expected {INPUT_FORMS}; got a {clips.ndim}-D array of shape {clips.shape}{hint}")
        batch = _as_uint8(clips, "the clip batch")
        return list(batch[..., None] if batch.ndim == 4 else batch)
    if isinstance(clips, (str, bytes)) or not hasattr(clips, "__iter__"):
        raise ClipInputError(f"expected {INPUT_FORMS} or a list of clips, got {type(clips).__name__}")
    out = [_one_clip(clip, i) for i, clip in enumerate(clips)]
    if not out:
        raise ClipInputError(f"no clips given: expected {INPUT_FORMS}, N >= 1")
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict_clips(model: FineTunedModel, clips: Any, threshold: float = DEFAULT_THRESHOLD, *,
                  batch_size: int = BATCH_SIZE) -> Any:
    """Predictions for raw clips (see the module doc for the input forms and the output), on
    the device the model is on: one encoder pass per clip, whatever the number of tasks."""
    clips = as_clip_list(clips)
    spec: InputSpec = model.inputs
    fitted, indices = [], []
    for i, clip in enumerate(clips):
        try:
            frames, kept = fit_raw_clip(clip, spec)
        except ClipInputError as exc:
            raise ClipInputError(f"clip {i}: {exc}") from None
        fitted.append(frames)
        indices.append(kept)
    device = model_device(model)
    decoded: dict[str, list[np.ndarray]] = {task.task: [] for task in model.task_specs}
    with torch.no_grad():
        for start in range(0, len(fitted), batch_size):
            video = to_model_input(np.stack(fitted[start : start + batch_size]), spec).to(device)
            outputs = model.task_outputs(video)
            for task in model.task_specs:
                decoded[task.task].append(task.decode(outputs[task.task]))
    frames = np.stack(indices)
    return join_outputs([task.objective.outputs(task, np.concatenate(decoded[task.task]), clips, frames, threshold)
                         for task in model.task_specs])


class EchoFMPyfunc(mlflow.pyfunc.PythonModel):
    """The MLflow face of a fine-tuned checkpoint (artifact `checkpoint`, a `model.pt`)."""

    def load_context(self, context: Any) -> None:
        config = {**DEFAULT_MODEL_CONFIG, **dict(getattr(context, "model_config", None) or {})}
        loaded = load_fine_tuned(context.artifacts[CHECKPOINT_ARTIFACT])
        self.model = loaded.model.to(resolve_device(str(config["device"])))
        self.batch_size = int(config["batch_size"])
        self.meta = loaded.meta

    # No type hints on predict: MLflow would try to derive a schema from them and warn; the
    # explicit signature (`signature_for`) is the contract.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """Raw clips (module doc) -> the task's predictions; malformed input -> MLflow's
        INVALID_PARAMETER_VALUE (HTTP 400) with the problem in one line."""
        from mlflow.exceptions import MlflowException

        threshold = float((params or {}).get("threshold", DEFAULT_THRESHOLD))
        try:
            return predict_clips(self.model, model_input, threshold, batch_size=self.batch_size)
        except ClipInputError as exc:
            raise MlflowException.invalid_parameter_value(f"invalid clip input: {exc}") from None


def input_example(spec: InputSpec, *, channels: int = 1) -> np.ndarray:
    """A small raw clip batch `[1, min_frames, 48, 64, channels]` uint8 (deterministic)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(1, spec.min_frames, 48, 64, channels), dtype=np.uint8)


def signature_for(model: FineTunedModel) -> Any:
    """Explicit signature: raw clips in (object tensor `[-1]`), the tasks' outputs out
    (`joined_columns`: one group per task).

    The input is declared as MLflow's "ragged" tensor (object, `(-1,)`), the one tensor spec
    whose rank MLflow does not fix: a uint8 spec pins the rank, which would refuse either grey
    `[N, T, H, W]` or `[N, T, H, W, C]`, and every list of clips of different sizes. The real
    contract is checked by `as_clip_list`, with a specific error, and written in the model card.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(object), (-1,))])
    columns = joined_columns(model.task_specs)
    if all(len(column) == 2 for column in columns):
        outputs = Schema([ColSpec(kind, name) for name, kind in columns])
    else:
        outputs = Schema([TensorSpec(dtype, shape, name) for name, dtype, shape in columns])
    params = ParamSchema([ParamSpec("threshold", "double", DEFAULT_THRESHOLD)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_pyfunc(model: FineTunedModel, checkpoint: Path, *, registered_model_name: str | None = None) -> Any:
    """Log the checkpoint as a pyfunc model named "model" in the active run; returns ModelInfo."""
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=EchoFMPyfunc(),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        signature=signature_for(model),
        input_example=input_example(model.inputs),
        pip_requirements=pip_requirements(),
        # Declared so that `load_model(..., model_config=...)` may override them (MLflow ignores
        # the loading options of a model logged without any).
        model_config=DEFAULT_MODEL_CONFIG,
        registered_model_name=registered_model_name,
    )
