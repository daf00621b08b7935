from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from echofm.data.augment_config import AugmentConfig
from echofm.data.loader import ClipNormalization
from echofm.model import build_model
from echofm.representation.embed import normalised_augment
from echofm.representation.gate import RepresentationGate, check_representation
from echofm.representation.report import (
    EncoderMeasures,
    ProbeLabels,
    RepresentationReport,
    compare_encoders,
)

SMALL = dict(img_size=32, num_frames=16, patch_size=8, embed_dim=48, depth=2, num_heads=3,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
NORM = ClipNormalization(mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope="module")
def compared():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, random = build_model("tiny", **SMALL), build_model("tiny", **SMALL)
    video = torch.randn(12, 3, 16, 32, 32)
    labels = ProbeLabels(view=["A4C", "PLAX", "PSAX", None] * 3, ef=[float(x) for x in np.linspace(20, 70, 12)],
                         groups=[i // 2 for i in range(12)])
    augment = normalised_augment(NORM, AugmentConfig(), seed=3)
    return compare_encoders(model, video, labels=labels, augment=augment, random=random, step=5)


def test_report_measures_both_encoders_on_the_same_clips(compared):
    report, mine, theirs = compared
    assert report.n_clips == 12 and report.width == 48 and report.step == 5 and report.max_rank == 12
    assert report.n_labelled == {"view": 9, "ef": 12}
    for measures in (report.pretrained, report.random):
        values = measures.to_dict()
        assert all(v is not None for v in values.values()), values
    assert mine.embeddings.clips.shape == (12, 48) and mine.embeddings.slices.shape == (12, 4, 48)
    assert theirs is not None and not np.allclose(mine.embeddings.clips, theirs.embeddings.clips)
    assert np.array(report.slice_map).shape == (4, 4)


def test_report_round_trips_and_renders(compared):
    report, _, _ = compared
    again = RepresentationReport.from_dict(report.to_dict())
    assert again.to_dict() == report.to_dict()
    metrics = report.metrics()
    assert metrics["repr/mean_cosine"] == report.pretrained.mean_cosine
    assert metrics["repr/random/knn_view_accuracy"] == report.random.knn_view_accuracy
    rows = {row["measure"]: row for row in report.rows()}
    assert rows["mean_cosine"]["better"] == "lower" and rows["rankme"]["better"] == "higher"
    assert any("knn_view_accuracy" in line for line in report.lines())
    assert "| ef_r2 |" in report.markdown()


def test_probe_labels_follow_clip_order_and_leave_missing_clips_unknown():
    frame = pd.DataFrame({"clip_id": ["b", "a", "z"], "view": ["A4C", "PLAX", "A2C"], "ef": [40.0, 55.0, 60.0]})
    labels = ProbeLabels.from_frame(frame, ["a", "b", "c"])
    assert labels.view[:2] == ["PLAX", "A4C"] and pd.isna(labels.view[2])
    assert labels.ef[:2] == [55.0, 40.0] and math.isnan(labels.ef[2]) and labels.groups is None
    with pytest.raises(ValueError):
        ProbeLabels.from_frame(frame.drop(columns="clip_id"), ["a"])


def _report(cosine=0.5, rank=30.0, knn=(0.8, 0.7), ef=(0.3, 0.1), with_random=True) -> RepresentationReport:
    mine = EncoderMeasures(mean_cosine=cosine, rankme=rank, knn_view_accuracy=knn[0], ef_r2=ef[0])
    theirs = EncoderMeasures(mean_cosine=0.9, rankme=20.0, knn_view_accuracy=knn[1], ef_r2=ef[1])
    return RepresentationReport(n_clips=96, width=192, pretrained=mine, random=theirs if with_random else None)


def test_gate_passes_a_learned_encoder_and_names_every_failure():
    assert check_representation(_report()).passed
    failed = check_representation(_report(cosine=0.97, rank=5.0, knn=(0.6, 0.7), ef=(0.0, 0.1)))
    assert not failed.passed and len(failed.failures) == 4
    assert "mean cosine 0.970 > 0.9" in failed.reason and "RankMe 5.0 < 9.6" in failed.reason
    assert "knn_view_accuracy 0.600 worse than random init 0.700" in failed.reason
    assert check_representation(_report(knn=(0.7, 0.7))).passed  # as good as random is enough
    assert not check_representation(_report(with_random=False)).passed  # probes with no baseline
    unlabelled = RepresentationReport(n_clips=96, width=192, pretrained=EncoderMeasures(mean_cosine=0.5, rankme=30.0))
    assert check_representation(unlabelled).passed  # collapse measures alone
    assert not check_representation(None).passed
    assert check_representation(_report(cosine=0.95), RepresentationGate(max_mean_cosine=0.96)).passed
    with pytest.raises(ValueError):
        RepresentationGate(probes=("view_cosine_same",))
