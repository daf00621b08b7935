"""Clips into encoder input: the one chain pretraining, fine-tuning, evaluation and the pyfunc share.

Shard clips are uint8 `[32, 224, 224, C]` (already windowed by timestamps and resize-padded at
ingestion). The encoder may be built for fewer frames or a smaller size (the tiny preset). One
rule picks frames (`even_indices`, every 2nd of 32 for 16) and one resizes them
(`resize_frames`, antialiased bilinear); on top of them:

- `prepare_clip`: the pretraining loader's path, float all the way, with augmentation: the
  per-epoch-invariant `resample_clip` (which the loader may keep in memory), then `finish_clip`;
- `fit_clip` then `to_model_input`: the downstream path, which keeps fitted clips as uint8 in
  memory between epochs; `fit_mask` carries label masks through the same frame choice;
- `fit_raw_clip`: a raw clip handed to a registered model (`[T, H, W]` or `[T, H, W, C]`, any T
  and size) is resize-padded first, as ingestion would have, and `unpad_masks` maps predicted
  masks back onto it.

`InputSpec` records all of it, including the pixel normalisation of pretraining, and travels in
every fine-tuned checkpoint so the pyfunc reproduces it exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from echofm.errors import PreprocessError
from echofm.preprocess.resample import resize_pad


class ClipInputError(PreprocessError, ValueError):
    """A clip array that is not uint8 `[T, H, W]` / `[T, H, W, C]` with C in (1, 3), or too short."""


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What the encoder expects: `[B, in_chans, num_frames, img_size, img_size]` float.

    mean/std: per-channel normalisation of intensities in [0, 1] (pretraining's
    `ClipNormalization`; one value is broadcast over channels). shard_frames/shard_size: the
    ingestion contract a raw clip is first brought to. min_frames: shortest raw clip accepted.
    """

    num_frames: int
    img_size: int
    in_chans: int = 3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    shard_frames: int = 32
    shard_size: int = 224
    min_frames: int = 16

    def __post_init__(self) -> None:
        if min(self.num_frames, self.img_size, self.shard_frames, self.shard_size, self.min_frames) < 1:
            raise ClipInputError(f"sizes and frame counts must be positive: {self}")
        if self.in_chans not in (1, 3):
            raise ClipInputError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if len(self.mean) not in (1, self.in_chans) or len(self.std) not in (1, self.in_chans):
            raise ClipInputError("mean/std need one value or one per channel")
        if any(s <= 0 for s in self.std):
            raise ClipInputError("std must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        data = dict(data)
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)


def as_thwc(frames: np.ndarray) -> np.ndarray:
    """uint8 `[T, H, W]` or `[T, H, W, C]` (C = 1 or 3) as `[T, H, W, C]`."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ClipInputError(f"clip must be uint8 [T, H, W(, C)], got {frames.dtype} {frames.shape}")
    return frames


def even_indices(n_source: int, n_out: int) -> np.ndarray:
    """`n_out` evenly strided frame indices over `[0, n_source)`: int64 `[n_out]`.

    `k * n_source // n_out` (every 2nd of 32 for 16), so a window keeps its duration; with
    `n_out > n_source` frames repeat.
    """
    if n_source < 1 or n_out < 1:
        raise ClipInputError("frame counts must be positive")
    return (np.arange(n_out, dtype=np.int64) * n_source) // n_out


def resize_frames(frames: torch.Tensor, size: int, *, nearest: bool = False) -> torch.Tensor:
    """Square float frames `[T, C, S, S]` to `[T, C, size, size]`: antialiased bilinear
    (`nearest` for masks); unchanged when already that size."""
    if frames.shape[-2:] == (size, size):
        return frames
    if nearest:
        return F.interpolate(frames, size=(size, size), mode="nearest")
    return F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def resize_square(frames: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """Square uint8 frames `[T, S, S, C]` to `[T, size, size, C]` (`resize_frames`, rounded back to uint8)."""
    if frames.shape[1:3] == (size, size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = resize_frames(x, size, nearest=nearest)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class Normalization(Protocol):
    """Per-channel intensity statistics in [0, 1] units (the pretraining `ClipNormalization`)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, clip: torch.Tensor) -> torch.Tensor: ...


def resample_clip(frames: np.ndarray, *, img_size: int, num_frames: int) -> torch.Tensor:
    """uint8 `[T0, H0, W0, C]` -> float `[C, num_frames, img_size, img_size]` in [0, 1]: temporal
    subsampling (`even_indices`; a clip shorter than `num_frames` is refused), then the spatial
    resize (`resize_frames`). The part of `prepare_clip` that is the same at every epoch, so the
    loader may hold its result in memory (`echofm/data/clip_cache.py`)."""
    if not 0 < num_frames <= frames.shape[0]:
        raise ClipInputError(f"cannot take {num_frames} frames from a clip of {frames.shape[0]}")
    picked = frames[even_indices(frames.shape[0], num_frames)]
    clip = torch.from_numpy(np.ascontiguousarray(picked)).permute(0, 3, 1, 2).float().div_(255.0)  # [T, C, H, W]
    return resize_frames(clip, img_size).transpose(0, 1).contiguous()  # [C, T, H, W]


def finish_clip(
    clip: torch.Tensor,
    *,
    normalization: Normalization,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A `resample_clip` result -> standardised float `[3, T, H, W]`: augmentation (float `[C, T, H,
    W]` in [0, 1] units), normalisation, grey to three channels. Works in place on `clip` (pass a
    copy of a clip that is kept). A grey clip is worked on as one channel and returned as a
    broadcast view of three: the loader's per-clip cost is then a third of an RGB clip's
    (collation copies it into the batch anyway)."""
    if augment is not None:
        clip = augment(clip)
    if clip.shape[0] == 1 and len(set(normalization.mean)) == 1 and len(set(normalization.std)) == 1:
        clip = clip.sub_(normalization.mean[0]).div_(normalization.std[0])
        return clip.expand(3, -1, -1, -1)
    return normalization.apply(clip)  # broadcasts a grey [1, T, H, W] clip to 3 channels


def prepare_clip(
    frames: np.ndarray,
    *,
    img_size: int,
    num_frames: int,
    normalization: Normalization,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """uint8 `[T0, H0, W0, C]` (C = 1 or 3) -> standardised float `[3, num_frames, img_size, img_size]`:
    `resample_clip` then `finish_clip`."""
    return finish_clip(
        resample_clip(frames, img_size=img_size, num_frames=num_frames),
        normalization=normalization,
        augment=augment,
    )


def fit_clip(frames: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A shard clip `[T, S, S, C]` to the encoder's frames, size and channels: uint8 `[T', s, s, in_chans]`.

    An archive mixes grey (C = 1) and colour (C = 3) clips; fitting the channels here lets clips
    of both kinds share one batch. Grey is repeated over colour channels, colour averaged for a
    1-channel encoder (the same rule as `to_model_input`).
    """
    frames = as_thwc(frames)
    fitted = resize_square(frames[even_indices(frames.shape[0], spec.num_frames)], spec.img_size)
    if fitted.shape[-1] == spec.in_chans:
        return fitted
    if fitted.shape[-1] == 1:
        return np.repeat(fitted, spec.in_chans, axis=-1)
    return fitted.mean(axis=-1, keepdims=True).round().astype(np.uint8)


def fit_mask(mask: np.ndarray, valid: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """A shard-aligned mask `[T, S, S]` and `valid` `[T]` through `fit_clip`'s frame choice.

    A labelled frame that the stride skips moves to the nearest kept frame within half a stride
    (tracings label single ED/ES frames; dropping every one the stride misses would lose most).
    Returns `(mask uint8 [T', s, s], valid bool [T'])`.
    """
    idx = even_indices(mask.shape[0], spec.num_frames)
    tolerance = max(mask.shape[0] / spec.num_frames, 1.0) / 2.0
    picked = np.zeros((len(idx), *mask.shape[1:]), dtype=mask.dtype)
    picked_valid = np.zeros(len(idx), dtype=bool)
    labelled = np.flatnonzero(valid)
    for i, k in snap_labelled_frames(idx, labelled, tolerance):
        picked[k], picked_valid[k] = mask[labelled[i]], True
    resized = resize_square(picked[..., None], spec.img_size, nearest=True)[..., 0]
    return resized, picked_valid


def fit_raw_clip(frames: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """A raw clip of any length >= `spec.min_frames` and any size to `[T', s, s, C]`.

    As ingestion then the loader would: `shard_frames` frames evenly over the whole clip,
    resize-pad to `shard_size`, then `fit_clip`. A raw clip carries no frame rate, so the
    caller is expected to pass about one cardiac cycle (ingestion's window). Returns the clip
    and the raw index of each kept frame `[T']`.
    """
    frames = as_thwc(frames)
    if frames.shape[0] < spec.min_frames:
        raise ClipInputError(f"clip has {frames.shape[0]} frames, at least {spec.min_frames} needed")
    to_shard = even_indices(frames.shape[0], spec.shard_frames)
    shard_like = resize_pad(np.ascontiguousarray(frames[to_shard]), spec.shard_size)
    kept = to_shard[even_indices(spec.shard_frames, spec.num_frames)]
    return fit_clip(shard_like, spec), kept


def to_model_input(clips: np.ndarray | torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 `[N, T, s, s, C]` to normalised float `[N, in_chans, T, s, s]`.

    Grey clips are repeated over colour channels (and colour averaged to grey for a 1-channel
    encoder), then scaled to [0, 1] and normalised with `spec.mean`/`spec.std`.
    """
    x = torch.as_tensor(clips)
    if x.ndim != 5:
        raise ClipInputError(f"clips must be [N, T, H, W, C], got {tuple(x.shape)}")
    x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)
    if x.shape[1] != spec.in_chans:
        x = x.mean(dim=1, keepdim=True).expand(-1, spec.in_chans, -1, -1, -1)
    mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, -1, 1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype).view(1, -1, 1, 1, 1)
    return (x - mean) / std


def snap_labelled_frames(
    sampled: np.ndarray, labelled: Sequence[int] | np.ndarray, tolerance: float
) -> list[tuple[int, int]]:
    """Pairs `(i, k)`: labelled frame `labelled[i]` moves to sampled position `k`, the nearest
    sampled frame within `tolerance` frames; each position takes the first label that reaches it,
    and a label with no sampled frame that near is dropped."""
    sampled = np.asarray(sampled)
    taken: set[int] = set()
    pairs = []
    for i, frame in enumerate(labelled):
        distance = np.abs(sampled - frame)
        nearest = int(np.argmin(distance))
        if distance[nearest] <= tolerance and nearest not in taken:
            taken.add(nearest)
            pairs.append((i, nearest))
    return pairs


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
