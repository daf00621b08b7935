"""View filter: which echo view a clip shows, from a pluggable classifier.

The default `HeaderViewClassifier` reads only what the file says about itself (the DICOM view code
sequence, the reader's canonical `view_hint`, image type and body part); it needs no pixels, so a
non-cardiac study is rejected before its pixel data is decoded. A trained classifier (from the
model registry, in a later issue) plugs in through the same `ViewClassifier` protocol, named by a
"module:callable" spec so each worker process can build its own instance.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from echofm.io.views import CANONICAL_VIEWS
from echofm.errors import IngestError

NON_CARDIAC = "NON_CARDIAC"
UNKNOWN_VIEW = "unknown"
# The reader's canonical vocabulary, less the two answers that are not a cardiac view.
CARDIAC_VIEWS: tuple[str, ...] = tuple(v for v in CANONICAL_VIEWS if v not in (NON_CARDIAC, UNKNOWN_VIEW))
# All cardiac views, plus `unknown`: MP4/AVI exports carry no view at all, and dropping every
# clip the header is silent about would drop most of a typical archive.
DEFAULT_VIEWS: tuple[str, ...] = (*CARDIAC_VIEWS, UNKNOWN_VIEW)


class ViewClassifierError(IngestError, ValueError):
    """A view classifier spec that cannot be imported or does not build a classifier."""


@dataclass(frozen=True)
class ViewPrediction:
    """view: one of `CANONICAL_VIEWS`; source: what decided it (e.g. "view_code", "body_part",
    "model:<name>", "none"); confidence in [0, 1]."""

    view: str
    source: str
    confidence: float

    def __post_init__(self) -> None:
        if self.view not in CANONICAL_VIEWS:
            raise ValueError(f"view {self.view!r} is not a canonical view")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError("confidence must lie in [0, 1]")


@runtime_checkable
class ViewClassifier(Protocol):
    """Decides the view of one clip.

    `needs_pixels` False: `classify(meta, None)` is called from the header, before decoding.
    `needs_pixels` True: `classify(meta, frames)` is called with the masked, resized first window,
    uint8 `[T, size, size, C]`.
    `meta` holds the reader's allow-listed technical metadata (never PHI).
    """

    needs_pixels: bool

    def classify(self, meta: Mapping[str, Any], frames: np.ndarray | None = None) -> ViewPrediction: ...


# Code meanings of DICOM CID 12226 ("Echocardiography Image View") and common vendor phrasings.
_VIEW_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (view, re.compile(pattern))
    for view, pattern in (
        ("A5C", r"apical\s*(5|five)|\ba5c\b"),
        ("A4C", r"apical\s*(4|four)|\ba4c\b"),
        ("A3C", r"apical\s*(3|three)|apical long|\ba3c\b|\baplax\b"),
        ("A2C", r"apical\s*(2|two)|\ba2c\b"),
        ("PLAX", r"parasternal\s*long|\bplax\b"),
        ("PSAX", r"parasternal\s*short|\bpsax\b"),
        ("SUBCOSTAL", r"subcostal|subxiphoid"),
        ("SUPRASTERNAL", r"suprasternal"),
    )
)
# Image Type value 3 defined terms (PS3.3 C.8.5.6.1.1) and Body Part Examined values.
_CARDIAC_TERMS = frozenset(
    {"ECHOCARDIOGRAPHY", "CARDIAC", "CARDIOLOGY", "HEART", "TEE", "EPICARDIAL", "INTRACARDIAC", "FETAL_HEART"}
)
_NON_CARDIAC_TERMS = frozenset(
    {
        "ABDOMINAL", "ABDOMEN", "BREAST", "ENDORECTAL", "ENDOVAGINAL", "GYNECOLOGY", "MUSCULOSKELETAL",
        "NEONATAL_HEAD", "OBSTETRICAL", "OPHTHALMIC", "PELVIC", "PELVIS", "RETROPERITONEAL",
        "SCROTAL", "SMALL PARTS", "THYROID", "TRANSCRANIAL", "TRANSRECTAL", "TRANSVAGINAL",
        "UROLOGY", "VASCULAR", "KIDNEY", "LIVER", "NECK", "HEAD", "BRAIN", "KNEE", "SHOULDER",
        "HIP", "EXTREMITY", "LEG", "ARM", "FETUS", "UTERUS", "OVARY", "PROSTATE", "CAROTID",
    }
)


def view_from_text(text: str) -> str | None:
    """The canonical view a code meaning names ("Apical four chamber" -> "A4C"), or None."""
    lowered = text.lower()
    for view, pattern in _VIEW_PATTERNS:
        if pattern.search(lowered):
            return view
    return None


def _terms(value: Any) -> set[str]:
    if value is None:
        return set()
    values: Iterable[Any] = [value] if isinstance(value, str) else value
    return {str(v).strip().upper().replace("-", "_") for v in values if str(v).strip()}


@dataclass(frozen=True)
class HeaderViewClassifier:
    """The view as the file states it; `unknown` when the header says nothing usable.

    Precedence: an explicit view code, then the reader's canonical hint, then non-cardiac image
    type / body part (these decide only cardiac vs not, never which cardiac view).
    """

    needs_pixels: bool = False

    def classify(self, meta: Mapping[str, Any], frames: np.ndarray | None = None) -> ViewPrediction:
        code = meta.get("view_code")
        if isinstance(code, str) and code:
            view = view_from_text(code)
            if view is not None:
                return ViewPrediction(view, "view_code", 1.0)
        hint = meta.get("view_hint")
        if isinstance(hint, str) and hint in CANONICAL_VIEWS and hint != UNKNOWN_VIEW:
            return ViewPrediction(hint, "view_hint", 0.9)
        stated = _terms(meta.get("image_type")) | _terms(meta.get("body_part"))
        if stated & _NON_CARDIAC_TERMS and not stated & _CARDIAC_TERMS:
            return ViewPrediction(NON_CARDIAC, "image_type_body_part", 0.8)
        if isinstance(code, str) and code:
            # A view code the table does not know, on a study that is not non-cardiac.
            return ViewPrediction("OTHER_CARDIAC", "view_code", 0.5)
        return ViewPrediction(UNKNOWN_VIEW, "none", 0.0)


def load_view_classifier(spec: str | ViewClassifier | None) -> ViewClassifier:
    """Build the classifier a run asks for.

    spec: None (the header classifier), an object implementing `ViewClassifier`, or a
    "package.module:callable" string whose attribute is a classifier or a zero-argument factory
    returning one. Raises `ViewClassifierError` when the spec does not resolve to a classifier.
    """
    if spec is None:
        return HeaderViewClassifier()
    if isinstance(spec, str):
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise ViewClassifierError(f"view classifier spec {spec!r} is not 'module:callable'")
        try:
            target: Any = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ViewClassifierError(f"cannot import view classifier {spec!r}: {exc}") from exc
        # A class also "has" `classify`; only an instance (or a factory's result) is a classifier.
        is_instance = isinstance(target, ViewClassifier) and not isinstance(target, type)
        candidate = target if is_instance else target()
    else:
        candidate = spec
    if not isinstance(candidate, ViewClassifier):
        raise ViewClassifierError(f"{spec!r} does not provide `needs_pixels` and `classify`")
    return candidate


def view_rejection(view: str, keep: Iterable[str]) -> str | None:
    """The manifest reason for dropping a clip of `view`, or None when the run keeps it."""
    if view in keep:
        return None
    return "non_cardiac_view" if view == NON_CARDIAC else "view_not_selected"
