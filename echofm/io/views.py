"""A canonical echo view guessed from the coded and free-text view descriptions of a DICOM.

The free text (SeriesDescription, ViewCodeSequence meaning, ImageType values) may carry patient
details typed by the sonographer, so only the canonical name derived here ever leaves the reader.
The hint is a weak prior for the view filter, not a label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CANONICAL_VIEWS: tuple[str, ...] = (
    "A2C",
    "A3C",
    "A4C",
    "A5C",
    "PLAX",
    "PSAX",
    "SUBCOSTAL",
    "SUPRASTERNAL",
    "OTHER_CARDIAC",
    "NON_CARDIAC",
    "unknown",
)

# Checked in order: the specific apical views come before the generic long/short-axis patterns
# ("apical long axis" is A3C, not PLAX), and every view before the generic cardiac words.
_VIEW_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (view, re.compile(pattern, re.IGNORECASE))
    for view, pattern in (
        ("A5C", r"\bA5C\b|\bAP5\b|\b5[ -]?CH|apical[ -]?(five|5)"),
        ("A4C", r"\bA4C\b|\bAP4\b|\b4[ -]?CH|apical[ -]?(four|4)"),
        ("A3C", r"\bA3C\b|\bAP3\b|\b3[ -]?CH|apical[ -]?(three|3)|\bAPLAX\b|apical[ -]long"),
        ("A2C", r"\bA2C\b|\bAP2\b|\b2[ -]?CH|apical[ -]?(two|2)"),
        ("PLAX", r"\bPLAX\b|parasternal[ -]?long|\bPSLAX\b"),
        ("PSAX", r"\bPSAX\b|parasternal[ -]?short|short[ -]?axis|\bSAX\b"),
        ("SUBCOSTAL", r"sub[ -]?costal|\bSUBC\b|\bSC4C\b|\bIVC\b"),
        ("SUPRASTERNAL", r"supra[ -]?sternal|\bSSN\b"),
    )
)

_CARDIAC = re.compile(
    r"\becho|cardi|\bheart\b|\bTTE\b|\bTEE\b|\bLV\b|ventric|\bMV\b|mitral|aort|\bAV\b", re.IGNORECASE
)
_NON_CARDIAC = re.compile(
    r"abdom|liver|kidney|renal|pelvi|obstet|\bOB\b|fetal|foetal|thyroid|breast|vascular|carotid"
    r"|\bDVT\b|testic|scrot|uter|ovar|prostat|bladder|musc|tendon|\bMSK\b|\bneck\b|small[ -]?parts",
    re.IGNORECASE,
)
_CARDIAC_BODY_PARTS = frozenset({"HEART", "CHEST", "THORAX", "CARDIAC"})


def view_hint(
    *,
    series_description: str = "",
    view_code_meaning: str = "",
    image_type: Iterable[str] = (),
    body_part: str = "",
) -> str:
    """Return one of `CANONICAL_VIEWS` by keyword matching; "unknown" when nothing matches."""
    texts = [view_code_meaning, series_description, " ".join(image_type)]
    for text in texts:
        for view, pattern in _VIEW_PATTERNS:
            if text and pattern.search(text):
                return view
    body = body_part.strip().upper()
    joined = " ".join(t for t in texts if t)
    if body and body not in _CARDIAC_BODY_PARTS:
        return "NON_CARDIAC"
    if _NON_CARDIAC.search(joined) and not _CARDIAC.search(joined):
        return "NON_CARDIAC"
    if body in _CARDIAC_BODY_PARTS or _CARDIAC.search(joined):
        return "OTHER_CARDIAC"
    return "unknown"


# SNOMED CT codes of DICOM CID 12226 (Echocardiography Image View) for the canonical views.
VIEW_CODE_VALUES: dict[str, str] = {
    "399214001": "A4C",
    "399232001": "A2C",
    "399339008": "A3C",
    "399139001": "PLAX",
    "399306005": "PSAX",
}


def view_from_code(code_value: str = "", code_meaning: str = "") -> str:
    """The canonical view a ViewCodeSequence item names: by its code value, else by its meaning;
    a view code that names none of the canonical views is still a cardiac view ("OTHER_CARDIAC")."""
    if code_value.strip() in VIEW_CODE_VALUES:
        return VIEW_CODE_VALUES[code_value.strip()]
    for view, pattern in _VIEW_PATTERNS:
        if code_meaning and pattern.search(code_meaning):
            return view
    return "OTHER_CARDIAC"
