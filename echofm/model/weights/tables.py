"""Tensor conversions between checkpoint layouts: position tables, tubelet kernels, pixel heads.

Pure functions on tensors; shapes in the docstrings. Every conversion here is one the load report
names (`how`), so each returns a short description of what it did.

- A joint position table (one vector per token, learned or fixed sin-cos) becomes this model's
  separable spatial + temporal tables by the best additive least-squares fit (`additive_fit`).
- Tables whose grid differs are resampled bicubically in space and linearly in time.
- A tubelet kernel is inflated to a longer tubelet (a whole multiple of the source's) or folded
  onto a shorter one (a whole divisor); either way the kernel summed over time is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

# How a kernel with fewer frames than the target tubelet is spread over it (see `fit_tubelet`).
INFLATIONS: tuple[str, ...] = ("average", "centre")


def sincos_1d_table(n_positions: int, dim: int) -> torch.Tensor:
    """The fixed sinusoid table of VideoMAE-style encoders: `[1, n_positions, dim]` float32.

    Position `n`, channel `j`: angle `n / 10000 ** (2 * (j // 2) / dim)`; sine on even channels,
    cosine on odd ones. VideoMAE adds it to the flattened token sequence (slot order) and does
    not store it in its checkpoints, so a loader regenerates it.
    """
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    channel = torch.arange(dim)
    angle = position / torch.pow(10000.0, (2 * (channel // 2)).double() / dim)
    table = torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


def additive_fit(joint: torch.Tensor, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a joint position table into the best additive spatial + temporal pair.

    Args:
        joint: `[1, t*h*w, D]` in slot order (`s = ti*h*w + hi*w + wi`).
        grid: `(t, h, w)`.

    Returns:
        spatial `[1, h*w, D]` and temporal `[1, t, D]` minimising
        `sum (joint[ti, si] - spatial[si] - temporal[ti])**2` per channel: the spatial table is
        the mean over time, the temporal table the mean over space minus the grand mean (only
        the sum is determined; the constant goes to the spatial table). Exact when `joint` is
        additive; for a single time slice the spatial table is `joint` and the temporal zero.
    """
    t, h, w = grid
    if joint.shape[1] != t * h * w:
        raise ValueError(f"joint table of {joint.shape[1]} tokens does not match grid {grid}")
    table = joint.double().reshape(t, h * w, joint.shape[-1])
    spatial = table.mean(dim=0)
    temporal = table.mean(dim=1) - table.mean(dim=(0, 1))
    return spatial.unsqueeze(0).to(joint.dtype), temporal.unsqueeze(0).to(joint.dtype)


def resample_spatial(table: torch.Tensor, side: int) -> torch.Tensor:
    """Bicubic resampling of a square spatial table: `[1, h*w, D]` -> `[1, side*side, D]`."""
    source = math.isqrt(table.shape[1])
    if source * source != table.shape[1]:
        raise ValueError(f"spatial table of {table.shape[1]} tokens is not square")
    grid = table.double().reshape(1, source, source, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, side * side, -1).to(table.dtype)


def resample_temporal(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linear resampling of a temporal table over its span: `[1, t, D]` -> `[1, length, D]`."""
    line = table.double().transpose(1, 2)  # [1, D, t]
    resized = F.interpolate(line, size=length, mode="linear", align_corners=False)
    return resized.transpose(1, 2).to(table.dtype)


def fit_tubelet(kernel: torch.Tensor, frames: int, inflation: str = "average") -> tuple[torch.Tensor, str]:
    """Bring a tubelet kernel `[D, C, pt, p, p]` to `frames` time steps; returns `(kernel, how)`.

    - `frames = k * pt` (inflation): "average" tiles the source kernel k times and divides by k,
      so a token is the mean of the k source tokens of its sub-tubelets (from a 2D kernel, pt = 1:
      I3D's averaged inflation); "centre" puts the source kernel on sub-tubelet `k // 2` and zeros
      elsewhere, so a token is the source token of its centre sub-tubelet.
    - `pt = k * frames` (merge): the kernel is folded onto the shorter tubelet by summing the k
      groups of frames, so a clip that is constant over each source tubelet embeds as before.

    Either way the kernel summed over time equals the source kernel summed over time.

    Raises:
        ValueError: neither tubelet is a whole multiple of the other, or `inflation` is unknown.
    """
    if inflation not in INFLATIONS:
        raise ValueError(f"inflation must be one of {INFLATIONS}, got {inflation!r}")
    source = kernel.shape[2]
    if frames == source:
        return kernel, ""
    if frames % source == 0:
        k = frames // source
        if inflation == "average":
            return kernel.repeat(1, 1, k, 1, 1) / k, (
                f"inflated from {source} to {frames} frames (average: kernel tiled {k}x, / {k})")
        out = kernel.new_zeros(kernel.shape[0], kernel.shape[1], frames, *kernel.shape[3:])
        centre = k // 2
        out[:, :, centre * source:(centre + 1) * source] = kernel
        return out, (f"inflated from {source} to {frames} frames (centre: kernel on frames "
                     f"{centre * source}-{(centre + 1) * source - 1}, zeros elsewhere)")
    if source % frames == 0:
        k = source // frames
        merged = kernel.reshape(*kernel.shape[:2], k, frames, *kernel.shape[3:]).sum(dim=2)
        return merged, f"merged from {source} to {frames} frames (sum of {k} groups of frames)"
    raise ValueError(f"a {source}-frame tubelet kernel cannot become a {frames}-frame one: "
                     "neither is a whole multiple of the other")


def fit_prediction_frames(head: torch.Tensor, source_frames: int, frames: int) -> torch.Tensor:
    """Pixel-prediction rows `[source_frames * P, ...]` (frame-major, as `patchify` orders a
    tubelet) -> `[frames * P, ...]`, each target frame taking the nearest source frame in time
    (a head that predicts one frame per tubelet predicts it for every frame of the tubelet)."""
    per_frame = head.shape[0] // source_frames
    rows = head.reshape(source_frames, per_frame, *head.shape[1:])
    index = torch.arange(frames) * source_frames // frames
    return rows[index].reshape(frames * per_frame, *head.shape[1:])
