"""What a public dataset is: one `PublicDataset` per published layout, registered in `catalog.py`.

A dataset definition knows where the videos of its published layout lie and how its label files
translate into the project's own columns; it reads a download (`read(root, keys)`) into a
`Listing`: one `ListedVideo` per video the dataset lists, each with the dataset's own published
identifier (`record`), its official split when the dataset has one, and its targets. Everything
after that (ingestion, joining to the manifest, labels.parquet) is the same for every dataset
(`echofm.datasets.prepare`).

Torch- and pandas-free at import: `echofm datasets list` and the CLI's choices read the registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from echofm.errors import DatasetError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from echofm.io.deid import Pseudonymizer

# An identifier in the published form of most datasets: letters, digits, `._-`, no spaces.
PLAIN_RECORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SplitKind = Literal["official", "folds", "none"]


class DatasetLayoutError(DatasetError, ValueError):
    """A download that does not match its dataset's published layout: a missing file, or a
    table without the columns the dataset defines. The message names the file and what is missing."""


class UnknownDataset(DatasetError, KeyError):
    """A dataset name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class LabelMasks:
    """Masks of the labelled frames of one video, at the video's own (ingested) geometry.

    masks: uint8 `[K, H, W]`, 0 background and 1..len(classes) the structures; frame_indices:
    int64 `[K]`, the source frame of each; classes: the structure of each label value from 1.
    """

    masks: np.ndarray
    frame_indices: np.ndarray
    classes: tuple[str, ...] = ("lv",)


@dataclass(frozen=True)
class ListedVideo:
    """One video the dataset lists.

    rel_path: POSIX path of the video under ROOT; companions: files read with it (an `.mhd`'s
    voxels). record: the dataset's published identifier of the video (never a local path);
    patient: the key clips are grouped by for a patient split (a published or keyed id).
    split: "train" | "val" | "test", a fold number, or None. targets: label columns in the
    project's names (`ef`, `view`, ...). masks: builds the video's masks when it was accepted.
    """

    rel_path: str
    record: str
    patient: str
    split: str | int | None = None
    targets: Mapping[str, Any] = field(default_factory=dict)
    masks: Callable[[], LabelMasks] | None = None
    companions: tuple[str, ...] = ()


@dataclass
class Listing:
    """What a download holds. unusable: `(record, reason)` of rows the dataset lists that cannot
    become a labelled clip before any ingestion (no video file, no tracing, ...)."""

    videos: list[ListedVideo]
    unusable: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class PublicDataset:
    """One public dataset in its published layout.

    name: the CLI choice (`echonet-dynamic`). title, layout: what `echofm datasets list` prints.
    split: "official" (train/val/test in the labels), "folds" (fold numbers: `finetune --fold K`)
    or "none" (patient split). tasks: the registered downstream tasks its labels serve.
    record_pattern: the published form of `record`; a listed row whose identifier does not match
    it (a renamed file, a name carrying patient details) is reported, never ingested.
    ingest_defaults: IngestConfig fields this dataset needs (explicit ingest options win).
    read: `(root, keys) -> Listing`; keys is the run's pseudonymizer, for datasets whose raw
    identifiers must not reach an output (MIMIC-IV-ECHO).
    """

    name: str
    title: str
    layout: str
    split: SplitKind
    tasks: tuple[str, ...]
    read: Callable[[Path, Pseudonymizer], Listing]
    record_pattern: re.Pattern[str] = PLAIN_RECORD
    ingest_defaults: Mapping[str, Any] = field(default_factory=dict)


class DatasetRegistry:
    """Datasets by name, in registration order."""

    def __init__(self) -> None:
        self._datasets: dict[str, PublicDataset] = {}

    def register(self, dataset: PublicDataset) -> PublicDataset:
        if dataset.name in self._datasets:
            raise DatasetError(f"dataset {dataset.name!r} is registered twice")
        self._datasets[dataset.name] = dataset
        return dataset

    def __getitem__(self, name: str) -> PublicDataset:
        try:
            return self._datasets[name]
        except KeyError:
            raise UnknownDataset(f"unknown dataset {name!r}; expected one of {self.names()}") from None

    def __iter__(self) -> Iterator[PublicDataset]:
        return iter(self._datasets.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._datasets)


def require_file(root: Path, rel: str) -> Path:
    """`root/rel`, or a DatasetLayoutError naming it."""
    path = root / rel
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: missing (the published layout has {rel})")
    return path


def read_table(path: Path, required: Sequence[str], *, optional: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV with at least the columns `required` (all read as text: identifiers such as
    EchoNet's `0X...` names or fold numbers must not be parsed), else DatasetLayoutError
    naming the file and each missing column. Only `required` and `optional` columns are kept,
    so free-text columns never travel further."""
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetLayoutError(f"{path}: not a readable CSV ({type(exc).__name__})") from exc
    columns = [str(c).strip() for c in header.columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DatasetLayoutError(f"{path}: missing column(s) {', '.join(missing)} (has {len(columns)} other columns)")
    keep = [c for c in (*required, *optional) if c in columns]
    table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                        usecols=lambda c: str(c).strip() in keep)
    table.columns = [str(c).strip() for c in table.columns]
    return table[keep]


def number(value: Any) -> float | None:
    """A float from a table cell, None when empty or not a number."""
    try:
        result = float(str(value).strip())
    except ValueError:
        return None
    return result if result == result else None


def file_index(root: Path, suffixes: Sequence[str]) -> dict[str, str]:
    """`{file name: POSIX path under root}` of every file with one of `suffixes` (lower case),
    for layouts whose tables name a file but not its folder (EchoNet-LVH's batches)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.lower().endswith(tuple(suffixes)):
            found.setdefault(path.name, path.relative_to(root).as_posix())
    return found
