"""The probe labels of the representation report: a table keyed by `clip_id`.

Its columns (`view`, `ef`, `patient`, any of them) come from the labels the downstream tasks use,
joined to the manifest beforehand (`echofm.downstream.dataset.probe_label_table`); `patient` is
a digest of the pseudonym, used only to keep one patient's clips out of its own probe folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from echofm.errors import RepresentationError


class ProbeLabelError(RepresentationError, ValueError):
    """The probe label table cannot be read (suffix, missing clip_id column)."""


# ProbeLabels field -> column of a probe label table (one row per clip, keyed by `clip_id`).
PROBE_LABEL_COLUMNS: dict[str, str] = {"view": "view", "ef": "ef", "groups": "patient"}


@dataclass(frozen=True)
class ProbeLabels:
    """Labels of the report's clips, in clip order (all optional).

    view: `[N]` view names ("" or None: unknown); ef: `[N]` EF in percent (NaN: unknown);
    groups: `[N]` patient keys, so no clip is probed against its own patient's clips.
    """

    view: Sequence[Any] | None = None
    ef: Sequence[float] | None = None
    groups: Sequence[Any] | None = None

    @classmethod
    def from_frame(cls, frame: Any, clip_ids: Sequence[str]) -> ProbeLabels:
        """Labels of `clip_ids` from a table keyed by `clip_id` with any of the columns
        `PROBE_LABEL_COLUMNS` names (a pandas DataFrame); clips it lacks are unknown."""
        if "clip_id" not in frame.columns:
            raise ProbeLabelError("a probe label table needs a clip_id column")
        table = frame.assign(clip_id=frame["clip_id"].astype(str)).drop_duplicates("clip_id")
        table = table.set_index("clip_id").reindex(list(clip_ids))
        present = {name: column for name, column in PROBE_LABEL_COLUMNS.items() if column in table.columns}
        return cls(**{name: table[column].tolist() for name, column in present.items()})


def read_probe_labels(path: str | Path, clip_ids: list[str]) -> ProbeLabels:
    """Labels of `clip_ids` from a CSV/Parquet table keyed by `clip_id` (see `ProbeLabels`)."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise ProbeLabelError(f"{path}: probe labels must be .csv or .parquet")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    try:
        return ProbeLabels.from_frame(frame, clip_ids)
    except ProbeLabelError as err:
        raise ProbeLabelError(f"{path}: {err}") from None
