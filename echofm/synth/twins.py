"""Annotated clips and their text-free twins: ground truth for measuring overlay removal.

A twin is the same synthetic clip rendered twice from the same random numbers, once with its
burned-in text and calipers and once without (`render_plan(..., draw_text=False)`), so the
pixels the text changed are known exactly. `HEAVY_ANNOTATIONS` puts more inside the fan than a
scanner usually does (three measurement labels, one across the fan's edge, two caliper pairs
with dotted lines), which makes the measured share of sector pixels kept a pessimistic figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from echofm.synth.containers import UltrasoundHeader, write_dicom, write_video
from echofm.synth.plan import ClipPlan, SynthConfig, assign_path, build_header, plan_clip, plan_patients, render_plan
from echofm.synth.render import Overlay, RenderedClip

# Grey levels: a pixel counts as text where the text changes it by more than this in some frame
# (anti-aliased edges that change a pixel by a level or two carry nothing legible).
TEXT_LEVELS = 8


def heavy_annotations(antialias: bool = False) -> Callable[[Overlay], Overlay]:
    """An overlay edit: three labels inside the fan, one across its edge, two caliper pairs."""

    def annotate(overlay: Overlay) -> Overlay:
        return replace(
            overlay,
            annotations=("LVIDd 4.8cm", "IVSd 1.1cm", "LA 3.9cm"),
            edge_label="PW 0.9cm",
            calipers=True,
            antialias=antialias,
        )

    return annotate


@dataclass(frozen=True)
class TwinClip:
    """A clip with its burned-in text (`marked`) and without (`twin`); frames `[T, H, W, C]`."""

    plan: ClipPlan
    marked: RenderedClip
    twin: RenderedClip

    @staticmethod
    def _frames(clip: RenderedClip) -> np.ndarray:
        return clip.frames if clip.frames.ndim == 4 else clip.frames[..., None]

    def text_pixels(self) -> np.ndarray:
        """bool `[H, W]`: pixels the text changes by more than `TEXT_LEVELS` in some frame."""
        marked, twin = self._frames(self.marked), self._frames(self.twin)
        return (np.abs(marked.astype(np.int16) - twin) > TEXT_LEVELS).any(axis=(0, 3))

    def tissue_pixels(self) -> np.ndarray:
        """bool `[H, W]`: the fan's pixels that show tissue (not black in every frame of the
        twin) and are not text: what an overlay removal should keep."""
        shown = (self._frames(self.twin).max(axis=3) > 0).any(axis=0)
        return self.marked.sector.astype(bool) & shown & ~self.text_pixels()


def plan_for(config: SynthConfig, index: int) -> ClipPlan:
    """The plan of clip `index` of the archive `config` describes (path and patient included)."""
    slot, study = plan_patients(config, index + 1)[index]
    return assign_path(plan_clip(config, index, slot, study), slot)


def render_twins(
    config: SynthConfig, plan: ClipPlan, *, annotate: Callable[[Overlay], Overlay] | None = None, ecg_gap: int | None = None
) -> TwinClip:
    """Render `plan` with and without its text (`annotate` edits its overlay first)."""
    marked, twin = (
        render_plan(config, plan, (), annotate=annotate, draw_text=draw, ecg_gap=ecg_gap) for draw in (True, False)
    )
    return TwinClip(plan=plan, marked=marked, twin=twin)


def write_twin(
    config: SynthConfig,
    clip: TwinClip,
    path: Path,
    *,
    text: bool = True,
    edit_header: Callable[[UltrasoundHeader], UltrasoundHeader] | None = None,
) -> Path:
    """Write the marked clip (or with `text=False` its twin) to `path` in the plan's container
    variant (DICOM with its header, changed by `edit_header` when given, or MP4/AVI); returns
    the path."""
    rendered = clip.marked if text else clip.twin
    path.parent.mkdir(parents=True, exist_ok=True)
    if clip.plan.variant.container == "dicom":
        header = build_header(config, clip.plan, rendered)
        write_dicom(path, rendered.frames, clip.plan.variant, edit_header(header) if edit_header else header)
    else:
        write_video(path, rendered.frames, float(clip.plan.fps), clip.plan.variant.container)
    return path
