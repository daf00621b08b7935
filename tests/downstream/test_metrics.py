"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echofm.downstream import metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_regression_metrics_hand_computed() -> None:
    pred, target = [50.0, 60.0, 30.0, 45.0], [55.0, 60.0, 20.0, 45.0]
    # errors -5, 0, 10, 0 -> MAE 15/4, MSE 125/4; target mean 45, SS_tot 100 + 225 + 625 + 0 = 950.
    assert metrics.mae(pred, target) == pytest.approx(3.75)
    assert metrics.rmse(pred, target) == pytest.approx(math.sqrt(31.25))
    assert metrics.r2(pred, target) == pytest.approx(1 - 125 / 950)


def test_r2_of_constant_target() -> None:
    assert metrics.r2([3.0, 3.0], [3.0, 3.0]) == 1.0
    assert metrics.r2([2.0, 3.0], [3.0, 3.0]) == float("-inf")


def test_torch_inputs_match_numpy() -> None:
    pred = torch.tensor([1.0, 2.0, 4.0])
    target = np.array([1.0, 3.0, 2.0])
    assert metrics.mae(pred, target) == pytest.approx(1.0)


def test_accuracy_and_macro_f1_hand_computed() -> None:
    target = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    assert metrics.accuracy(pred, target) == pytest.approx(4 / 6)
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 1, FN 0 -> 0.8; class 2: TP 1, FN 1 -> 2/3.
    assert metrics.macro_f1(pred, target) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_auroc_one_vs_rest_hand_computed() -> None:
    target = [0, 0, 1, 1, 2, 2]
    probabilities = np.array([
        [0.8, 0.1, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.7, 0.1],
        [0.5, 0.4, 0.1],
        [0.1, 0.2, 0.7],
        [0.6, 0.1, 0.3],
    ])
    # class 0 vs rest: positives 0.8, 0.3 against 0.2, 0.5, 0.1, 0.6 -> (4 + 2) / 8;
    # class 1: 0.7, 0.4 against 0.1, 0.6, 0.2, 0.1 -> (4 + 3) / 8; class 2: 0.7, 0.3 against
    # 0.1 x 4 -> 8 / 8.
    assert metrics.macro_auroc(probabilities, target) == pytest.approx((6 / 8 + 7 / 8 + 1.0) / 3)
    # A class absent from the target does not count; one class only -> NaN.
    assert metrics.macro_auroc(probabilities[:4], target[:4]) == pytest.approx(
        (metrics.auroc(probabilities[:4, 0], [1, 1, 0, 0]) + metrics.auroc(probabilities[:4, 1], [0, 0, 1, 1])) / 2
    )
    assert np.isnan(metrics.macro_auroc(probabilities[:2], [0, 0]))
    with pytest.raises(metrics.MetricInputError):
        metrics.macro_auroc(probabilities[:, 0], target)


def test_auroc_hand_computed_with_ties() -> None:
    score = [0.1, 0.4, 0.35, 0.8, 0.4]
    target = [0, 0, 1, 1, 1]
    # Positive/negative pairs: (0.35 vs 0.1) win, (0.35 vs 0.4) loss, (0.8 vs both) 2 wins,
    # (0.4 vs 0.1) win, (0.4 vs 0.4) tie = 1/2 -> (1 + 0 + 2 + 1 + 0.5) / 6.
    assert metrics.auroc(score, target) == pytest.approx(4.5 / 6)


def test_auroc_extremes_and_single_class() -> None:
    assert metrics.auroc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0
    assert metrics.auroc([0.9, 0.2, 0.1], [0, 0, 1]) == 0.0
    assert metrics.auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    with pytest.raises(metrics.MetricInputError):
        metrics.auroc([0.1, 0.2], [1, 1])
    assert math.isnan(metrics.detection_metrics(np.array([0.1, 0.2]), np.array([1, 1]))["auroc"])


def test_dice_hand_computed() -> None:
    pred = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    target = np.zeros_like(pred)
    pred[0, 0, 0, :] = 1  # 2 pixels
    target[0, 0, 0, 0] = 1
    target[0, 0, 1, 0] = 1  # 2 pixels, 1 shared -> 2 * 1 / 4 = 0.5
    # Sample 1: both empty -> 1.0.
    assert metrics.dice(pred, target) == pytest.approx(0.75)


def test_dice_counts_only_valid_frames() -> None:
    pred = np.ones((1, 2, 2, 2), dtype=np.uint8)
    target = np.zeros_like(pred)
    target[0, 0] = 1
    valid = np.array([[True, False]])
    assert metrics.dice(pred, target, valid=valid) == 1.0
    assert metrics.dice(pred, target) == pytest.approx(2 * 4 / 12)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(metrics.MetricInputError):
        metrics.mae([1.0, 2.0], [1.0])


def test_dice_per_structure_of_label_maps() -> None:
    target = np.zeros((1, 1, 4, 4), np.uint8)
    target[0, 0, :2, :2], target[0, 0, 2:, 2:] = 1, 2
    pred = target.copy()
    pred[0, 0, 2:, 2:] = 0  # structure 2 missed entirely
    scores = metrics.segmentation_metrics(pred, target, classes=("lv_endo", "lv_myo", "la"))
    assert scores["dice_lv_endo"] == 1.0 and scores["dice_lv_myo"] == 0.0
    assert scores["dice_la"] == 1.0  # absent in both: agreement
    assert scores["dice"] == pytest.approx(2 / 3)
