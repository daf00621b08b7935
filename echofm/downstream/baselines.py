"""The initialisations a fine-tuned encoder is compared with: the seed's baselines.

    --compare random,imagenet:vit_base.safetensors,kinetics:mae_pretrain_vit_large_k400.pth,\
echofm-published:echofm_vitl.pth

Each entry is `random` (the chosen encoder's architecture, freshly initialised: the default, what
pretraining must beat) or `NAME:SOURCE`, where SOURCE is anything `echofm.model.load_pretrained`
reads (a file, an export folder, a run directory, a `models:/` URI) and NAME labels its arm in
the report (`imagenet`, `kinetics`, `echofm-published` name the seed's baselines; any other slug
works too). An imported encoder is built for the chosen encoder's input (frames, image size,
channels), so every arm sees the same clips; its own widths, depth and tubelet stay.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from echofm.model import LoadReport, MaskedAutoencoderViT, load_pretrained
from echofm.downstream.encoder import random_like

RANDOM = "random"
DEFAULT_BASELINES: tuple[str, ...] = (RANDOM,)
# The seed's named baselines (any other NAME is accepted too).
KNOWN_BASELINES: dict[str, str] = {
    RANDOM: "random initialisation of the chosen encoder's architecture",
    "imagenet": "image pretraining (a timm ViT, inflated to video)",
    "kinetics": "video pretraining (MAE-ST, VideoMAE, VideoMAEv2)",
    "echofm-published": "the published EchoFM weights",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Names that would be read as the start of a URI (`models:/...`) or that label the chosen arm.
_RESERVED = frozenset({"models", "runs", "file", "s3", "pretrained"})


class BaselineError(ValueError):
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
    """`"random,imagenet:PATH"` (or a list of entries) -> baselines, in order.

    Raises:
        BaselineError: an entry without NAME:SOURCE, a bad or reserved name, a repeated name.
    """
    entries = specs.split(",") if isinstance(specs, str) else list(specs)
    baselines: list[Baseline] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        name, _, source = entry.partition(":")
        if name == RANDOM and not source:
            baseline = Baseline(RANDOM)
        elif not source:
            raise BaselineError(f"{entry!r}: expected 'random' or NAME:SOURCE "
                                f"(e.g. imagenet:vit_base_patch16_224.safetensors)")
        elif not _NAME.match(name) or name in _RESERVED or name == RANDOM:
            raise BaselineError(f"{entry!r}: {name!r} cannot name a baseline (lower-case letters, "
                                f"digits, '-' or '_'; not {sorted(_RESERVED | {RANDOM})})")
        else:
            baseline = Baseline(name, source)
        if any(b.name == baseline.name for b in baselines):
            raise BaselineError(f"baseline {baseline.name!r} is named twice")
        baselines.append(baseline)
    return tuple(baselines)


def baseline_encoder(
    baseline: Baseline, like: MaskedAutoencoderViT, *, seed: int, tracking_uri: str | None = None
) -> tuple[MaskedAutoencoderViT, LoadReport | None]:
    """The encoder of `baseline`, for the input of `like`; with its load report when imported.

    Raises:
        WeightsError (from `load_pretrained`): the source cannot be read or converted; a partial
            load is refused, as anywhere else.
    """
    if baseline.source is None:
        return random_like(like, seed), None
    config = like.config
    model = load_pretrained(baseline.source, num_frames=config.num_frames,
                            img_size=config.img_size, in_chans=config.in_chans,
                            tracking_uri=tracking_uri)
    return model, model.load_report
