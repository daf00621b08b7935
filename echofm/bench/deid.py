"""`echofm bench deid`: how much burned-in text the pixel de-identification removes, and how
much tissue it keeps.

Each clip is written through its container variant (every DICOM encoding, MP4, AVI), read back
by the readers and processed as ingestion does: sector mask (`estimate_sector`), static
overlays inside it (`find_static_overlays`), both mapped to the output size. Ground truth comes
from the clip's text-free twin (`echofm.synth.twins`): text pixels are those the text
changes by more than 8 grey levels in some frame (banner text outside the fan included),
tissue pixels the fan's non-black pixels that are not text. Figures, per set and per variant:

- text removed: share of text pixels zeroed (outside the mask) or inpainted (overlay);
- tissue kept: share of tissue pixels inside the mask and not taken for an overlay;
- both at source resolution and at the output size (an output pixel is text when any source
  text pixel falls in its footprint);
- ECG kept: pixels of an ECG trace drawn `--ecg-gap` pixels below the fan left in the output.

Sets: the synthetic archive's own clips (measurements inside the fan on every third clip),
crafted clips with heavy annotations (three labels, one across the fan's edge, two caliper
pairs), the same with anti-aliased glyphs.

    echofm bench deid --clips 12

`--edge-sweep` adds what removing more would cost: for the ring of pixels 4-connected to the
overlays found, the text pixels a rule on that ring would gain and the tissue pixels it would
take, for rules "brighter than the local tissue mean by at least R levels and moving with at
most D x the local tissue's change" (the two signs of a blended glyph edge), and the same for
spatial rules on the 8-connected ring: "at least K of the 8 neighbours found" (K = 1 is the whole
ring; larger K keeps to the concave corners and gaps between stroke pixels).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class SetFigures:
    """Pixel counts summed over the clips of one set, and per-clip shares for the minimum."""

    text: int = 0
    text_removed: int = 0
    tissue: int = 0
    tissue_kept: int = 0
    text_out: int = 0
    text_out_removed: int = 0
    tissue_out: int = 0
    tissue_out_kept: int = 0
    ecg_kept: int = 0
    clip_removed: list[float] = field(default_factory=list)
    clip_kept: list[float] = field(default_factory=list)
    overlay_ms: list[float] = field(default_factory=list)
    worst: dict[str, float] = field(default_factory=dict)
    # --edge-sweep: rule -> (text pixels gained, tissue pixels taken), and per clip the tissue taken
    edge: dict[tuple[float, float], list[int]] = field(default_factory=dict)
    edge_clip_taken: list[dict[tuple[float, float], float]] = field(default_factory=list)
    # the same for the neighbour-count rules: K -> (text pixels gained, tissue pixels taken)
    neighbour: dict[int, list[int]] = field(default_factory=dict)
    neighbour_clip_taken: list[dict[int, float]] = field(default_factory=list)

    def add(self, other: SetFigures) -> None:
        for name in ("text", "text_removed", "tissue", "tissue_kept", "text_out", "text_out_removed", "tissue_out",
                     "tissue_out_kept", "ecg_kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.clip_removed += other.clip_removed
        self.clip_kept += other.clip_kept
        self.overlay_ms += other.overlay_ms
        for mine, theirs in ((self.edge, other.edge), (self.neighbour, other.neighbour)):
            for rule, (gained, taken) in theirs.items():
                total = mine.setdefault(rule, [0, 0])
                total[0] += gained
                total[1] += taken
        self.edge_clip_taken += other.edge_clip_taken
        self.neighbour_clip_taken += other.neighbour_clip_taken


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


EDGE_RAISES = (0.0, 4.0, 8.0, 15.0)  # grey levels over the local tissue mean
EDGE_DAMPINGS = (0.6, 1.0, float("inf"))  # share of the local tissue's change; inf: no condition
_EDGE_WINDOWS = (7, 15, 31)  # the first window with at least 5 tissue pixels gives the local figures


def edge_sweep(frames: np.ndarray, sector: np.ndarray, overlay: np.ndarray, text: np.ndarray,
               tissue: np.ndarray) -> dict[tuple[float, float], tuple[int, int]]:
    """(raise, damping) -> (text pixels gained, tissue pixels taken) if the 4-connected ring around
    `overlay` inside `sector` were removed where the rule holds (bool masks `[H, W]`)."""
    from echofm.preprocess.overlays import OverlayConfig, _dilate, _local_count, _local_mean, _temporal_stats

    stats = _temporal_stats(frames, OverlayConfig())
    ring = _dilate(overlay, 1) & ~overlay & sector
    reference = (sector & ~_dilate(overlay, 2)).astype(np.float32)
    raise_mean = np.zeros(sector.shape, np.float32)
    local_change = np.zeros(sector.shape, np.float32)
    todo = ring.copy()
    for window in _EDGE_WINDOWS:
        count = _local_count(reference, window)
        take = todo & ((count * window * window >= 5) | (window == _EDGE_WINDOWS[-1]))
        raise_mean[take] = (stats.mean - _local_mean(stats.mean, reference, window, count))[take]
        local_change[take] = _local_mean(stats.activity, reference, window, count)[take]
        todo &= ~take
    figures = {}
    for raise_ in EDGE_RAISES:
        for damping in EDGE_DAMPINGS:
            rule = ring & (raise_mean >= raise_) & (stats.activity <= damping * np.maximum(local_change, 1.0))
            figures[(raise_, damping)] = (int((rule & text).sum()), int((rule & tissue & ~text).sum()))
    return figures


NEIGHBOUR_COUNTS = (1, 2, 3, 4, 5, 6)  # found pixels among the 8 neighbours


def neighbour_sweep(sector: np.ndarray, overlay: np.ndarray, text: np.ndarray,
                    tissue: np.ndarray) -> dict[int, tuple[int, int]]:
    """K -> (text pixels gained, tissue pixels taken) if the pixels inside `sector` outside
    `overlay` with at least K found pixels among their 8 neighbours were removed (bool `[H, W]`).

    Spatial evidence only: a blended edge pixel hugs the glyph's strokes, most tightly in the
    concave corners and one-pixel gaps of a letter, where tissue beside a stroke has fewer found
    neighbours."""
    import cv2

    around = np.ones((3, 3), np.float32)
    around[1, 1] = 0.0
    found = cv2.filter2D(overlay.astype(np.uint8), -1, around, borderType=cv2.BORDER_CONSTANT)
    candidates = sector & ~overlay
    figures = {}
    for k in NEIGHBOUR_COUNTS:
        rule = candidates & (found >= k)
        figures[k] = (int((rule & text).sum()), int((rule & tissue & ~text).sum()))
    return figures


def measure_clip(frames: np.ndarray, regions: list, lossy: bool, text: np.ndarray, tissue: np.ndarray,
                 ecg: np.ndarray, size: int, *, sweep: bool = False) -> SetFigures:
    """Figures of one decoded clip (uint8 `[T, H, W, C]`) against its ground-truth masks."""
    from echofm.preprocess.overlays import find_static_overlays
    from echofm.preprocess.resample import mask_at_size
    from echofm.preprocess.sector import estimate_sector

    sector = estimate_sector(frames, regions)
    started = time.perf_counter()
    overlay = find_static_overlays(frames, sector.mask, lossy=lossy)
    seconds = time.perf_counter() - started
    removed = ~sector.mask | overlay
    inside = mask_at_size(sector.mask, size, whole=True)
    removed_out = ~inside | mask_at_size(overlay, size, whole=False)
    text_out = mask_at_size(text, size, whole=False)
    tissue_out = mask_at_size(tissue, size, whole=True) & ~text_out
    ecg_out = mask_at_size(ecg, size, whole=False)
    figures = SetFigures(
        text=int(text.sum()), text_removed=int((text & removed).sum()),
        tissue=int(tissue.sum()), tissue_kept=int((tissue & ~removed).sum()),
        text_out=int(text_out.sum()), text_out_removed=int((text_out & removed_out).sum()),
        tissue_out=int(tissue_out.sum()), tissue_out_kept=int((tissue_out & ~removed_out).sum()),
        ecg_kept=int((ecg_out & ~removed_out).sum()), overlay_ms=[1000.0 * seconds],
    )
    figures.clip_removed.append(_share(figures.text_removed, figures.text))
    figures.clip_kept.append(_share(figures.tissue_kept, figures.tissue))
    if sweep:
        swept = edge_sweep(frames, sector.mask, overlay, text, tissue)
        figures.edge = {rule: list(counts) for rule, counts in swept.items()}
        figures.edge_clip_taken = [{rule: _share(taken, figures.tissue) for rule, (_, taken) in swept.items()}]
        counted = neighbour_sweep(sector.mask, overlay, text, tissue)
        figures.neighbour = {k: list(counts) for k, counts in counted.items()}
        figures.neighbour_clip_taken = [{k: _share(taken, figures.tissue) for k, (_, taken) in counted.items()}]
    return figures


def _ecg_trace(clip) -> np.ndarray:  # noqa: ANN001 - an echofm.synth.twins.TwinClip
    """bool `[H, W]`: the pixels the ECG band draws on at some time (trace and cursor)."""
    x0, y0, x1, y1 = clip.marked.ecg_box
    frames = clip.twin.frames if clip.twin.frames.ndim == 4 else clip.twin.frames[..., None]
    band = np.zeros(clip.marked.sector.shape, bool)
    band[y0 : y1 + 1, x0 : x1 + 1] = True
    return band & (frames.max(axis=3) > 0).any(axis=0) & ~clip.marked.sector.astype(bool)


def measure_set(config, indices: list[int], annotate: Callable | None, ecg_gap: int | None, size: int,
                workdir: Path, *, sweep: bool = False) -> dict[str, SetFigures]:
    """Figures per container variant over clips `indices` of the archive `config` describes."""
    from echofm.synth.twins import plan_for, render_twins, write_twin
    from echofm.io import read_dicom, read_video

    by_variant: dict[str, SetFigures] = {}
    for index in indices:
        plan = plan_for(config, index)
        clip = render_twins(config, plan, annotate=annotate, ecg_gap=ecg_gap)
        path = write_twin(config, clip, workdir / f"clip{index}{plan.variant.extension}")
        decoded = read_dicom(path) if plan.variant.container == "dicom" else read_video(path)
        lossy = plan.variant.container != "dicom" or bool(decoded.meta.get("lossy"))
        figures = measure_clip(decoded.frames, decoded.regions, lossy, clip.text_pixels(), clip.tissue_pixels(),
                               _ecg_trace(clip), size, sweep=sweep)
        by_variant.setdefault(plan.variant.name, SetFigures()).add(figures)
        path.unlink()
    return by_variant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=12, help="clips per set (12 cover every container variant)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224, help="output side in pixels")
    parser.add_argument("--ecg-gap", type=int, default=2, help="pixels between the fan and the ECG band in the crafted sets")
    parser.add_argument("--edge-sweep", action="store_true",
                        help="also report what removing more of the ring around the overlays would gain and cost")


def _row(name: str, f: SetFigures) -> str:
    return (
        f"{name:24s} {f.text:8d} {_share(f.text_removed, f.text):8.2%} {_share(f.text_out_removed, f.text_out):8.2%} "
        f"{_share(f.tissue_kept, f.tissue):8.2%} {min(f.clip_kept):8.2%} {_share(f.tissue_out_kept, f.tissue_out):8.2%} "
        f"{f.ecg_kept:5d} {statistics.median(f.overlay_ms):7.1f}"
    )


def _print_rules(heads: tuple[str, str], totals: dict, per_clip: list[dict], label: Callable[[object], str]) -> None:
    """One table of a sweep: per rule the text pixels gained, the tissue taken and the most any
    one clip would lose; `label` writes a rule's first two columns."""
    print(f"  {heads[0]:>9s} {heads[1]:>10s} {'text +':>7s} {'tissue -':>9s} {'tissue/text':>11s} {'worst clip -':>12s}")
    for rule in sorted(totals):
        gained, taken = totals[rule]
        worst = max(clip[rule] for clip in per_clip)
        ratio = f"{taken / gained:11.1f}" if gained else f"{'-':>11s}"
        print(f"  {label(rule)} {gained:7d} {taken:9d} {ratio} {worst:12.2%}")


def _print_sweep(name: str, total: SetFigures) -> None:
    text_left = total.text - total.text_removed
    print(f"  edge sweep ({name}): {text_left} text pixels left; rules on the ring around the overlays found")
    _print_rules(("raise >=", "damping <="), total.edge, total.edge_clip_taken, lambda r: f"{r[0]:9.0f} {r[1]:10.1f}")
    print("  spatial: the 8-connected ring, pixels with at least K found neighbours")
    _print_rules(("K >=", ""), total.neighbour, total.neighbour_clip_taken, lambda k: f"{k:9d} {'':>10s}")


def run(args: argparse.Namespace) -> int:
    from echofm.synth.plan import SIZES, SynthConfig
    from echofm.synth.twins import heavy_annotations

    config = SynthConfig(n_clips=args.clips, seed=args.seed, sizes=SIZES, max_frames=48)
    indices = list(range(args.clips))
    sets = {
        "synthetic archive": (None, None),
        "heavy, bitmap glyphs": (heavy_annotations(antialias=False), args.ecg_gap),
        "heavy, anti-aliased": (heavy_annotations(antialias=True), args.ecg_gap),
    }
    header = (f"{'set / variant':24s} {'text px':>8s} {'removed':>8s} {'out rem':>8s} {'kept':>8s} {'min kept':>8s} "
              f"{'out kept':>8s} {'ECG':>5s} {'ms':>7s}")
    with tempfile.TemporaryDirectory(prefix="echofm-bench-deid-") as tmp:
        for name, (annotate, gap) in sets.items():
            by_variant = measure_set(config, indices, annotate, gap, args.size, Path(tmp), sweep=args.edge_sweep)
            total = SetFigures()
            for figures in by_variant.values():
                total.add(figures)
            print(f"\n{name}: {args.clips} clips, ECG gap {gap if gap is not None else 'layout'}")
            print(header)
            for variant, figures in sorted(by_variant.items()):
                print(_row(f"  {variant}", figures))
            print(_row("  all", total))
            print(f"  min per clip: text removed {min(total.clip_removed):.2%}, tissue kept {min(total.clip_kept):.2%}")
            if args.edge_sweep:
                _print_sweep(name, total)
    return 0
