from __future__ import annotations

import numpy as np
import pytest

from echofm.representation.measures import (
    EmbeddingShapeError,
    mean_pairwise_cosine,
    rankme,
    slice_structure,
    view_gap,
)


def test_mean_pairwise_cosine_spans_collapse_to_opposition():
    assert mean_pairwise_cosine(np.ones((4, 8))) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(4)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
    with pytest.raises(EmbeddingShapeError):
        mean_pairwise_cosine(np.ones((1, 8)))


def test_rankme_counts_the_directions_in_use():
    rng = np.random.default_rng(0)
    one_direction = np.outer(rng.normal(size=32), rng.normal(size=16))
    assert rankme(one_direction) == pytest.approx(1.0, abs=0.01)
    assert rankme(np.eye(16)) == pytest.approx(16.0, rel=1e-3)
    # A large shared direction (the usual collapse) lowers the rank of otherwise spread rows.
    spread = rng.normal(size=(64, 16))
    assert rankme(spread + 20.0 * np.ones(16)) < 0.5 * rankme(spread)


def test_view_gap_separates_telling_clips_apart_from_collapse():
    clips = np.eye(6)
    assert view_gap(clips, clips).gap == pytest.approx(1.0)
    collapsed = np.ones((6, 4)) + 1e-3 * np.random.default_rng(1).normal(size=(6, 4))
    result = view_gap(collapsed, collapsed[::-1].copy())
    assert result.same_clip > 0.99 and abs(result.gap) < 0.01
    with pytest.raises(EmbeddingShapeError):
        view_gap(np.eye(6), np.eye(5, 6))


def test_slice_structure_follows_the_pixels_phase():
    rng = np.random.default_rng(2)
    pixels = rng.normal(size=(5, 8, 40))
    same_phase = slice_structure(pixels - pixels.mean(axis=1, keepdims=True), pixels)
    assert same_phase.phase_agreement == pytest.approx(1.0, abs=0.05)
    flat = slice_structure(np.ones((5, 8, 12)), pixels)
    assert flat.off_diagonal == pytest.approx(1.0) and flat.contrast == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(flat.phase_agreement)  # a flat map correlates with nothing
    assert flat.mean_map.shape == (8, 8)
    assert np.isnan(slice_structure(pixels).phase_agreement)  # no pixels, no agreement
