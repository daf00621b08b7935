"""Each prepared replica fine-tunes one epoch on its tasks at the tiny preset; the official split
is honoured (a test clip never trains), `--fold K` picks the fold datasets' test and validation
folds, `--resplit` draws the patient split; nothing planted reaches MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echofm.downstream.config import FinetuneConfig
from echofm.downstream.dataset import build_task_data
from echofm.downstream.finetune import finetune
from echofm.downstream.splits import SplitConfig, SplitError
from echofm.preprocess.clips import InputSpec
from echofm.registry.register import model_card

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

RUNS = [
    ("echonet-dynamic", "ef", {}), ("echonet-dynamic", "reduced_ef", {}), ("echonet-dynamic", "segmentation", {}),
    ("echonet-pediatric", "ef", {"fold": 0}), ("echonet-pediatric", "segmentation", {"fold": 2}),
    ("echonet-lvh", "lvh", {}),
    ("camus", "ef", {}), ("camus", "view", {}), ("camus", "segmentation", {}),
    ("tmed-2", "aortic_stenosis", {}), ("tmed-2", "view", {}),
    ("mimic-iv-echo", "ef", {}),
]
METRICS = {
    "lvh": {"mae", "ivs_mm_mae", "lvid_mm_mae", "lvpw_mm_mae"},
    ("camus", "segmentation"): {"dice", "dice_lv_endo", "dice_lv_myo", "dice_la"},
    ("echonet-dynamic", "segmentation"): {"dice"},
    "aortic_stenosis": {"accuracy", "macro_f1", "macro_auroc"},
}
SPEC = InputSpec(num_frames=8, img_size=32)


def _run(prepared, task: str, split: dict, downstream_archive, **options):
    config = FinetuneConfig(task=task, epochs=1, batch_size=4, compare="none",
                            split=SplitConfig(**split), **options)
    return finetune(config, encoder=downstream_archive.encoder_path, shards=prepared.out / "shards",
                    labels=prepared.labels_path)


@pytest.mark.parametrize("name, task, split", RUNS, ids=[f"{n}-{t}" for n, t, _ in RUNS])
def test_one_epoch_on_each_task(name: str, task: str, split: dict, prepared_replica, downstream_archive) -> None:
    prepared = prepared_replica(name)
    result = _run(prepared, task, split, downstream_archive)
    assert result.counts["train"]["clips"] > 0 and result.counts["test"]["clips"] > 0
    expected = METRICS.get((name, task)) or METRICS.get(task)
    if expected:
        assert expected <= set(result.test_metrics)
    # The primary metric is defined on any test set (R^2 is not on one clip, hence not all).
    assert np.isfinite(result.test_metrics[result.task.primary_metric[0]])
    if (name, task) == ("camus", "segmentation"):
        assert result.task.classes == ("lv_endo", "lv_myo", "la") and result.task.out_dim == 4
    # The model card names the split that was used, and says when stills entered as repeated frames.
    card = model_card(result.summary(), f"echofm-{task}", "linear")
    rule = {"echonet-pediatric": f"fold {split.get('fold')} as test", "mimic-iv-echo": "split by patient"}
    assert rule.get(name, "the labels' official split") in card
    assert ("entered as a clip of its frame repeated" in card) == (name == "tmed-2")


@pytest.mark.parametrize("name", ["echonet-dynamic", "camus", "tmed-2", "echonet-lvh"])
def test_the_official_split_is_honoured(name: str, prepared_replica) -> None:
    prepared = prepared_replica(name)
    labels = pd.read_parquet(prepared.labels_path).set_index("clip_id")
    task = {"echonet-lvh": "lvh", "tmed-2": "view"}.get(name, "ef")
    data = build_task_data(task=task, manifest=prepared.manifest_path, labels=prepared.labels_path,
                           shards_dir=prepared.out / "shards", spec=SPEC, split_config=SplitConfig())
    assert list(data.split) == [labels.loc[c, "split"] for c in data.clip_ids]
    test_records = {r for r, s in prepared.replica.splits.items() if s == "test"}
    trained = {labels.loc[c, "record"] for c in np.array(data.clip_ids)[data.indices("train")]}
    assert test_records and not trained & test_records


def test_folds_pick_test_and_validation_and_resplit_draws_patients(prepared_replica) -> None:
    prepared = prepared_replica("echonet-pediatric")
    labels = pd.read_parquet(prepared.labels_path).set_index("clip_id")

    def split_of(config: SplitConfig) -> dict[int, set[str]]:
        data = build_task_data(task="ef", manifest=prepared.manifest_path, labels=prepared.labels_path,
                               shards_dir=prepared.out / "shards", spec=SPEC, split_config=config)
        folds: dict[int, set[str]] = {}
        for clip, split in zip(data.clip_ids, data.split):
            folds.setdefault(int(labels.loc[clip, "split"]), set()).add(str(split))
        return folds

    folds = split_of(SplitConfig(fold=3))
    assert folds[3] == {"test"} and folds[4] == {"val"}
    assert all(s == {"train"} for f, s in folds.items() if f not in (3, 4))
    assert split_of(SplitConfig(fold=4))[0] == {"val"}  # K + 1 wraps round
    with pytest.raises(SplitError, match="--fold K"):
        split_of(SplitConfig())
    resplit = split_of(SplitConfig(official=False, seed=3))
    assert set().union(*resplit.values()) <= {"train", "val", "test"} and resplit != folds


def test_a_registered_model_carries_no_planted_value(prepared_replica, downstream_archive, tmp_path) -> None:
    from echofm.data.loader import file_digest
    from echofm.registry.register import log_and_register

    prepared = prepared_replica("mimic-iv-echo")
    config = FinetuneConfig(task="ef", epochs=1, batch_size=4, compare="none")
    result = finetune(config, encoder=downstream_archive.encoder_path, shards=prepared.out / "shards",
                      labels=prepared.labels_path, out_dir=tmp_path / "ef")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_and_register(result.checkpoint, tracking_uri=uri, labels_digest=file_digest(prepared.labels_path))
    # The store, its artifacts (the pyfunc with its model card) and the checkpoint with its result.json.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in files)
    stored = b"".join([p.read_bytes() for p in files] + [str(p).encode() for p in files])
    for value in prepared.replica.phi:
        assert value.encode() not in stored
