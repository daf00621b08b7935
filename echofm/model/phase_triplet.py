"""The phase triplet: positives from the pixels' cardiac phase, hard negatives from other clips.

Why not the seed's design (`triplet.py`, `triplet_mode="self"`): there, the positives and
negatives of slice 0 are the slices its *current* summary finds more or less similar than
average. Whatever split the projector makes is then the target it is scored against, so the
projector meets the margin on its own (the temporal position embedding alone separates slices),
the loss is exactly 0 within a few dozen steps and shapes nothing; nothing in it compares one
clip with another either, and the clip embeddings drift together (demo: mean pairwise cosine
0.97, RankMe 6 of 96, frozen kNN view accuracy below a random encoder's).

This design (`triplet_mode="phase"`), on the same per-slice CLS summaries of the projector:

- Phase prior from pixels: slices of a clip at the same point of the cardiac cycle look alike.
  Per clip, each time slice's pixels (first channel, `t_patch_size` frames) minus the clip's
  mean over slices (the static anatomy every slice shares) are compared by cosine: a `[t, t]`
  map known before the model sees anything, which it cannot bend.
- Every valid slice is an anchor. Its positives are the other slices of the same clip whose
  prior similarity lies above that row's mean; the one the summaries find *least* similar is
  scored (hard positive).
- Its negatives are all valid slices of the *other* clips in the batch; the one the summaries
  find *most* similar is scored (hard negative). No clip can satisfy this by itself: the margin
  is met only when a clip's same-phase slices are closer to each other than to anything another
  clip looks like, which is what keeps clip embeddings apart.
- Loss per anchor: `relu(margin - sim(a, p) + sim(a, n))` on cosine similarity; the batch loss
  is the mean over scored anchors (an anchor needs a positive and a negative), exactly 0 and
  still attached to the graph when there are none (a batch of one clip, a still clip).

Negatives come from the clips on the same rank: under DDP each rank's batch is its own pool (no
gather), so the per-rank batch size, not the global one, sets how hard the negatives get.

Measured against the seed's design, the encoder's own per-slice token means instead of the
projector, within-clip prior negatives, tube masking and other variants in
`docs/representation.md`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

# Prior similarities closer than this to their row mean do not count as positives.
_TIE_TOLERANCE = 1e-6


def pixel_phase_prior(video: torch.Tensor, t_patch_size: int) -> torch.Tensor:
    """`[B, t, t]` cosine between the time slices of `video` `[B, C, T, H, W]` after removing
    each clip's mean slice; first channel only (echo is grey; the Doppler colour is a minority).
    No gradient: the prior is a fixed target."""
    with torch.no_grad():
        slices = rearrange(video[:, 0].float(), "b (t pt) h w -> b t (pt h w)", pt=t_patch_size)
        motion = F.normalize(slices - slices.mean(dim=1, keepdim=True), dim=-1)
        return motion @ motion.transpose(1, 2)


def phase_positives(prior: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`[B, t, t]` bool: `[b, a, j]` when slice j of clip b is a positive of anchor slice a, i.e.
    another valid slice whose prior similarity to a lies above the mean of a's row."""
    t = prior.shape[1]
    pair_ok = valid.unsqueeze(2) & valid.unsqueeze(1) & ~torch.eye(t, dtype=torch.bool, device=prior.device)
    n = pair_ok.sum(dim=2, keepdim=True).clamp_min(1)
    row_mean = (prior * pair_ok).sum(dim=2, keepdim=True) / n
    return pair_ok & (prior - row_mean > _TIE_TOLERANCE)


def phase_triplet_loss(
    summaries: torch.Tensor, valid: torch.Tensor, prior: torch.Tensor, margin: float
) -> torch.Tensor:
    """Hard-mined triplet loss of every slice (module doc).

    Args:
        summaries: `[B, t, D]` per-slice summaries.
        valid: `[B, t]` bool, slices that have visible tokens.
        prior: `[B, t, t]` pixel-space phase similarity (`pixel_phase_prior`).
        margin: in cosine-similarity units.
    Returns:
        scalar float32 >= 0.
    """
    batch, t, _ = summaries.shape
    z = F.normalize(summaries.float(), dim=-1)
    sim = torch.einsum("aid,bjd->aibj", z, z)  # [B, t, B, t]: slice i of clip a vs slice j of clip b
    own = torch.diagonal(sim, dim1=0, dim2=2).permute(2, 0, 1)  # [B, t, t] within each clip
    positives = phase_positives(prior, valid)
    other_clip = ~torch.eye(batch, dtype=torch.bool, device=sim.device)
    negatives = other_clip[:, None, :, None] & valid[:, :, None, None] & valid[None, None, :, :]
    big = torch.finfo(sim.dtype).max
    hardest_positive = own.masked_fill(~positives, big).amin(dim=2)  # [B, t]
    hardest_negative = sim.masked_fill(~negatives, -big).amax(dim=(2, 3))  # [B, t]
    scored = valid & positives.any(dim=2) & negatives.any(dim=(2, 3))
    hinge = torch.relu(margin - hardest_positive + hardest_negative)
    hinge = torch.where(scored, hinge, torch.zeros_like(hinge))
    return hinge.sum() / scored.sum().clamp_min(1)
