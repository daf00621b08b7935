"""Deterministic patient-level train/val/test splits.

Each patient pseudonym is hashed with a seed to a number u in [0, 1); u below `train_fraction`
is train, the next `val_fraction` is val, the rest test. A patient's split therefore depends on
its pseudonym and the seed only, never on which other patients are present: when a new archive
adds patients, nobody already in the test set moves into training. All clips of a patient share
the patient's split, so no patient appears in two splits.

Small cohorts can leave val or test empty by chance; `min_patients_per_split` then moves the
train patients whose u lies nearest the empty split's interval into it, which keeps the choice
deterministic and changes as few assignments as possible.

A label table with its own `split` column (a public dataset's official split, as
`echofm datasets prepare` writes it) is used as it is unless `official` is off (`--resplit`):
train/val/test values directly, fold numbers through `fold` (fold K is test, fold K + 1 modulo
the number of folds is validation, the rest trains, as EchoNet-Pediatric's own code does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, model_validator

from echofm.errors import DownstreamError
from echofm.options import Options

if TYPE_CHECKING:
    import pandas as pd

SPLITS: tuple[str, str, str] = ("train", "val", "test")


class SplitError(DownstreamError, ValueError):
    """The split cannot be made (bad fractions, missing patient pseudonyms)."""


class SplitConfig(Options):
    """Fractions of patients per split and the hashing seed."""

    error: ClassVar[type[Exception]] = SplitError

    val_fraction: float = Field(default=0.15, ge=0.0, lt=1.0, description="patients in the validation split")
    test_fraction: float = Field(default=0.15, ge=0.0, lt=1.0, description="patients in the test split")
    seed: int = Field(default=0, description="seed of the patient hash")
    # With at least 3 patients, val and test each get at least this many (taken from train).
    min_patients_per_split: int = Field(default=1, ge=0, description="patients val and test get at least")
    official: bool = Field(default=True, description="use the labels' own split column when they have one")
    fold: int | None = Field(default=None, ge=0, description="fold datasets: fold K is test, K+1 validation")

    @model_validator(mode="after")
    def _leaves_training(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave patients for training")
        return self

    @property
    def train_fraction(self) -> float:
        return 1.0 - self.val_fraction - self.test_fraction


def patient_unit(patient: str, seed: int) -> float:
    """The patient's position u in [0, 1): SHA-256 of `"<seed>:<patient>"`, first 8 bytes."""
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _split_of(u: float, config: SplitConfig) -> str:
    if u < config.train_fraction:
        return "train"
    if u < config.train_fraction + config.val_fraction:
        return "val"
    return "test"


def split_patients(patients: Iterable[str], config: SplitConfig) -> dict[str, str]:
    """Map each distinct patient pseudonym to "train", "val" or "test"."""
    distinct = set(patients)
    if any(p is None or (isinstance(p, float) and p != p) or p == "" for p in distinct):
        raise SplitError("every clip needs a patient pseudonym to be split by patient")
    units = {p: patient_unit(str(p), config.seed) for p in distinct}
    assignment = {p: _split_of(u, config) for p, u in units.items()}
    if len(units) < 3 or config.min_patients_per_split == 0:
        return assignment
    # Train is the bottom of [0, 1), so the train patients nearest val and test are those with
    # the largest u; test (the top interval) is filled first, then val.
    for split, fraction in (("test", config.test_fraction), ("val", config.val_fraction)):
        if fraction == 0:
            continue
        missing = config.min_patients_per_split - sum(s == split for s in assignment.values())
        train = sorted((p for p, s in assignment.items() if s == "train"), key=lambda p: -units[p])
        for patient in train[: max(0, min(missing, len(train) - 1))]:
            assignment[patient] = split
    return assignment


def assign_splits(
    frame: pd.DataFrame, config: SplitConfig, *, patient_column: str = "patient_id"
) -> pd.Series:
    """A "split" Series aligned with `frame`, every clip taking its patient's split."""
    if patient_column not in frame.columns:
        raise SplitError(f"no {patient_column!r} column to split by")
    patients = frame[patient_column]
    if patients.isna().any():
        raise SplitError(f"{int(patients.isna().sum())} rows have no {patient_column}")
    mapping = split_patients(patients.astype(str), config)
    return patients.astype(str).map(mapping).rename("split")


# Official split values (any case) -> the project's split names.
OFFICIAL_NAMES: dict[str, str] = {"train": "train", "training": "train", "val": "val", "valid": "val",
                                  "validation": "val", "test": "test", "testing": "test"}


def _fold_number(value: object) -> int | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return int(number) if number == int(number) and number >= 0 else None


def official_splits(values: pd.Series, config: SplitConfig) -> pd.Series:
    """The labels' own split as "train" | "val" | "test" per row (see the module doc).

    Raises SplitError for a row without a split value, values that are neither split names nor
    fold numbers, fold numbers without `config.fold`, or a fold the table does not have.
    """
    if values.isna().any() or (values.astype(str).str.strip() == "").any():
        raise SplitError(f"{int((values.isna() | (values.astype(str).str.strip() == '')).sum())} labelled rows have "
                         "no split value; fill them or use --resplit")
    folds = values.map(_fold_number)
    if folds.notna().all():
        n_folds = int(folds.max()) + 1
        if config.fold is None:
            raise SplitError(f"the labels define folds 0-{n_folds - 1}: choose the test fold with --fold K")
        if config.fold >= n_folds:
            raise SplitError(f"fold {config.fold} is not in the labels' folds 0-{n_folds - 1}")
        val_fold = (config.fold + 1) % n_folds
        return folds.map(lambda f: "test" if f == config.fold else "val" if f == val_fold else "train").rename("split")
    names = values.astype(str).str.strip().str.lower().map(OFFICIAL_NAMES)
    if names.isna().any():
        bad = sorted(set(values[names.isna()].astype(str)))[:5]
        raise SplitError(f"split values {bad} are neither train/val/test nor fold numbers")
    if config.fold is not None:
        raise SplitError("--fold is for labels whose split column holds fold numbers")
    return names.rename("split")


def split_counts(splits: pd.Series | Mapping[str, str]) -> dict[str, int]:
    """Number of entries per split, zero for empty splits."""
    values = list(splits.values()) if isinstance(splits, Mapping) else list(splits)
    return {name: sum(v == name for v in values) for name in SPLITS}
