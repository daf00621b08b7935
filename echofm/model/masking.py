"""Token masking for the MAE: which tokens the encoder sees, and how to put them back.

All functions are vectorised over the batch (no Python loop over samples). A `MaskPlan` holds
three views of the same per-sample permutation:

- `ids_keep [B, L_vis]`: slot indices of the visible tokens, in the order the encoder sees them;
- `ids_restore [B, L]`: for each slot, its position in `cat([visible, masked])`, so
  `gather(cat([visible, masked]), ids_restore)` puts every token back into its own slot;
- `mask [B, L]`: 1.0 where the slot is masked (hidden from the encoder), 0.0 where visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from echofm.model.config import MASK_MODES, ModelConfigError


@dataclass(frozen=True)
class MaskPlan:
    """Visible/masked split of `L` token slots for each of `B` clips (shapes in module docstring)."""

    ids_keep: torch.Tensor
    ids_restore: torch.Tensor
    mask: torch.Tensor


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """Tokens left visible when masking `mask_ratio` of `num_tokens`: `floor(L * (1 - r))`, >= 1.

    The small epsilon keeps exact products exact (`1568 * 0.25` is 392, not 391.99...).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ModelConfigError(f"mask_ratio must lie in [0, 1), got {mask_ratio!r}")
    return max(1, math.floor(num_tokens * (1.0 - mask_ratio) + 1e-6))


def plan_from_noise(noise: torch.Tensor, len_keep: int) -> MaskPlan:
    """Keep the `len_keep` slots with the smallest noise in each row.

    Args:
        noise: `[B, L]` float; ties must not straddle the keep boundary (see `tube_masking`).
        len_keep: visible tokens per clip.
    """
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones_like(noise)
    mask.scatter_(1, ids_keep, 0.0)
    return MaskPlan(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


def random_masking(
    batch: int,
    num_tokens: int,
    mask_ratio: float,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> MaskPlan:
    """Independent random masking per clip: exactly `num_visible(L, r)` visible tokens each."""
    noise = torch.rand(batch, num_tokens, device=device, generator=generator)
    return plan_from_noise(noise, num_visible(num_tokens, mask_ratio))


def tube_masking(
    batch: int,
    grid: tuple[int, int, int],
    mask_ratio: float,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> MaskPlan:
    """Tube masking: one spatial keep-set per clip, shared by all `t` time slices.

    Exactly `t * num_visible(h*w, r)` tokens stay visible. Each spatial position gets a distinct
    integer rank; repeating the ranks over time makes every position's `t` slots tie, and because
    the keep count is a multiple of `t` the keep boundary never splits a tie, so whole tubes are
    kept or masked.
    """
    t, h, w = grid
    spatial = torch.rand(batch, h * w, device=device, generator=generator)
    ranks = torch.argsort(torch.argsort(spatial, dim=1), dim=1).to(spatial.dtype)
    noise = ranks.repeat(1, t)
    return plan_from_noise(noise, t * num_visible(h * w, mask_ratio))


def make_mask(
    mode: str,
    batch: int,
    grid: tuple[int, int, int],
    mask_ratio: float,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> MaskPlan:
    """Dispatch on `mode` ("random" or "tube") for a `[t, h, w]` token grid."""
    if mode == "random":
        t, h, w = grid
        return random_masking(batch, t * h * w, mask_ratio, device=device, generator=generator)
    if mode == "tube":
        return tube_masking(batch, grid, mask_ratio, device=device, generator=generator)
    raise ModelConfigError(f"mask_mode must be one of {MASK_MODES}, got {mode!r}")


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`x[b, ids[b, i]]` for every b, i: `[B, L, D]` gathered by `[B, N]` -> `[B, N, D]`."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
