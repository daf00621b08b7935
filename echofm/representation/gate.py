"""The representation gate an encoder must pass before it can become `champion`.

Thresholds as code, in one place (`REPRESENTATION_GATE`):

- collapse: mean pairwise cosine between different clips at most `max_mean_cosine`, and RankMe
  at least `min_rankme_fraction` of the most the measured clips allow (`min(N, D)`). A random
  ViT of the tiny preset measures about 0.92 and 0.2 on the demo's clips; a collapsed encoder
  (the published weights, per a third-party evaluation) has cosine near 1 and rank near 1.
- probes: where the report has labels, each probe in `probes` must be at least as good for the
  pretrained encoder as for the random encoder of the same config (a pretraining that loses to
  its own starting point has not learned anything worth shipping).

A report without a random baseline cannot show the probes were earned and fails when it has
labelled probes; a report without labels is judged on the collapse measures alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from echofm.errors import RepresentationError
from echofm.representation.report import MEASURES, RepresentationReport


class GateConfigError(RepresentationError, ValueError):
    """A gate that names probes the report does not measure with a better direction."""


@dataclass(frozen=True, kw_only=True)
class RepresentationGate:
    max_mean_cosine: float = 0.9
    min_rankme_fraction: float = 0.1
    probes: tuple[str, ...] = ("knn_view_accuracy", "ef_r2")

    def __post_init__(self) -> None:
        unknown = [p for p in self.probes if p not in MEASURES or MEASURES[p][1] is None]
        if unknown:
            raise GateConfigError(f"gate probes {unknown} are not measures with a better direction")


REPRESENTATION_GATE = RepresentationGate()
# Registered-encoder version tags: the last report (`RepresentationReport.to_dict()` as JSON),
# which the promotion gate reads, and the gate's verdict at registration.
REPORT_TAG = "representation"
GATE_TAG = "representation.gate"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "representation gate passed" if self.passed else "representation gate failed: " + "; ".join(self.failures)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failures": list(self.failures), "reason": self.reason}


def collapse_failures(report: RepresentationReport, gate: RepresentationGate = REPRESENTATION_GATE) -> list[str]:
    """The collapse conditions of `gate` that `report`'s pretrained encoder fails, as sentences."""
    mine, failures = report.pretrained, []
    if not mine.mean_cosine <= gate.max_mean_cosine:
        failures.append(f"mean cosine {mine.mean_cosine:.3f} > {gate.max_mean_cosine}")
    min_rank = gate.min_rankme_fraction * report.max_rank
    if not mine.rankme >= min_rank:
        failures.append(f"RankMe {mine.rankme:.1f} < {min_rank:.1f} ({gate.min_rankme_fraction:g} of {report.max_rank})")
    return failures


def check_representation(report: RepresentationReport | None, gate: RepresentationGate = REPRESENTATION_GATE) -> GateResult:
    """Judge `report` by `gate` (module doc); every failed condition is named in `failures`."""
    if report is None:
        return GateResult(False, ("no representation report was recorded",))
    mine = report.pretrained
    failures = collapse_failures(report, gate)
    for probe in gate.probes:
        value = getattr(mine, probe)
        if not math.isfinite(value):
            continue  # no labels for this probe
        baseline = getattr(report.random, probe) if report.random is not None else float("nan")
        if not math.isfinite(baseline):
            failures.append(f"{probe} {value:.3f} has no random-init baseline to beat")
            continue
        higher = MEASURES[probe][1]
        if (value < baseline) if higher else (value > baseline):
            failures.append(f"{probe} {value:.3f} worse than random init {baseline:.3f}")
    return GateResult(not failures, tuple(failures))
