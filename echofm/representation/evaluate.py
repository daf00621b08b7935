"""The representation report of any encoder on an ingestion output, and its per-clip embeddings.

`evaluate_encoder` is what `echofm evaluate-representation` runs: it reads the clips from the
shards at the encoder's input size, normalised as its pretraining did (the checkpoint records
the statistics; otherwise they are computed from the shards), measures the encoder and a
random one of the same config on the same clips and augmented views, and keeps both
encoders' clip embeddings for `write_embeddings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from echofm.data.augment_config import AugmentConfig
from echofm.data.loader import ClipNormalization, load_clips, select_holdout, training_clips
from echofm.model import random_init
from echofm.representation.embed import normalised_augment
from echofm.representation.report import ProbeLabels, RepresentationReport, compare_encoders

# Fixed seed of the report's augmentations, so every report draws the same views.
VIEW_SEED = 20260
EMBEDDING_LABEL_COLUMNS: tuple[str, ...] = ("view", "ef")  # label columns written beside embeddings


def view_augment(normalization: ClipNormalization):
    """A fresh, identically seeded augmentation of normalised clips (the report's views)."""
    return normalised_augment(normalization, AugmentConfig(), VIEW_SEED)


@dataclass(frozen=True)
class EncoderEvaluation:
    """A report with the clip embeddings it was measured on (`[N, D]` each, in `clip_ids` order)."""

    report: RepresentationReport
    clip_ids: list[str]
    pretrained: np.ndarray
    random: np.ndarray
    labels: pd.DataFrame  # `clip_id` and the known `EMBEDDING_LABEL_COLUMNS`, in clip order
    seed: int


def evaluate_encoder(
    model: nn.Module,
    shards_dir: str | Path,
    *,
    extra: Mapping[str, Any] | None = None,
    clips: int | None = None,
    labels: pd.DataFrame | None = None,
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> EncoderEvaluation:
    """Report of `model` (a `MaskedAutoencoderViT`) on the clips of `shards_dir`.

    extra: the checkpoint's extra entries (`normalization`, `pretrain_config`), when known.
    clips: how many clips (a stable hash choice, as pretraining's report makes); None: all.
    labels: a probe label table keyed by `clip_id` (`ProbeLabels.from_frame`).
    seed: the random encoder's seed; None takes the run's own from `extra`, else 0.
    """
    extra = dict(extra or {})
    seed = seed if seed is not None else int((extra.get("pretrain_config") or {}).get("seed", 0))
    available = training_clips(shards_dir)
    ids = select_holdout(available, clips) if clips else sorted(available)
    normalization = (ClipNormalization.from_dict(extra["normalization"]) if extra.get("normalization")
                     else ClipNormalization.for_shards(shards_dir))
    config = model.config
    video = load_clips(available, ids, img_size=config.img_size, num_frames=config.num_frames,
                       normalization=normalization).to(device)
    probe = ProbeLabels.from_frame(labels, ids) if labels is not None else None
    model = model.to(device)
    report, mine, theirs = compare_encoders(model, video, labels=probe, augment=view_augment(normalization),
                                            random=random_init(config, seed).to(device))
    frame = pd.DataFrame({"clip_id": ids})
    if labels is not None:
        known = [c for c in EMBEDDING_LABEL_COLUMNS if c in labels.columns]
        by_id = labels.assign(clip_id=labels["clip_id"].astype(str)).drop_duplicates("clip_id").set_index("clip_id")
        frame = frame.join(by_id[known], on="clip_id")
    return EncoderEvaluation(report=report, clip_ids=ids, pretrained=mine.embeddings.clips,
                             random=theirs.embeddings.clips, labels=frame, seed=seed)


def write_embeddings(path: str | Path, evaluation: EncoderEvaluation) -> Path:
    """Parquet with one row per (clip, encoder): `clip_id`, `encoder` (pretrained|random),
    `embedding` (list<float32>) and the label columns; written to a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    parts = []
    for name, matrix in (("pretrained", evaluation.pretrained), ("random", evaluation.random)):
        part = evaluation.labels.copy()
        part.insert(1, "encoder", name)
        part.insert(2, "embedding", list(matrix.astype(np.float32)))
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    fields = [pa.field("clip_id", pa.string()), pa.field("encoder", pa.string()),
              pa.field("embedding", pa.list_(pa.float32()))]
    fields += [pa.field(c, pa.string() if c == "view" else pa.float64()) for c in frame.columns[3:]]
    table = pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path
