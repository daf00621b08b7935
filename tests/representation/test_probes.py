from __future__ import annotations

import numpy as np
import pytest

from echofm.representation.probes import (
    ProbeInputError,
    knn_classification,
    knn_regression,
    ridge_classification,
    ridge_regression,
)


def _clusters(n_per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 5
    labels = np.repeat(np.array(["A4C", "PLAX", "PSAX"]), n_per)
    return centres[np.repeat(np.arange(3), n_per)] + rng.normal(size=(3 * n_per, 16)), labels


def test_classification_probes_read_separable_views_and_not_shuffled_ones():
    x, views = _clusters(12)
    assert knn_classification(x, views).accuracy == 1.0
    assert ridge_classification(x, views).accuracy == 1.0
    shuffled = np.random.default_rng(1).permutation(views)
    assert knn_classification(x, shuffled).accuracy < 0.6


def test_regression_probes_recover_a_linear_target():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 24))
    ef = 50 + 10 * x[:, 0] - 5 * x[:, 1] + rng.normal(scale=0.5, size=60)
    fitted = ridge_regression(x, ef)
    assert fitted.r2 > 0.9 and fitted.mae < 2.0
    assert ridge_regression(rng.normal(size=(60, 24)), ef).r2 < 0.2
    assert knn_regression(x[:, :2], ef).r2 > 0.5


def test_groups_keep_a_patient_from_being_found_by_its_own_clips():
    # Each patient has two near-identical clips and a label of its own: without groups the twin
    # gives the answer away, with groups nothing else carries it.
    rng = np.random.default_rng(4)
    patients = rng.normal(size=(20, 8))
    x = np.repeat(patients, 2, axis=0) + 1e-3 * rng.normal(size=(40, 8))
    views = np.repeat(rng.choice(["A2C", "A4C"], size=20), 2)
    groups = np.repeat(np.arange(20), 2)
    assert knn_classification(x, views, k=1).accuracy == 1.0
    assert knn_classification(x, views, groups=groups, k=1).accuracy < 0.8
    ef = np.repeat(rng.uniform(20, 70, size=20), 2)
    assert knn_regression(x, ef, k=1).r2 > 0.99
    assert knn_regression(x, ef, groups=groups, k=1).r2 < 0.5


def test_probe_inputs_are_checked():
    x, views = _clusters(4)
    with pytest.raises(ProbeInputError):
        knn_classification(x, views[:-1])
    with pytest.raises(ProbeInputError):
        ridge_regression(x, np.arange(len(x), dtype=float), groups=np.arange(len(x)) % 2)
    with pytest.raises(ProbeInputError):
        knn_classification(x, np.array(["A4C"] * len(x)))
