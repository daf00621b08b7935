"""Downstream metrics: regression (EF), classification (views), detection (reduced EF), Dice.

Every function takes numpy arrays or torch tensors (moved to CPU and converted) and returns plain
Python floats, so results can go straight into MLflow and JSON. Definitions follow the usual
textbook ones; edge cases (a constant target, a single class, empty masks) are spelled out in
each docstring rather than returning NaN silently where a defined value exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from echofm.errors import DownstreamError


class MetricInputError(DownstreamError, ValueError):
    """Predictions and targets cannot be compared (shape mismatch, empty input, one class only)."""


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _paired(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_numpy(pred), _as_numpy(target)
    if p.shape != t.shape:
        raise MetricInputError(f"prediction shape {p.shape} != target shape {t.shape}")
    if p.size == 0:
        raise MetricInputError("no samples to score")
    return p, t


def mae(pred: Any, target: Any) -> float:
    """Mean absolute error, in the unit of the target (EF: percentage points)."""
    p, t = _paired(pred, target)
    return float(np.mean(np.abs(p.astype(np.float64) - t)))


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error, in the unit of the target."""
    p, t = _paired(pred, target)
    return float(np.sqrt(np.mean((p.astype(np.float64) - t) ** 2)))


def r2(pred: Any, target: Any) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot.

    A constant target has SS_tot = 0: the score is 1.0 when predictions are exact and -inf
    otherwise (the convention that no model beats predicting the mean of a constant).
    """
    p, t = _paired(pred, target)
    t = t.astype(np.float64)
    ss_res = float(np.sum((t - p) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else float("-inf")
    return 1.0 - ss_res / ss_tot


def accuracy(pred: Any, target: Any) -> float:
    """Fraction of exact label matches. `pred`, `target`: int labels `[N]`."""
    p, t = _paired(pred, target)
    return float(np.mean(p == t))


def macro_f1(pred: Any, target: Any, labels: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: classes in target or pred).

    A class with no true and no predicted sample has F1 = 0 only if listed in `labels`
    explicitly; by default it is not counted. Per-class F1 = 2 TP / (2 TP + FP + FN).
    """
    p, t = _paired(pred, target)
    classes = np.asarray(labels) if labels is not None else np.union1d(np.unique(p), np.unique(t))
    scores = []
    for c in classes:
        tp = float(np.sum((p == c) & (t == c)))
        fp = float(np.sum((p == c) & (t != c)))
        fn = float(np.sum((p != c) & (t == c)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(scores))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    return ranks


def auroc(score: Any, target: Any) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U), ties counted as one half.

    `score`: float `[N]` (higher = more likely positive); `target`: `[N]` in {0, 1}.
    Raises MetricInputError when only one class is present (AUROC is undefined).
    """
    s, t = _paired(score, target)
    t = t.astype(bool)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        raise MetricInputError("AUROC needs both positive and negative samples")
    ranks = _average_ranks(s.astype(np.float64))
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def dice(pred: Any, target: Any, *, valid: Any | None = None) -> float:
    """Mean Dice over samples for binary masks `[N, ...]` (non-zero = foreground).

    `valid`: optional bool `[N, T]` marking labelled frames when masks are `[N, T, H, W]`; only
    those frames count. A sample whose prediction and target are both empty scores 1.0.
    """
    p, t = _paired(pred, target)
    p, t = p != 0, t != 0
    if valid is not None:
        v = _as_numpy(valid).astype(bool)
        if v.shape != p.shape[: v.ndim]:
            raise MetricInputError(f"valid shape {v.shape} does not prefix mask shape {p.shape}")
        keep = v.reshape(v.shape + (1,) * (p.ndim - v.ndim))
        p, t = p & keep, t & keep
    axes = tuple(range(1, p.ndim))
    inter = np.sum(p & t, axis=axes).astype(np.float64)
    total = (np.sum(p, axis=axes) + np.sum(t, axis=axes)).astype(np.float64)
    scores = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return float(np.mean(scores))


def regression_metrics(pred: Any, target: Any) -> dict[str, float]:
    """`{"mae", "rmse", "r2"}` for EF predictions in percentage points."""
    return {"mae": mae(pred, target), "rmse": rmse(pred, target), "r2": r2(pred, target)}


def macro_auroc(probabilities: Any, target: Any) -> float:
    """One-vs-rest AUROC averaged over the classes that have both positives and negatives in
    `target` (the usual multi-class AUC of published echo results, e.g. aortic stenosis grades).

    `probabilities`: float `[N, K]` (column k = class k); `target`: int `[N]` in 0..K-1. NaN when
    no class qualifies (one class only in the evaluated set).
    """
    p, t = _as_numpy(probabilities), _as_numpy(target).astype(np.int64)
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise MetricInputError(f"probabilities must be [N, K] with N = {t.shape[0]}, got {p.shape}")
    areas = [auroc(p[:, k], t == k) for k in range(p.shape[1]) if 0 < int((t == k).sum()) < len(t)]
    return float(np.mean(areas)) if areas else float("nan")


def classification_metrics(pred: Any, target: Any, probabilities: Any | None = None) -> dict[str, float]:
    """`{"accuracy", "macro_f1"}`, plus `"macro_auroc"` when the class `probabilities` `[N, K]`
    are given; macro-F1 over classes present in target or prediction."""
    scores = {"accuracy": accuracy(pred, target), "macro_f1": macro_f1(pred, target)}
    if probabilities is not None:
        scores["macro_auroc"] = macro_auroc(probabilities, target)
    return scores


def detection_metrics(score: Any, target: Any, threshold: float = 0.5) -> dict[str, float]:
    """`{"auroc", "accuracy"}` for a binary detector; accuracy at `threshold` on the score.

    AUROC is NaN (and recorded as such) when the evaluated set holds one class only.
    """
    s, t = _paired(score, target)
    try:
        area = auroc(s, t)
    except MetricInputError:
        area = float("nan")
    return {"auroc": area, "accuracy": accuracy((s >= threshold).astype(int), t.astype(int))}


def segmentation_metrics(pred: Any, target: Any, valid: Any | None = None,
                         classes: tuple[str, ...] = ()) -> dict[str, float]:
    """`{"dice"}` over labelled frames of masks `[N, T, H, W]`: binary masks (one structure), or
    label maps whose values 1..K are `classes`, where each structure gets `dice_<name>` and
    `dice` is their mean."""
    if len(classes) <= 1:
        return {"dice": dice(pred, target, valid=valid)}
    p, t = _paired(pred, target)
    scores = {f"dice_{name}": dice(p == k, t == k, valid=valid) for k, name in enumerate(classes, start=1)}
    return {"dice": float(np.mean(list(scores.values()))), **scores}
