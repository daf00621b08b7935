"""The representation report: collapse measures and frozen probes, pretrained against random init.

    report, mine, theirs = compare_encoders(model, video, labels=labels, augment=augment, random=baseline)
    report.metrics()      # {"repr/mean_cosine": ..., "repr/random/mean_cosine": ...} for MLflow
    report.rows()         # one row per measure: pretrained, random, which direction is better
    report.to_dict()      # JSON: the model card, registry tags, `RepresentationReport.from_dict`

The random baseline is an encoder of the same config with fresh weights (in pretraining: the
very weights the run started from), measured on the same clips, augmentations and folds, so the
report says what pretraining added. Measures are defined in `measures.py` and `probes.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from echofm.representation import measures, probes
from echofm.representation.embed import ClipEmbeddings, augmented_pair, embed_clips, pixel_slices
from echofm.representation.labels import ProbeLabels

REPORT_FORMAT = 1
METRIC_PREFIX = "repr"
# Measure name -> (description, True when higher is better, None when neither direction is).
MEASURES: dict[str, tuple[str, bool | None]] = {
    "mean_cosine": ("mean pairwise cosine between different clips (1 = collapsed)", False),
    "rankme": ("effective rank of the clip embeddings (RankMe)", True),
    "view_cosine_same": ("cosine between two augmentations of the same clip", None),
    "view_cosine_different": ("cosine between augmentations of different clips", None),
    "view_gap": ("same-clip minus different-clip cosine of augmented views", True),
    "slice_similarity": ("mean cosine between time slices of a clip", None),
    "slice_contrast": ("spread of the slice self-similarity within a clip", True),
    "phase_agreement": ("correlation of slice self-similarity with the pixels' (cardiac phase)", True),
    "knn_view_accuracy": ("kNN view accuracy, leave-one-patient-out", True),
    "linear_view_accuracy": ("linear (ridge) view accuracy, leave-one-patient-out", True),
    "ef_r2": ("ridge EF R^2, leave-one-patient-out", True),
    "ef_mae": ("ridge EF mean absolute error (percentage points), leave-one-patient-out", False),
}


@dataclass(frozen=True, kw_only=True)
class EncoderMeasures:
    """The report's numbers for one encoder (NaN where not measurable, e.g. no labels)."""

    mean_cosine: float
    rankme: float
    view_cosine_same: float = float("nan")
    view_cosine_different: float = float("nan")
    view_gap: float = float("nan")
    slice_similarity: float = float("nan")
    slice_contrast: float = float("nan")
    phase_agreement: float = float("nan")
    knn_view_accuracy: float = float("nan")
    linear_view_accuracy: float = float("nan")
    ef_r2: float = float("nan")
    ef_mae: float = float("nan")

    def to_dict(self) -> dict[str, float | None]:
        return {k: (float(v) if np.isfinite(v) else None) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderMeasures:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: float("nan") if v is None else float(v) for k, v in data.items() if k in known})


@dataclass(frozen=True, kw_only=True)
class RepresentationReport:
    """Measures of the pretrained encoder and (optionally) of a random encoder of its config.

    n_clips: clips measured; width: embedding width D; step: the pretraining step (None outside
    pretraining); slice_map: the pretrained encoder's mean `[t, t]` slice self-similarity.
    """

    n_clips: int
    width: int
    pretrained: EncoderMeasures
    random: EncoderMeasures | None = None
    step: int | None = None
    n_labelled: dict[str, int] = field(default_factory=dict)
    slice_map: list[list[float]] = field(default_factory=list)

    @property
    def max_rank(self) -> int:
        """The largest RankMe these clips allow: `min(n_clips, width)`."""
        return min(self.n_clips, self.width)

    def metrics(self) -> dict[str, float]:
        """Finite measures as MLflow metrics: `repr/<measure>` and `repr/random/<measure>`."""
        out = {f"{METRIC_PREFIX}/{k}": v for k, v in dataclasses.asdict(self.pretrained).items() if np.isfinite(v)}
        if self.random is not None:
            out.update({f"{METRIC_PREFIX}/random/{k}": v for k, v in dataclasses.asdict(self.random).items()
                        if np.isfinite(v)})
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per measure: `measure`, `pretrained`, `random`, `better` ("higher"/"lower"/"")
        and `description` (None for a value that could not be measured)."""
        mine = self.pretrained.to_dict()
        theirs = self.random.to_dict() if self.random is not None else {}
        rows = []
        for name, (description, higher) in MEASURES.items():
            rows.append({
                "measure": name,
                "pretrained": mine[name],
                "random": theirs.get(name),
                "better": "" if higher is None else ("higher" if higher else "lower"),
                "description": description,
            })
        return rows

    def lines(self, indent: str = "  ") -> list[str]:
        """A plain-text table of the measured rows (what the demo summary and CLI print)."""
        out = [f"{indent}{'measure':<24}{'pretrained':>12}{'random init':>13}  better"]
        for row in self.rows():
            if row["pretrained"] is None and row["random"] is None:
                continue
            out.append(f"{indent}{row['measure']:<24}{_fmt(row['pretrained']):>12}{_fmt(row['random']):>13}  {row['better']}")
        return out

    def markdown(self) -> str:
        """The measured rows as a Markdown table (model cards)."""
        out = ["| measure | pretrained | random init | better |", "|---|---|---|---|"]
        out += [f"| {r['measure']} | {_fmt(r['pretrained'])} | {_fmt(r['random'])} | {r['better']} |"
                for r in self.rows() if r["pretrained"] is not None or r["random"] is not None]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "n_clips": self.n_clips,
            "width": self.width,
            "step": self.step,
            "n_labelled": dict(self.n_labelled),
            "pretrained": self.pretrained.to_dict(),
            "random": self.random.to_dict() if self.random is not None else None,
            "slice_map": self.slice_map,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RepresentationReport:
        return cls(
            n_clips=int(data["n_clips"]),
            width=int(data["width"]),
            step=data.get("step"),
            n_labelled={k: int(v) for k, v in (data.get("n_labelled") or {}).items()},
            pretrained=EncoderMeasures.from_dict(data["pretrained"]),
            random=EncoderMeasures.from_dict(data["random"]) if data.get("random") else None,
            slice_map=[list(map(float, row)) for row in data.get("slice_map") or []],
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _known(values: Sequence[Any] | None, numeric: bool) -> np.ndarray | None:
    """Boolean mask of clips whose label is known (None when there are no labels at all)."""
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64 if numeric else object)
    if numeric:
        return np.isfinite(array)
    return np.array([v is not None and str(v) not in ("", "nan", "None") for v in array], dtype=bool)


def probe_measures(embeddings: np.ndarray, labels: ProbeLabels) -> tuple[dict[str, float], dict[str, int]]:
    """Frozen probes of `embeddings` `[N, D]` on the labels that are known; too few labelled
    clips or classes leave a probe out (NaN) rather than fail the report."""
    out: dict[str, float] = {}
    counts: dict[str, int] = {}
    groups = None if labels.groups is None else np.asarray(labels.groups, dtype=object).astype(str)
    for name, values, numeric in (("view", labels.view, False), ("ef", labels.ef, True)):
        known = _known(values, numeric)
        if known is None or known.sum() < 2:
            continue
        counts[name] = int(known.sum())
        x = embeddings[known]
        y = np.asarray(values, dtype=np.float64 if numeric else object)[known]
        g = None if groups is None else groups[known]
        try:
            if numeric:
                score = probes.ridge_regression(x, y, groups=g)
                out.update(ef_r2=score.r2, ef_mae=score.mae)
            else:
                y = y.astype(str)
                out["knn_view_accuracy"] = probes.knn_classification(x, y, groups=g).accuracy
                out["linear_view_accuracy"] = probes.ridge_classification(x, y, groups=g).accuracy
        except probes.ProbeInputError:
            continue
    return out, counts


@dataclass(frozen=True)
class Measurement:
    """One encoder measured: its measures, labelled-clip counts per probe, mean slice
    self-similarity map `[t, t]` and the clip embeddings it was measured on."""

    measures: EncoderMeasures
    counts: dict[str, int]
    slice_map: np.ndarray
    embeddings: ClipEmbeddings


def encoder_measures(
    embeddings: ClipEmbeddings,
    *,
    pixels: np.ndarray | None = None,
    views: tuple[ClipEmbeddings, ClipEmbeddings] | None = None,
    labels: ProbeLabels | None = None,
) -> Measurement:
    """Every measure of one encoder's embeddings.

    pixels: `[N, t, P]` (`pixel_slices`) for the phase agreement; views: the embeddings of two
    augmentations of the same clips, for the view gap.
    """
    values: dict[str, float] = {
        "mean_cosine": measures.mean_pairwise_cosine(embeddings.clips),
        "rankme": measures.rankme(embeddings.clips),
    }
    structure = measures.slice_structure(embeddings.slices, pixels)
    values.update(slice_similarity=structure.off_diagonal, slice_contrast=structure.contrast,
                  phase_agreement=structure.phase_agreement)
    if views is not None:
        gap = measures.view_gap(views[0].clips, views[1].clips)
        values.update(view_cosine_same=gap.same_clip, view_cosine_different=gap.different_clips, view_gap=gap.gap)
    counts: dict[str, int] = {}
    if labels is not None:
        probed, counts = probe_measures(embeddings.clips, labels)
        values.update(probed)
    return Measurement(EncoderMeasures(**values), counts, structure.mean_map, embeddings)


def measure_model(
    model: nn.Module,
    video: torch.Tensor,
    *,
    labels: ProbeLabels | None = None,
    augmented: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 16,
) -> Measurement:
    """`encoder_measures` of `model` (a `MaskedAutoencoderViT`) on `video` `[N, C, T, H, W]`
    (normalised, on the model's device) and, when given, its two augmented copies."""
    embeddings = embed_clips(model, video, batch_size=batch_size)
    views = None
    if augmented is not None:
        views = (embed_clips(model, augmented[0], batch_size=batch_size),
                 embed_clips(model, augmented[1], batch_size=batch_size))
    return encoder_measures(embeddings, pixels=pixel_slices(video, model.config.t_patch_size), views=views,
                            labels=labels)


def compare_encoders(
    model: nn.Module,
    video: torch.Tensor,
    *,
    labels: ProbeLabels | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    random: nn.Module | EncoderMeasures | None = None,
    step: int | None = None,
    batch_size: int = 16,
) -> tuple[RepresentationReport, Measurement, Measurement | None]:
    """The report of `model` on `video` `[N >= 2, C, T, H, W]`, with both measurements.

    augment: maps one normalised clip `[C, T, H, W]` to an augmented one (None: no view gap);
    it is called twice per clip, and must be seeded by the caller for reports to be comparable.
    random: the baseline, as a model (measured here, on the same augmented copies) or as measures
    already taken (pretraining measures its initial weights once).
    """
    if video.shape[0] < 2:
        raise measures.EmbeddingShapeError(f"a report needs at least 2 clips, got {video.shape[0]}")
    augmented = augmented_pair(video, augment) if augment is not None else None
    mine = measure_model(model, video, labels=labels, augmented=augmented, batch_size=batch_size)
    theirs = None
    baseline = random
    if isinstance(random, nn.Module):
        theirs = measure_model(random, video, labels=labels, augmented=augmented, batch_size=batch_size)
        baseline = theirs.measures
    report = RepresentationReport(
        n_clips=int(video.shape[0]),
        width=int(model.config.embed_dim),
        pretrained=mine.measures,
        random=baseline,
        step=step,
        n_labelled=mine.counts,
        slice_map=np.round(mine.slice_map, 4).tolist(),
    )
    return report, mine, theirs
