"""View filter: the header classifier, pluggable classifiers and the rejection reasons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from echofm.ingest.config import IngestConfig
from echofm.ingest.views import (
    CANONICAL_VIEWS,
    DEFAULT_VIEWS,
    HeaderViewClassifier,
    ViewClassifierError,
    ViewPrediction,
    load_view_classifier,
    view_from_text,
    view_rejection,
)


@pytest.mark.parametrize(
    ("meaning", "view"),
    [
        ("Apical four chamber", "A4C"),
        ("apical 2 chamber view", "A2C"),
        ("Apical long axis", "A3C"),
        ("Apical five chamber", "A5C"),
        ("Parasternal long axis", "PLAX"),
        ("Parasternal short axis at the papillary muscles", "PSAX"),
        ("Subcostal four chamber", "SUBCOSTAL"),
        ("Suprasternal notch", "SUPRASTERNAL"),
        ("Liver", None),
    ],
)
def test_code_meanings_map_to_canonical_views(meaning: str, view: str | None) -> None:
    assert view_from_text(meaning) == view


def test_header_classifier_precedence() -> None:
    classify = HeaderViewClassifier().classify
    assert classify({"view_code": "Apical four chamber", "view_hint": "PLAX"}) == ViewPrediction("A4C", "view_code", 1.0)
    assert classify({"view_hint": "PSAX"}).view == "PSAX"
    assert classify({"view_hint": "NON_CARDIAC"}).view == "NON_CARDIAC"
    assert classify({"image_type": ["ORIGINAL", "PRIMARY", "ABDOMINAL"]}).view == "NON_CARDIAC"
    assert classify({"body_part": "KIDNEY", "view_hint": "unknown"}).view == "NON_CARDIAC"
    # Cardiac terms win over a stray non-cardiac one, but do not name a view by themselves.
    assert classify({"image_type": ["ECHOCARDIOGRAPHY", "VASCULAR"]}).view == "unknown"
    assert classify({"container": "mp4"}) == ViewPrediction("unknown", "none", 0.0)
    assert classify({"view_code": "Some vendor view"}).view == "OTHER_CARDIAC"


def test_rejection_reasons() -> None:
    assert view_rejection("A4C", DEFAULT_VIEWS) is None
    assert view_rejection("unknown", DEFAULT_VIEWS) is None
    assert view_rejection("NON_CARDIAC", DEFAULT_VIEWS) == "non_cardiac_view"
    assert view_rejection("PLAX", ("A4C", "A2C")) == "view_not_selected"
    assert view_rejection("unknown", ("A4C",)) == "view_not_selected"


@dataclass(frozen=True)
class BrightnessClassifier:
    """A stand-in pixel classifier for the plug-in path: bright clips are A4C, dark ones PLAX."""

    needs_pixels: bool = True

    def classify(self, meta: Mapping[str, Any], frames: np.ndarray | None = None) -> ViewPrediction:
        assert frames is not None
        return ViewPrediction("A4C" if frames.mean() > 50 else "PLAX", "model:brightness", 0.7)


def make_brightness_classifier() -> BrightnessClassifier:
    return BrightnessClassifier()


INSTANCE = BrightnessClassifier()


def test_classifier_specs_resolve_to_instances() -> None:
    assert isinstance(load_view_classifier(None), HeaderViewClassifier)
    for spec in (
        f"{__name__}:make_brightness_classifier",
        f"{__name__}:BrightnessClassifier",
        f"{__name__}:INSTANCE",
    ):
        classifier = load_view_classifier(spec)
        assert isinstance(classifier, BrightnessClassifier)
        assert classifier.classify({}, np.full((2, 4, 4, 1), 200, np.uint8)).view == "A4C"
    instance = BrightnessClassifier()
    assert load_view_classifier(instance) is instance


@pytest.mark.parametrize("spec", ["no_colon", "echofm.nonexistent_module:thing", f"{__name__}:missing", f"{__name__}:view_from_text_table"])
def test_bad_specs_raise(spec: str) -> None:
    with pytest.raises(ViewClassifierError):
        load_view_classifier(spec)


view_from_text_table = dict  # a callable that builds something which is not a classifier


def test_config_validates_views() -> None:
    assert set(IngestConfig().views) == set(DEFAULT_VIEWS)
    assert "NON_CARDIAC" not in IngestConfig().views
    with pytest.raises(ValueError, match="unknown views"):
        IngestConfig(views=("A4C", "A6C"))
    with pytest.raises(ValueError):
        ViewPrediction("A6C", "x", 0.5)
    assert set(CANONICAL_VIEWS) >= set(DEFAULT_VIEWS)
