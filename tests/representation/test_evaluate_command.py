"""`echofm evaluate-representation`: the report of a checkpoint on shards, and its embeddings file."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from echofm.cli import main
from echofm.data.loader import ClipNormalization, load_clips, manifest_path_for, training_clips
from echofm.downstream.dataset import probe_label_table
from echofm.model import build_model, random_init, save_checkpoint
from tests.factories.shards import write_test_shards

SMALL = dict(img_size=32, num_frames=16, patch_size=8, embed_dim=48, depth=2, num_heads=3,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
VIEWS = ["A4C", "PLAX", "PSAX", "A2C"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("repr")
    shards = root / "out" / "shards"
    keys = write_test_shards(shards, [6, 6], side=32, manifest=True)
    labels = pd.DataFrame({"clip_id": keys, "view": [VIEWS[i % 4] for i in range(12)],
                           "ef": [30.0 + 3 * i for i in range(12)], "patient": [f"p{i // 2}" for i in range(12)]})
    labels.loc[11, "view"] = None  # one clip without a view label
    labels.to_csv(root / "labels.csv", index=False)
    torch.manual_seed(0)
    model = build_model("tiny", **SMALL)
    norm = ClipNormalization(mean=(0.3,) * 3, std=(0.2,) * 3)
    save_checkpoint(root / "encoder.pt", model,
                    extra={"normalization": norm.to_dict(), "pretrain_config": {"seed": 3}})
    return root, shards, keys, model, norm


def test_the_report_and_both_encoders_embeddings(archive, capsys):
    root, shards, keys, model, norm = archive
    out = root / "embeddings.parquet"
    assert main(["evaluate-representation", str(root / "encoder.pt"), "--shards", str(shards),
                 "--labels", str(root / "labels.csv"), "--embeddings-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on 12 clips (labelled: {'view': 11, 'ef': 12}), against random init (seed 3)" in printed
    assert "knn_view_accuracy" in printed and "representation gate" in printed

    table = pd.read_parquet(out)
    assert list(table.columns) == ["clip_id", "encoder", "embedding", "view", "ef"]
    assert len(table) == 24 and set(table["encoder"]) == {"pretrained", "random"}
    assert set(table["clip_id"]) == set(keys) and table["view"].isna().sum() == 2
    # The embeddings are the encoders' own clip embeddings of the normalised clips.
    video = load_clips(training_clips(shards), keys[:2], img_size=32, num_frames=16, normalization=norm)
    baseline = random_init(model.config, 3).eval()
    with torch.no_grad():
        expected = {"pretrained": model.eval().forward_features(video), "random": baseline.forward_features(video)}
    for name, values in expected.items():
        rows = table[(table["encoder"] == name)].set_index("clip_id")
        got = torch.tensor([rows.loc[key, "embedding"].tolist() for key in keys[:2]])
        torch.testing.assert_close(got, values, atol=1e-4, rtol=1e-4)


def test_unusable_inputs_exit_2(archive, tmp_path):
    root, shards, _, _, _ = archive
    assert main(["evaluate-representation", str(tmp_path / "missing.pt"), "--shards", str(shards)]) == 2
    assert main(["evaluate-representation", str(root / "encoder.pt"), "--shards", str(shards),
                 "--embeddings-out", str(tmp_path / "e.csv")]) == 2


def test_probe_labels_group_by_patient_without_the_pseudonym(archive):
    root, shards, keys, _, _ = archive
    table = probe_label_table(manifest_path_for(shards), root / "labels.csv")
    assert list(table.columns) == ["clip_id", "view", "ef", "patient"] and set(table["clip_id"]) == set(keys)
    assert not set(table["patient"]) & {f"p{i}" for i in range(6)}
    assert table.groupby("patient").size().tolist() == [2] * 6
