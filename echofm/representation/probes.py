"""Frozen-feature probes: how much of a label can be read off fixed clip embeddings.

The encoder is not trained here; each probe fits a tiny model on the embeddings and scores it on
clips it did not fit, so a better number means a more useful representation. Numpy only.

- kNN (classification and regression): cosine similarity on embeddings centred by the fitting
  clips' mean (the shared direction every clip has says nothing about the label), the `k`
  nearest fitting clips vote (ties: the class with the larger summed similarity) or average.
- Ridge (linear): features standardised on the fitting clips, closed-form ridge whose penalty
  is chosen per fold by leave-one-out error over `ALPHAS`; a classifier regresses
  one-hot targets and takes the arg-max.

Evaluation is leave-one-out for kNN and, for ridge, leave-one-group-out up to `folds` groups
(more groups are dealt into `folds` folds): with a hundred clips, five random folds move R^2 by
a tenth between two fold draws, leave-one-out does not depend on a draw. When `groups` are
given (the patient of each clip) no clip is ever scored against a clip of its own group:
another clip of the same patient shares its EF, and finding it would measure memory of the
patient, not the representation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from echofm.errors import RepresentationError
from echofm.representation.measures import EmbeddingShapeError

ALPHAS: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


class ProbeInputError(RepresentationError, ValueError):
    """Labels that cannot be probed: too few clips or classes, lengths that do not match."""


@dataclass(frozen=True)
class ClassificationScore:
    accuracy: float
    n_clips: int
    n_classes: int


@dataclass(frozen=True)
class RegressionScore:
    r2: float
    mae: float
    n_clips: int


def _inputs(embeddings: np.ndarray, labels: Sequence, groups: Sequence | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise EmbeddingShapeError(f"need embeddings [N, D], got shape {x.shape}")
    y = np.asarray(labels)
    if len(y) != len(x):
        raise ProbeInputError(f"{len(y)} labels for {len(x)} embeddings")
    g = np.arange(len(x)) if groups is None else np.asarray(groups)
    if len(g) != len(x):
        raise ProbeInputError(f"{len(g)} groups for {len(x)} embeddings")
    if len(np.unique(g)) < 3:
        raise ProbeInputError(f"need clips of at least 3 groups to probe, got {len(np.unique(g))}")
    return x, y, g


def _r2_mae(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    residual = float(np.sum((target - pred) ** 2))
    total = float(np.sum((target - target.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else float("nan")
    return r2, float(np.mean(np.abs(target - pred)))


def _knn_neighbours(x: np.ndarray, groups: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each clip, its `k` most similar clips of other groups: indices and cosines `[N, k]`.

    Centring uses the mean of all clips but the one being scored would cost an N-fold loop; the
    mean of all N differs from it by 1/N of one clip, which cannot change who is nearest in any
    way that matters at the sizes probed here.
    """
    centred = x - x.mean(axis=0, keepdims=True)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    similarity[groups[:, None] == groups[None, :]] = -np.inf  # never itself, never its own group
    k = min(k, int((similarity[0] > -np.inf).sum()))
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def knn_classification(embeddings: np.ndarray, labels: Sequence, *, groups: Sequence | None = None, k: int = 5) -> ClassificationScore:
    """Leave-one-out (or leave-one-group-out) kNN accuracy of `labels` (any hashable classes)."""
    x, y, g = _inputs(embeddings, labels, groups)
    classes, codes = np.unique(y.astype(str), return_inverse=True)
    if len(classes) < 2:
        raise ProbeInputError("need at least two classes to probe")
    order, sims = _knn_neighbours(x, g, k)
    votes = np.zeros((len(x), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(x)), order.shape[1]), codes[order].ravel()), 1.0)
    # Summed similarity breaks ties between equal vote counts (it is below 1 per neighbour x k).
    weight = np.zeros_like(votes)
    np.add.at(weight, (np.repeat(np.arange(len(x)), order.shape[1]), codes[order].ravel()), sims.ravel() + 1.0)
    predicted = np.argmax(votes * (2.0 * order.shape[1] + 1.0) + weight, axis=1)
    return ClassificationScore(accuracy=float(np.mean(predicted == codes)), n_clips=len(x), n_classes=len(classes))


def knn_regression(embeddings: np.ndarray, targets: Sequence[float], *, groups: Sequence | None = None, k: int = 5) -> RegressionScore:
    """Leave-one-out (or leave-one-group-out) kNN regression: mean target of the `k` nearest."""
    x, y, g = _inputs(embeddings, targets, groups)
    y = y.astype(np.float64)
    order, _ = _knn_neighbours(x, g, k)
    r2, mae = _r2_mae(y[order].mean(axis=1), y)
    return RegressionScore(r2=r2, mae=mae, n_clips=len(x))


def _folds(groups: np.ndarray, folds: int) -> list[np.ndarray]:
    """Boolean test masks of `folds` folds that keep each group whole (deterministic)."""
    unique = np.unique(groups)
    # A fixed permutation so folds do not follow the order the clips were listed in.
    permuted = unique[np.random.default_rng(0).permutation(len(unique))]
    n = min(folds, len(unique))
    return [np.isin(groups, permuted[i::n]) for i in range(n)]


def _ridge_fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """Standardise on the fitting clips, pick the penalty by leave-one-out error, predict `x_new`.

    `y_fit` is `[n, m]`. The leave-one-out residual of ridge has the closed form
    `(y - fitted) / (1 - H_ii)` (H: the hat matrix, plus 1/n for the intercept), exact for a
    fixed penalty; generalised cross-validation, its usual stand-in, degenerates to "no
    penalty" when there are more features than clips, which is the normal case here.
    """
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    a, b = (x_fit - mean) / std, (x_new - mean) / std
    y_mean = y_fit.mean(axis=0)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    uty = u.T @ (y_fit - y_mean)
    best, best_error = ALPHAS[0], np.inf
    for alpha in ALPHAS:
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u**2) @ shrink + 1.0 / len(a)
        loo = (y_fit - y_mean - fitted) / np.maximum(1.0 - leverage, 1e-9)[:, None]
        error = float(np.mean(loo**2))
        if error < best_error:
            best, best_error = alpha, error
    coef = vt.T @ ((s / (s**2 + best))[:, None] * uty)
    return b @ coef + y_mean


def ridge_regression(embeddings: np.ndarray, targets: Sequence[float], *, groups: Sequence | None = None, folds: int = 50) -> RegressionScore:
    """`folds`-fold (group-aware) ridge regression of `targets`; R^2 and MAE of the pooled
    out-of-fold predictions."""
    x, y, g = _inputs(embeddings, targets, groups)
    y = y.astype(np.float64)
    pred = np.empty_like(y)
    for test in _folds(g, folds):
        pred[test] = _ridge_fit_predict(x[~test], y[~test, None], x[test])[:, 0]
    r2, mae = _r2_mae(pred, y)
    return RegressionScore(r2=r2, mae=mae, n_clips=len(x))


def ridge_classification(embeddings: np.ndarray, labels: Sequence, *, groups: Sequence | None = None, folds: int = 50) -> ClassificationScore:
    """`folds`-fold (group-aware) linear probe: ridge on one-hot classes, arg-max."""
    x, y, g = _inputs(embeddings, labels, groups)
    classes, codes = np.unique(y.astype(str), return_inverse=True)
    if len(classes) < 2:
        raise ProbeInputError("need at least two classes to probe")
    onehot = np.eye(len(classes))[codes]
    predicted = np.empty(len(x), dtype=np.int64)
    for test in _folds(g, folds):
        predicted[test] = np.argmax(_ridge_fit_predict(x[~test], onehot[~test], x[test]), axis=1)
    return ClassificationScore(accuracy=float(np.mean(predicted == codes)), n_clips=len(x), n_classes=len(classes))
