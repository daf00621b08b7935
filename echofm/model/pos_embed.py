"""Separable (space + time) position embeddings.

The model learns a spatial table `[1, h*w, D]` and a temporal table `[1, t, D]` (plus one vector
for the CLS token), initialised with a truncated normal of std 0.02 as in MAE-ST. Learned rather
than fixed sin-cos: this is what the reference EchoFM/MAE-ST large encoder uses (its 305.7M
parameters include these tables), and checkpoints in the seed's format carry them.
"""

from __future__ import annotations

import torch


def separable_pos_embed(spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
    """Position embedding of every token slot, in slot order.

    Args:
        spatial: `[1, h*w, D]`, one vector per (row, column).
        temporal: `[1, t, D]`, one vector per time slice.

    Returns:
        `[1, t*h*w, D]`; slot `s = ti*h*w + hi*w + wi` (the order of the tubelet convolution's
        flattened output) holds `spatial[hi*w + wi] + temporal[ti]`.
    """
    hw = spatial.shape[1]
    t = temporal.shape[1]
    return spatial.repeat(1, t, 1) + temporal.repeat_interleave(hw, dim=1)
