"""The model card (`README.md`) of an exported model: what it is, how it was made, what it is for.

Plain facts only: sizes from the config, the objective from its loss settings, and what the
exporter knows about data, training and metrics (`ModelCard`). Data are named by digest, never by
path or by any patient-level value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from echofm.model.config import ModelConfig

INTENDED_USE = (
    "A video encoder for echocardiography research: frozen features or fine-tuning for "
    "downstream tasks (ejection fraction, view classification, segmentation) evaluated against "
    "a randomly initialised encoder of the same architecture. Not a medical device; no output "
    "of this model or of a model fine-tuned from it is a clinical measurement."
)
LIMITS = (
    "Trained on the archives named under Data only; performance on other vendors, probes, "
    "frame rates or patient populations is unmeasured until evaluated. Input must follow the "
    "input contract under Input (frame count, size, RGB order, normalisation); clips that differ "
    "are resampled by the loader, which changes what the model sees."
)


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """Facts for the card beyond the config: `data` (e.g. manifest digest, clip count),
    `training` (steps, preset, code version), `metrics` (name -> value), `provenance` (where the
    weights came from, e.g. the load report of an imported checkpoint)."""

    title: str = "EchoFM encoder"
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: str = ""
    intended_use: str = INTENDED_USE
    limits: str = LIMITS


def objective(config: ModelConfig) -> str:
    """One sentence on the pretraining loss the config describes."""
    target = "per-patch normalised pixels" if config.norm_pix_loss else "pixels"
    text = (f"Masked autoencoding: {config.mask_ratio:.0%} of the tubelets hidden "
            f"({config.mask_mode} masking), the decoder reconstructs their {target} (MSE)")
    if config.triplet_weight > 0:
        text += (f"; plus {config.triplet_weight:g} x a temporal triplet loss (cosine margin "
                 f"{config.triplet_margin:g}) on per-time-slice CLS summaries of the visible tokens")
    return text + "."


def _table(rows: dict[str, Any], empty: str) -> list[str]:
    if not rows:
        return [empty, ""]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items()), ""]


def render_card(card: ModelCard, config: ModelConfig, inputs: dict[str, Any],
                encoder_parameters: int) -> str:
    """The README.md text."""
    t, h, w = config.grid
    sizes = {
        "architecture": f"ViT encoder {config.embed_dim} wide, {config.depth} blocks, "
                        f"{config.num_heads} heads ({encoder_parameters / 1e6:.1f}M parameters)",
        "input": f"{config.in_chans} x {config.num_frames} frames x {config.img_size}^2 px",
        "tokens": f"tubelets {config.t_patch_size} x {config.patch_size} x {config.patch_size} "
                  f"-> grid {t} x {h} x {w}, separable space + time position embeddings, CLS",
        "decoder": f"{config.decoder_embed_dim} wide, {config.decoder_depth} blocks "
                   "(pretraining only)",
    }
    norm = inputs.get("normalization") or {}
    contract = (f"float32 `[B, {config.in_chans}, {config.num_frames}, {config.img_size}, "
                f"{config.img_size}]`, {inputs.get('channel_order', 'RGB')} order, intensities "
                f"in [0, 1] standardised with mean {norm.get('mean', 'not recorded')} and std "
                f"{norm.get('std', 'not recorded')}.")
    lines = [
        f"# {card.title}", "",
        "Exported by echofm-pipeline: `config.json` (model config and input contract), "
        "`model.safetensors` (weights, no pickle), this card.", "",
        "## Model", "", *_table(sizes, ""),
        "## Objective", "", objective(config), "",
        "## Input", "", contract, "",
        "## Data", "", *_table(card.data, "Not recorded by the exporter."),
        "## Training", "", *_table(card.training, "Not recorded by the exporter."),
        "## Metrics", "",
        *_table({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in card.metrics.items()},
                "No metrics recorded; measure before use."),
    ]
    if card.provenance:
        lines += ["## Provenance", "", "```", card.provenance, "```", ""]
    lines += [
        "## Intended use", "", card.intended_use, "",
        "## Limits", "", card.limits, "",
        "## Loading", "",
        "```python",
        "from echofm.model import load_pretrained",
        'model = load_pretrained("path/to/this/folder")   # model.forward_features(video) -> [B, D]',
        "```", "",
        "Without echofm-pipeline: `safetensors.torch.load_file(\"model.safetensors\")` gives the "
        "tensors by parameter name; `config.json` gives the sizes.", "",
    ]
    return "\n".join(lines)
