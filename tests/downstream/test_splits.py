"""Patient-level splits: deterministic, disjoint, stable as patients are added."""

from __future__ import annotations

import pandas as pd
import pytest

from echofm.downstream.splits import (
    SplitConfig,
    SplitError,
    assign_splits,
    official_splits,
    split_counts,
    split_patients,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_no_patient_in_two_splits_and_clips_follow_their_patient() -> None:
    frame = pd.DataFrame({"patient_id": [f"p{i % 40}" for i in range(200)], "clip": range(200)})
    splits = assign_splits(frame, SplitConfig(seed=3))
    per_patient = frame.assign(split=splits).groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    assert set(splits) == {"train", "val", "test"}


def test_deterministic_and_seed_dependent() -> None:
    patients = [f"patient-{i}" for i in range(100)]
    a = split_patients(patients, SplitConfig(seed=1))
    assert a == split_patients(list(reversed(patients)), SplitConfig(seed=1))
    assert a != split_patients(patients, SplitConfig(seed=2))


def test_fractions_are_respected_roughly() -> None:
    counts = split_counts(split_patients([f"p{i}" for i in range(2000)], SplitConfig(val_fraction=0.2, test_fraction=0.1)))
    assert 0.17 < counts["val"] / 2000 < 0.23
    assert 0.08 < counts["test"] / 2000 < 0.12


def test_adding_patients_never_moves_existing_ones() -> None:
    config = SplitConfig(seed=5)
    before = split_patients([f"p{i}" for i in range(300)], config)
    after = split_patients([f"p{i}" for i in range(600)], config)
    assert all(after[p] == s for p, s in before.items())


def test_small_cohort_still_gets_val_and_test() -> None:
    assignment = split_patients(["a", "b", "c", "d"], SplitConfig(seed=0, val_fraction=0.01, test_fraction=0.01))
    assert split_counts(assignment) == {"train": 2, "val": 1, "test": 1}


def test_missing_patient_and_bad_fractions_are_errors() -> None:
    with pytest.raises(SplitError):
        assign_splits(pd.DataFrame({"patient_id": ["a", None]}), SplitConfig())
    with pytest.raises(SplitError):
        SplitConfig(val_fraction=0.6, test_fraction=0.5)


def test_official_split_names_and_folds() -> None:
    names = pd.Series(["TRAIN", "Val", "test", "validation"])
    assert official_splits(names, SplitConfig()).tolist() == ["train", "val", "test", "val"]
    folds = pd.Series([0, 1, 2, 3, 1, "2"])
    assert official_splits(folds, SplitConfig(fold=1)).tolist() == ["train", "test", "val", "train", "test", "val"]
    assert official_splits(folds, SplitConfig(fold=3)).tolist() == ["val", "train", "train", "test", "train", "train"]
    with pytest.raises(SplitError, match="--fold K"):
        official_splits(folds, SplitConfig())
    with pytest.raises(SplitError, match="fold 7 is not"):
        official_splits(folds, SplitConfig(fold=7))
    with pytest.raises(SplitError, match="fold numbers"):
        official_splits(names, SplitConfig(fold=1))
    with pytest.raises(SplitError, match="neither"):
        official_splits(pd.Series(["train", "holdout"]), SplitConfig())
    with pytest.raises(SplitError, match="no split value"):
        official_splits(pd.Series(["train", None]), SplitConfig())
