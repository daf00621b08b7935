"""What pretraining measures its representation report on, at every evaluation (rank 0).

The report's clips are the held-out clips followed, up to `report_clips`, by training clips in
the same stable hash order (`select_holdout` ranks every clip once; its first `holdout_clips`
are the held-out ones). Self-supervised pretraining never sees a label, so probing clips it
trained on is the usual frozen-probe protocol; the collapse measures need no labels at all.

The random baseline is rebuilt from the run's own seed, which reproduces the weights the run
started from exactly (also after a resume), and is measured once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from echofm.data.loader import ClipNormalization, load_clips, select_holdout
from echofm.model import preset_config, random_init
from echofm.pretrain.config import PretrainConfig
from echofm.representation.embed import augmented_pair
from echofm.representation.evaluate import view_augment
from echofm.representation.labels import ProbeLabels, read_probe_labels
from echofm.representation.report import (
    EncoderMeasures,
    RepresentationReport,
    compare_encoders,
    measure_model,
)


@dataclass
class ReportSet:
    """The report's clips (normalised video on the device), labels and random baseline."""

    clip_ids: list[str]
    video: torch.Tensor
    labels: ProbeLabels | None
    normalization: ClipNormalization
    random: EncoderMeasures

    @classmethod
    def load(cls, config: PretrainConfig, clips: dict[str, Path], normalization: ClipNormalization,
             device: torch.device) -> ReportSet:
        initial = random_init(preset_config(config.preset, **config.model_kwargs()), config.seed).to(device)
        ids = select_holdout(clips, config.report_clips)
        video = load_clips(clips, ids, img_size=initial.config.img_size, num_frames=initial.config.num_frames,
                           normalization=normalization).to(device)
        labels = read_probe_labels(config.probe_labels, ids) if config.probe_labels else None
        augmented = augmented_pair(video, view_augment(normalization))
        random = measure_model(initial, video, labels=labels, augmented=augmented).measures
        return cls(clip_ids=ids, video=video, labels=labels, normalization=normalization, random=random)

    def report(self, model: torch.nn.Module, step: int) -> RepresentationReport:
        report, _, _ = compare_encoders(model, self.video, labels=self.labels,
                                        augment=view_augment(self.normalization), random=self.random, step=step)
        return report
