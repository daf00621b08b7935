"""Clips into encoder input, the same way for fine-tuning, evaluation and the registered pyfunc.

Shard clips are uint8 `[32, 224, 224, C]` (already windowed by timestamps and resize-padded at
ingestion). The encoder may be built for fewer frames or a smaller size (the tiny preset), so
`fit_clip` takes evenly spaced frames and resizes; a raw clip handed to a registered model
(`[T, H, W]` or `[T, H, W, C]`, any T and size) is resize-padded first, as ingestion would have.
`InputSpec` records all of it, including the pixel normalisation of pretraining, and travels in
every fine-tuned checkpoint so the pyfunc reproduces it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from echofm.preprocess.resample import resize_pad
from echofm.downstream.labels import snap_labelled_frames


class ClipInputError(ValueError):
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

    `k * n_source // n_out`, the pretraining loader's rule (every 2nd of 32 for 16), so a
    window keeps its duration; with `n_out > n_source` frames repeat.
    """
    if n_source < 1 or n_out < 1:
        raise ClipInputError("frame counts must be positive")
    return (np.arange(n_out, dtype=np.int64) * n_source) // n_out


def resize_square(frames: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """Square uint8 frames `[T, S, S, C]` to `[T, size, size, C]`.

    Antialiased bilinear like the pretraining loader (`nearest` for masks), rounded back to uint8.
    """
    t, h, w, c = frames.shape
    if (h, w) == (size, size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if nearest:
        x = F.interpolate(x, size=(size, size), mode="nearest")
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


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


def read_shard_clips(
    shard_paths: Iterable[str | Path], clip_ids: Iterable[str], spec: InputSpec
) -> dict[str, np.ndarray]:
    """Decode the wanted clips from their shards, fitted to `spec`: `{clip_id: [T', s, s, C]}`.

    Each shard is read once, front to back (tar archives have no index); samples not wanted are
    skipped without decoding.
    """
    from echofm.data.loader import decode_sample, iter_shard_samples

    wanted = set(clip_ids)
    found: dict[str, np.ndarray] = {}
    for sample in iter_shard_samples(sorted({Path(p) for p in shard_paths})):
        key = sample["__key__"]
        if key in wanted and key not in found:
            found[key] = fit_clip(decode_sample(sample), spec)
    return found
