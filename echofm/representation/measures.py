"""Label-free measures of a set of clip embeddings: is the encoder collapsing?

Every function takes numpy arrays (float, any precision; computed in float64) and returns plain
floats. `N` is the number of clips, `D` the embedding width, `t` the time slices of a clip.

- `mean_pairwise_cosine`: near 1 means every clip maps to almost the same direction.
- `rankme`: effective rank of the embedding matrix (Garrido et al., 2023), the exponential of the
  entropy of its normalised singular values; at most `min(N, D)`. Computed on the raw
  embeddings, as published: a large shared direction (the usual form of collapse) lowers it.
- `view_gap`: cosine between two augmented views of the same clip minus cosine between
  different clips. An encoder that tells clips apart, and sees through the augmentation, has a
  large gap; a collapsed one has both cosines near 1 and a gap near 0.
- `slice_structure`: how the per-time-slice embeddings of a clip resemble each other, and how
  well that self-similarity follows the clip's pixel-space self-similarity (the cardiac phase:
  frames of the same phase look alike). The temporal triplet loss relies on exactly that
  structure; a flat map (every slice alike) gives it nothing to work with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echofm.errors import RepresentationError


class EmbeddingShapeError(RepresentationError, ValueError):
    """Embeddings of the wrong rank, too few clips, or arrays that do not pair up."""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_matrix(embeddings: np.ndarray, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < min_rows:
        raise EmbeddingShapeError(f"need embeddings [N >= {min_rows}, D], got shape {x.shape}")
    return x


def cosine_matrix(embeddings: np.ndarray) -> np.ndarray:
    """`[N, N]` cosine similarity of `embeddings` `[N, D]`."""
    unit = _unit(_check_matrix(embeddings, 1))
    return unit @ unit.T


def mean_pairwise_cosine(embeddings: np.ndarray) -> float:
    """Mean cosine similarity over the distinct pairs of `embeddings` `[N >= 2, D]`."""
    similarity = cosine_matrix(_check_matrix(embeddings))
    n = similarity.shape[0]
    return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))


def rankme(embeddings: np.ndarray, eps: float = 1e-7) -> float:
    """Effective rank of `embeddings` `[N, D]`: `exp(-sum p_k log p_k)`, `p = s / sum(s) + eps`
    over the singular values `s`; between 1 (one direction) and `min(N, D)` (all equal)."""
    singular = np.linalg.svd(_check_matrix(embeddings, 1), compute_uv=False)
    if singular.sum() <= 0:
        return 1.0
    p = singular / singular.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@dataclass(frozen=True)
class ViewGap:
    """Cosines between augmented views: same clip, different clips, and their difference."""

    same_clip: float
    different_clips: float

    @property
    def gap(self) -> float:
        return self.same_clip - self.different_clips


def view_gap(view_a: np.ndarray, view_b: np.ndarray) -> ViewGap:
    """`view_a[i]` and `view_b[i]` `[N >= 2, D]` embed two augmentations of clip i.

    Different-clip cosine is the mean over `i != j` of `cos(view_a[i], view_b[j])`, so both terms
    compare one augmented view with another and differ only in whether the clip is the same.
    """
    a, b = _unit(_check_matrix(view_a)), _unit(_check_matrix(view_b))
    if a.shape != b.shape:
        raise EmbeddingShapeError(f"views do not pair up: {a.shape} vs {b.shape}")
    cross = a @ b.T
    n = cross.shape[0]
    same = float(np.trace(cross) / n)
    different = float((cross.sum() - np.trace(cross)) / (n * (n - 1)))
    return ViewGap(same_clip=same, different_clips=different)


@dataclass(frozen=True)
class SliceStructure:
    """Per-slice self-similarity of clips.

    mean_map: `[t, t]` cosine between slice embeddings, averaged over clips.
    off_diagonal: mean of that map off the diagonal (1: every slice alike, no time structure).
    contrast: mean over clips of the standard deviation of the off-diagonal entries (how much
        some slices resemble each other more than others do).
    phase_agreement: mean over clips of the Pearson correlation between the embedding and pixel
        self-similarity off the diagonal (NaN without pixel maps, or when a map is flat).
    """

    mean_map: np.ndarray
    off_diagonal: float
    contrast: float
    phase_agreement: float


def self_similarity(slices: np.ndarray) -> np.ndarray:
    """`[N, t, t]` cosine self-similarity of per-slice vectors `[N, t, D]`."""
    x = np.asarray(slices, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < 2:
        raise EmbeddingShapeError(f"need slice vectors [N, t >= 2, D], got shape {x.shape}")
    unit = _unit(x)
    return unit @ unit.transpose(0, 2, 1)


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair of `a`, `b` `[N, K]`; NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 1e-12, (a * b).sum(axis=1) / denom, np.nan)


def slice_structure(slice_embeddings: np.ndarray, pixel_slices: np.ndarray | None = None) -> SliceStructure:
    """Summarise the self-similarity of `slice_embeddings` `[N, t, D]`.

    pixel_slices: `[N, t, P]` the clips' pixels per time slice (flattened), for the phase
    agreement; None leaves it NaN.
    """
    maps = self_similarity(slice_embeddings)
    t = maps.shape[1]
    off = ~np.eye(t, dtype=bool)
    entries = maps[:, off]  # [N, t*(t-1)]
    agreement = float("nan")
    if pixel_slices is not None:
        pixel_maps = self_similarity(pixel_slices - np.asarray(pixel_slices).mean(axis=1, keepdims=True))
        if pixel_maps.shape != maps.shape:
            raise EmbeddingShapeError(f"pixel slices give maps {pixel_maps.shape}, embeddings {maps.shape}")
        correlations = _row_correlation(entries, pixel_maps[:, off])
        if np.isfinite(correlations).any():
            agreement = float(np.nanmean(correlations))
    return SliceStructure(
        mean_map=maps.mean(axis=0),
        off_diagonal=float(entries.mean()),
        contrast=float(entries.std(axis=1).mean()),
        phase_agreement=agreement,
    )
