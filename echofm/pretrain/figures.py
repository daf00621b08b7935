"""What pretraining shows about itself at each evaluation: pure functions over tensors.

A reconstruction figure (`figures/reconstruction-step-N.png`: original | masked | reconstructed)
and the collapse warning on the representation report (`echofm.representation`).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from torch import nn

from echofm.data.loader import ClipNormalization
from echofm.representation.gate import collapse_failures
from echofm.representation.report import RepresentationReport

log = logging.getLogger(__name__)

def collapse_warning(report: RepresentationReport) -> bool:
    """Log a warning when the report's collapse measures fail the promotion gate's thresholds
    (`echofm.representation.gate`); returns whether it warned."""
    failures = collapse_failures(report)
    if failures:
        random = report.random
        log.warning("step %s: the encoder may be collapsing to one representation: %s (random init: mean "
                    "cosine %.3f, RankMe %.1f)", report.step, "; ".join(failures),
                    random.mean_cosine if random else float("nan"), random.rankme if random else float("nan"))
        return True
    return False


def reconstruction_figure(
    model: nn.Module,
    video: torch.Tensor,
    pred: torch.Tensor,
    mask: torch.Tensor,
    normalization: ClipNormalization,
    *,
    max_clips: int = 2,
    max_frames: int = 8,
) -> bytes:
    """PNG bytes of a grid: per clip three rows (original | masked | reconstructed), frames across.

    video: normalised `[B, 3, T, H, W]`; pred: `[B, L, patch_dim]`; mask: `[B, L]` (1 = masked).
    The reconstruction shows the model's prediction in masked patches and the input elsewhere,
    as the MAE papers draw it. With `norm_pix_loss` the prediction is mapped back through each
    target patch's own mean and variance.
    """
    video = video[:max_clips].float().cpu()
    pred = pred[:max_clips].float().cpu()
    mask = mask[:max_clips].float().cpu()
    target = model.patchify(video)
    if getattr(model.config, "norm_pix_loss", False):
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    keep = (1.0 - mask).unsqueeze(-1)
    masked = model.unpatchify(target * keep)
    pasted = model.unpatchify(target * keep + pred * (1.0 - keep))
    rows = []
    frames = np.linspace(0, video.shape[2] - 1, min(max_frames, video.shape[2])).round().astype(int)
    for clip_index in range(video.shape[0]):
        for version, blank in ((video, None), (masked, keep), (pasted, None)):
            shown = normalization.invert(version[clip_index]).clamp(0, 1)
            image = (shown[0, frames] * 255).round().to(torch.uint8).numpy()  # [F, H, W], channel 0
            if blank is not None:
                # Masked-out areas drawn mid-grey, so they are not mistaken for black background.
                hidden = model.unpatchify(1.0 - keep.expand_as(target))[clip_index, 0, frames].numpy() > 0.5
                image = np.where(hidden, 128, image).astype(np.uint8)
            rows.append(_tile_row(image))
    grid = _stack_rows(rows)
    scale = max(1, 128 // video.shape[-1])
    if scale > 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", grid)
    if not ok:
        raise RuntimeError("OpenCV could not encode the reconstruction figure")
    return png.tobytes()


def _tile_row(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """uint8 `[F, H, W]` -> one image `[H, F*W + (F-1)*gap]` with white separators."""
    n, h, w = frames.shape
    row = np.full((h, n * w + (n - 1) * gap), 255, dtype=np.uint8)
    for i in range(n):
        row[:, i * (w + gap) : i * (w + gap) + w] = frames[i]
    return row


def _stack_rows(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    h, w = rows[0].shape
    grid = np.full((len(rows) * h + (len(rows) - 1) * gap, w), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        grid[i * (h + gap) : i * (h + gap) + h] = row
    return grid
