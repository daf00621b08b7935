"""The view hint: a canonical name derived from descriptions, never the description itself."""

from __future__ import annotations

import pytest

from echofm.io.views import CANONICAL_VIEWS, view_hint


@pytest.mark.parametrize(
    ("kwargs", "view"),
    [
        ({"series_description": "Smith A4C zoom"}, "A4C"),
        ({"series_description": "apical 2 chamber"}, "A2C"),
        ({"view_code_meaning": "Apical long axis"}, "A3C"),
        ({"series_description": "AP5 LVOT"}, "A5C"),
        ({"view_code_meaning": "Parasternal long axis"}, "PLAX"),
        ({"series_description": "PSAX mid papillary"}, "PSAX"),
        ({"series_description": "Subcostal 4CH"}, "A4C"),
        ({"series_description": "subcostal IVC"}, "SUBCOSTAL"),
        ({"series_description": "Suprasternal arch"}, "SUPRASTERNAL"),
        ({"series_description": "Adult Echo", "body_part": "HEART"}, "OTHER_CARDIAC"),
        ({"image_type": ["DERIVED", "PRIMARY", "EPICARDIAL"]}, "OTHER_CARDIAC"),
        ({"series_description": "Liver survey"}, "NON_CARDIAC"),
        ({"body_part": "ABDOMEN"}, "NON_CARDIAC"),
        ({"image_type": ["ORIGINAL", "PRIMARY", "OBSTETRICAL"]}, "NON_CARDIAC"),
        ({"series_description": "Series 3"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_view_hint(kwargs: dict[str, object], view: str) -> None:
    got = view_hint(**kwargs)  # type: ignore[arg-type]
    assert got == view
    assert got in CANONICAL_VIEWS
