"""The initialisations a fine-tuned encoder is compared with: the seed's baselines.

    --compare random,imagenet:vit_base.safetensors,kinetics:mae_pretrain_vit_large_k400.pth,\
echofm-published:echofm_vitl.pth

Each entry is `random` (the chosen encoder's architecture, freshly initialised: the default, what
pretraining must beat) or `NAME:SOURCE`, where SOURCE is anything `echofm.model.load_pretrained`
reads (a file, an export folder, a run directory, a `models:/` URI) and NAME labels its arm in
the report (`imagenet`, `kinetics` and `echofm-published` name the seed's baselines; any other
slug works too); `none` compares with nothing. Every arm trains the same head with the same
strategy, seed, split and epochs; an imported encoder is built for the chosen encoder's input
(`echofm.downstream.encoder.baseline_encoder`), so every arm sees the same clips.

Torch-free: the command line and the options model parse entries without loading a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from echofm.errors import DownstreamError

RANDOM = "random"
NONE = "none"
DEFAULT_BASELINES: tuple[str, ...] = (RANDOM,)
# The seed's named baselines (any other NAME is accepted too).
KNOWN_BASELINES: dict[str, str] = {
    RANDOM: "random initialisation of the chosen encoder's architecture",
    "imagenet": "image pretraining (a timm ViT, inflated to video)",
    "kinetics": "video pretraining (MAE-ST, VideoMAE, VideoMAEv2)",
    "echofm-published": "the published EchoFM weights",
}
PRETRAINED_ARM = "pretrained"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Names that would read as the start of a URI (`models:/...`) or that label other arms.
_RESERVED = frozenset({"models", "runs", "file", "s3", PRETRAINED_ARM, RANDOM, NONE})


class BaselineError(DownstreamError, ValueError):
    """A `--compare` entry that names no usable initialisation."""


@dataclass(frozen=True)
class Baseline:
    """One comparison arm: `name` and, for an imported encoder, its `source`."""

    name: str
    source: str | None = None

    @property
    def spec(self) -> str:
        return self.name if self.source is None else f"{self.name}:{self.source}"


def parse_baselines(specs: str | Sequence[str]) -> tuple[Baseline, ...]:
    """`"random,imagenet:PATH"` (or entries, each possibly comma-separated) -> baselines, in order.

    Raises:
        BaselineError: an entry without NAME:SOURCE, a bad or reserved name, a repeated name.
    """
    entries = [part.strip() for spec in ([specs] if isinstance(specs, str) else specs)
               for part in spec.split(",")]
    baselines: list[Baseline] = []
    for entry in entries:
        if entry in ("", NONE):
            continue
        name, _, source = entry.partition(":")
        if name == RANDOM and not source:
            baseline = Baseline(RANDOM)
        elif not source:
            raise BaselineError(f"{entry!r}: expected {RANDOM!r}, {NONE!r} or NAME:SOURCE "
                                f"(e.g. imagenet:vit_base_patch16_224.safetensors)")
        elif not _NAME.match(name) or name in _RESERVED:
            raise BaselineError(f"{entry!r}: {name!r} cannot name a baseline (lower-case letters, "
                                f"digits, '-' or '_'; not {', '.join(sorted(_RESERVED))})")
        else:
            baseline = Baseline(name, source)
        if any(b.name == baseline.name for b in baselines):
            raise BaselineError(f"baseline {baseline.name!r} is named twice")
        baselines.append(baseline)
    return tuple(baselines)


def comparison_table(arms: dict[str, dict[str, dict[str, float]]], split: str = "test") -> dict[str, dict[str, float]]:
    """`{arm: metrics per split}` -> `{metric: {arm: value}}` for `split`: every arm side by side
    (an arm without a metric has none in its row)."""
    table: dict[str, dict[str, float]] = {}
    for arm, metrics in arms.items():
        for metric, value in (metrics.get(split) or {}).items():
            table.setdefault(metric, {})[arm] = value
    return table


def summary_arms(summary: dict[str, Any], first: str = PRETRAINED_ARM) -> dict[str, dict[str, Any]]:
    """Every arm's record in a fine-tuning summary, the pretrained-encoder arm `first` (a
    multi-task summary's is `multitask`); a record made before `baselines` existed gives its
    `random_init` arm as `random`."""
    arms = {first: summary.get(first) or {}}
    if "baselines" in summary:
        arms.update(summary["baselines"])
    elif summary.get("random_init"):
        arms[RANDOM] = summary["random_init"]
    return arms
