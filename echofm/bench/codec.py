"""`echofm bench codec`: how each shard codec trades storage against decode speed and fidelity.

The clips are what ingestion writes: synthetic echo cines (`echofm.synth.plan`, the
generator behind `echofm synth`, at their native 480x640 to 768x1024 sizes, grey and colour),
sector-masked with their fan, cut to 32 frames by `plan_windows` and brought to 224x224 by
`resize_pad`. For each codec in `echofm.data.codec.CODECS` it prints, for grey and colour clips
apart, bytes per clip and encode and decode clips/s on one core (OpenCV limited to one thread,
CPU time, medians over repeats), fidelity (exact, or the worst PSNR over the clips) and the
storage for 290K clips. It then repeats the measurement on uncorrelated speckle, the worst case for lossless codecs, so
the figures bracket real archives (whose speckle lies between the two).

    echofm bench codec --clips 12 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ARCHIVE_CLIPS = 290_000


@dataclass(frozen=True)
class KindFigures:
    """One codec on the clips of one kind (grey or colour): mean encoded bytes per clip, and
    encode / decode clips per second on one core (median over repeats)."""

    n_clips: int
    bytes_per_clip: float
    encode_per_s: float
    decode_per_s: float


@dataclass(frozen=True)
class CodecFigures:
    """Measured figures of one codec: per kind ("grey", "colour"; absent when no clip of that
    kind) and the worst PSNR over all clips (inf when exact)."""

    name: str
    lossless: bool
    kinds: dict[str, KindFigures]
    min_psnr_db: float

    def storage_gb(self, n_clips: int = ARCHIVE_CLIPS, kind: str = "grey") -> float:
        """Storage in GB (1e9 bytes) for `n_clips` clips of `kind`."""
        return self.kinds[kind].bytes_per_clip * n_clips / 1e9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=12, help="synthetic clips to measure on (default 12)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the clips per codec (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224, help="output side in pixels")


def benchmark_clips(n_clips: int, *, seed: int = 0, size: int = 224) -> list[np.ndarray]:
    """Ingestion-like clips: uint8 `[32, size, size, C]`, C = 1 or 3, zero outside the fan."""
    from echofm.synth.plan import SynthConfig, plan_clip, plan_patients, render_plan
    from echofm.preprocess.resample import plan_windows, resize_pad

    config = SynthConfig(n_clips=n_clips, seed=seed)
    clips = []
    for index, (slot, study) in enumerate(plan_patients(config, n_clips)):
        plan = plan_clip(config, index, slot, study)
        rendered = render_plan(config, plan)
        frames = rendered.frames if rendered.frames.ndim == 4 else rendered.frames[..., None]
        (window, *_) = plan_windows(plan.n_frames, float(plan.fps), heart_rate_bpm=plan.heart.heart_rate_bpm)
        # Ingestion zeroes everything outside the sector (text, ECG) before resizing.
        masked = frames[window] * (rendered.sector > 0)[None, :, :, None].astype(np.uint8)
        clips.append(resize_pad(masked, size))
    return clips


def speckle_clips(n_clips: int, *, seed: int = 0, size: int = 224) -> list[np.ndarray]:
    """Worst-case grey clips for lossless codecs: uncorrelated Rayleigh speckle (every pixel
    independent, as real speckle becomes once an 800-pixel image is shrunk to 224) in a 90-degree
    fan, zero outside: uint8 `[32, size, size, 1]`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    radius = np.hypot(xx - size / 2, yy + size * 0.05)
    angle = np.arctan2(xx - size / 2, yy + size * 0.05)
    fan = (np.abs(angle) < np.pi / 4) & (radius < size * 0.95) & (radius > size * 0.08)
    clips = []
    for _ in range(n_clips):
        tissue = 50.0 + 40.0 * np.sin(radius / 12.0)[None] * np.cos(np.arange(32) / 5.0)[:, None, None]
        frames = np.clip(rng.rayleigh(0.8, size=(32, size, size)) * tissue, 0, 255).astype(np.uint8)
        clips.append((frames * fan[None])[..., None])
    return clips


def _psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def _rate(work: Callable[[], object], n_items: int, repeats: int) -> float:
    """Items per CPU-second of this process. The work runs on one thread, so this is the rate of
    one core, and it holds on a machine shared with other jobs, where wall time would not."""
    seconds = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        seconds.append(time.process_time() - start)
    return n_items / max(statistics.median(seconds), 1e-9)


def measure_codecs(clips: list[np.ndarray], *, repeats: int = 5) -> list[CodecFigures]:
    """Figures for every registered codec over `clips` (single-threaded OpenCV)."""
    import cv2

    from echofm.data.codec import CODECS

    cv2.setNumThreads(1)
    groups = {
        kind: [c for c in clips if c.shape[-1] == channels] for kind, channels in (("grey", 1), ("colour", 3))
    }
    figures = []
    for name, codec in CODECS.items():
        kinds = {}
        for kind, group in groups.items():
            if not group:
                continue
            encoded = [codec.encode(clip) for clip in group]
            kinds[kind] = KindFigures(
                n_clips=len(group),
                bytes_per_clip=statistics.fmean(len(d) for d in encoded),
                encode_per_s=_rate(lambda: [codec.encode(c) for c in group], len(group), repeats),
                decode_per_s=_rate(lambda: [codec.decode(d) for d in encoded], len(group), repeats),
            )
        psnr = min(_psnr(clip, codec.decode(codec.encode(clip))) for clip in clips)
        figures.append(CodecFigures(name=name, lossless=codec.lossless, kinds=kinds, min_psnr_db=psnr))
    return figures


def format_table(figures: list[CodecFigures]) -> str:
    """A Markdown table: per kind bytes/clip (and the ratio to raw npy), encode and decode clips/s
    on one core; fidelity; storage for 290K clips of the first kind measured."""
    raw = next(f for f in figures if f.name == "npy")
    kinds = list(raw.kinds)
    header = ["codec", "lossless"]
    align = ["---", "---"]
    for kind in kinds:
        header += [f"{kind} bytes/clip", "vs npy", f"{kind} encode clips/s", f"{kind} decode clips/s"]
        align += ["---:"] * 4
    header += ["fidelity (min PSNR)", f"290K {kinds[0]} clips"]
    align += ["---", "---:"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for f in figures:
        cells = [f.name, "yes" if f.lossless else "no"]
        for kind in kinds:
            k = f.kinds[kind]
            cells += [
                f"{k.bytes_per_clip:,.0f}",
                f"{k.bytes_per_clip / raw.kinds[kind].bytes_per_clip:.2f}",
                f"{k.encode_per_s:,.0f}",
                f"{k.decode_per_s:,.0f}",
            ]
        cells += ["exact" if math.isinf(f.min_psnr_db) else f"{f.min_psnr_db:.1f} dB", f"{f.storage_gb(kind=kinds[0]):,.0f} GB"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.clips < 1 or args.repeats < 1:
        raise SystemExit("--clips and --repeats must be >= 1")
    start = time.perf_counter()
    clips = benchmark_clips(args.clips, seed=args.seed, size=args.size)
    n_grey = sum(1 for c in clips if c.shape[-1] == 1)
    shape = "x".join(str(s) for s in clips[0].shape[:3])
    print(f"synthetic echo (echofm synth generator, masked, plan_windows + resize_pad): {len(clips)} clips "
          f"({n_grey} grey, {len(clips) - n_grey} colour) of {shape}, rendered in {time.perf_counter() - start:.1f} s; "
          f"{args.repeats} repeats, 1 thread, rates per CPU-second")
    print(format_table(measure_codecs(clips, repeats=args.repeats)))
    print()
    print(f"worst case for lossless codecs: {args.clips} grey clips of uncorrelated speckle in a fan")
    print(format_table(measure_codecs(speckle_clips(args.clips, seed=args.seed, size=args.size), repeats=args.repeats)))
    return 0
