"""Temporal self-similarity and the triplet loss over time slices of one clip.

Design (EchoFM's periodic triplet, computed on the encoder's own output):

- Slice summary: one CLS summary per time slice (8 slices for 32 frames with a temporal tubelet
  of 4), the CLS output of a transformer block shared by all slices over that slice's *visible*
  encoder tokens (`echofm.model.projector`). A slice with no visible token (possible under random
  masking of small grids) has no summary and is excluded.
- Summaries are L2-normalised; the cosine self-similarity map is `[B, t, t]`.
- Anchor = slice 0. Among the other valid slices, positives have similarity to the anchor above
  the mean of that row (mean over the valid non-anchor slices), negatives are at or below it.
  A tolerance of 1e-6 keeps ties (e.g. identical summaries) from being split by rounding.
- Loss per clip: mean over every (positive, negative) pair of
  `relu(margin - sim(a, p) + sim(a, n))`, i.e. the cosine-distance triplet loss. The mean over
  pairs (rather than the hardest pair) gives every slice a gradient. The pos/neg split itself is
  not differentiated (it is a selection).
- A clip is valid when its anchor is valid and it has at least one positive and one negative.
  The batch loss is the sum over valid clips divided by the batch size, so invalid clips
  contribute exactly 0 and a batch without a valid clip gives exactly 0 (never NaN, never an
  exception), still attached to the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Similarities closer than this to the row mean count as "at the mean" (negatives).
_TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class TripletSets:
    """Positives and negatives of the anchor (slice 0) for each clip: `[B, t]` bools each."""

    positives: torch.Tensor
    negatives: torch.Tensor
    valid_clip: torch.Tensor  # [B] bool


def slice_token_counts(slice_index: torch.Tensor, num_slices: int) -> torch.Tensor:
    """Visible tokens in each time slice: `[B, N]` slice indices (0..t-1) -> `[B, t]` float."""
    counts = torch.zeros(slice_index.shape[0], num_slices, device=slice_index.device)
    return counts.scatter_add_(1, slice_index, torch.ones_like(slice_index, dtype=counts.dtype))


def temporal_self_similarity(summaries: torch.Tensor) -> torch.Tensor:
    """Cosine self-similarity `[B, t, t]` of L2-normalised slice summaries `[B, t, D]`."""
    z = F.normalize(summaries, p=2, dim=-1)
    return z @ z.transpose(1, 2)


def anchor_triplet_sets(anchor_sim: torch.Tensor, valid: torch.Tensor) -> TripletSets:
    """Split slices into positives/negatives of the anchor (slice 0).

    Args:
        anchor_sim: `[B, t]` similarity of every slice to slice 0.
        valid: `[B, t]` bool, slices that have a summary.
    """
    candidates = valid.clone()
    candidates[:, 0] = False
    n = candidates.sum(dim=1)
    row_mean = (anchor_sim * candidates).sum(dim=1) / n.clamp_min(1)
    above = anchor_sim - row_mean.unsqueeze(1) > _TIE_TOLERANCE
    positives = candidates & above
    negatives = candidates & ~above
    valid_clip = valid[:, 0] & positives.any(dim=1) & negatives.any(dim=1)
    return TripletSets(positives=positives, negatives=negatives, valid_clip=valid_clip)


def temporal_triplet_loss(
    summaries: torch.Tensor, valid: torch.Tensor, margin: float
) -> torch.Tensor:
    """Triplet loss of slice 0 against its positive and negative slices (design in module doc).

    Args:
        summaries: `[B, t, D]` slice summaries.
        valid: `[B, t]` bool, slices that have a summary.
        margin: in cosine-similarity units.

    Returns:
        scalar float32 tensor, >= 0; exactly 0 when no clip has a valid triplet.
    """
    batch = summaries.shape[0]
    sim = temporal_self_similarity(summaries.float())
    anchor_sim = sim[:, 0, :]  # [B, t]
    sets = anchor_triplet_sets(anchor_sim.detach(), valid)
    pair = sets.positives.unsqueeze(2) & sets.negatives.unsqueeze(1)  # [B, t_pos, t_neg]
    gap = anchor_sim.unsqueeze(2) - anchor_sim.unsqueeze(1)  # sim(a, p) - sim(a, n)
    hinge = torch.relu(margin - gap) * pair
    per_clip = hinge.sum(dim=(1, 2)) / pair.sum(dim=(1, 2)).clamp_min(1)
    per_clip = per_clip * sets.valid_clip
    return per_clip.sum() / max(batch, 1)
