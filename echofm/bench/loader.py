"""`echofm bench loader`: training clips/s per loader worker, shards against one MP4 per clip.

Both sides deliver what a training step consumes: a normalised float `[3, 32, 224, 224]` clip.

- shards: the pretraining stream (`echofm.data.loader.ClipStream`, one process = one worker):
  read the tar, decode the stored 32 x 224 x 224 clip (the shard codec), convert and normalise.
- mp4 (the seed's dataset design): every access opens the clip's MP4, decodes it in full with
  OpenCV, converts each frame to grey and resizes it to 224 x 224, then keeps 32 frames. The
  MP4 is the clip's source-like video (`--source-size`, `--source-frames`: an echo cine is
  larger and longer than the 32-frame window cut from it). A second, kinder baseline stores the
  MP4 already at 32 x 224 x 224 and is reported too.

Clips are generated (a speckled fan with a moving wall), so the run needs no data; `--shards`
measures existing shards instead (the MP4 side is then written from their clips). The sides
alternate over `--repeats` rounds and medians are printed with their ratio.

    echofm bench loader --clips 24 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 224
FRAMES = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=24, help="clips per side per round (default 24)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    # Default: the typical echo cine of the ingestion benchmark (800 x 600, ~1.6-2 s at 50-60 fps).
    parser.add_argument("--source-size", default="800x600", help="WxH of the MP4 source videos (default 800x600)")
    parser.add_argument("--source-frames", type=int, default=96, help="frames per MP4 source video (default 96)")
    parser.add_argument("--codec", default=None, help="shard codec (default: echofm.data.codec.DEFAULT_CODEC)")
    parser.add_argument("--shards", type=Path, default=None, help="measure these shards instead of generated clips")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the test files (default: a temp dir)")


def bench_clip(index: int) -> np.ndarray:
    """uint8 `[32, 224, 224, 1]`: speckle inside a fan-shaped sector (zero outside) and a bright
    wall that moves with a cardiac-like rhythm; distinct per `index`."""
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[:SIDE, :SIDE].astype(np.float32)
    radius = np.hypot(yy, xx - SIDE / 2)
    angle = np.degrees(np.arctan2(xx - SIDE / 2, yy))
    sector = (radius < SIDE * 0.95) & (np.abs(angle) < 40)
    frames = np.zeros((FRAMES, SIDE, SIDE, 1), dtype=np.uint8)
    for t in range(FRAMES):
        speckle = rng.rayleigh(30.0, size=(SIDE, SIDE))
        wall = SIDE * (0.45 + 0.08 * np.sin(2 * np.pi * (t / FRAMES + index / 5)))
        speckle += 140.0 * np.exp(-(((radius - wall) / 6.0) ** 2))
        frames[t, ..., 0] = np.where(sector, np.clip(speckle, 0, 255), 0).astype(np.uint8)
    return frames


def write_bench_shards(out_dir: Path, clips: list[np.ndarray], *, codec: str | None = None,
                       max_count: int | None = None) -> Path:
    """`clips` as shards in `out_dir/shards` (prefix "bench"), keys and clip ids `f"{i:032x}"`;
    `codec` and `max_count` default to the shard writer's. Returns the shards directory."""
    from echofm.data.shards import SHARDS_DIRNAME, ShardWriter

    options = {k: v for k, v in (("codec", codec), ("max_count", max_count)) if v is not None}
    with ShardWriter(out_dir, prefix="bench", **options) as writer:
        for i, frames in enumerate(clips):
            writer.write(f"{i:032x}", frames, {"clip_id": f"{i:032x}"})
    return out_dir / SHARDS_DIRNAME


def write_mp4(path: Path, frames: np.ndarray, size: tuple[int, int], n_frames: int) -> None:
    """`frames` uint8 `[T, H, W, 1]` as a grey MP4 of `n_frames` frames at `size` (W, H)."""
    import cv2

    from echofm.synth.containers import write_video

    source_index = (np.arange(n_frames) * frames.shape[0]) // n_frames
    resized = [cv2.resize(frames[i, ..., 0], size, interpolation=cv2.INTER_LINEAR) for i in source_index]
    write_video(path, np.stack(resized), 30.0, "mp4")


def read_mp4_clip(path: Path) -> np.ndarray:
    """The seed's access: decode every frame, grey, resize each to 224 x 224, keep 32 evenly."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        frames.append(cv2.resize(grey, (SIDE, SIDE), interpolation=cv2.INTER_AREA))
    capture.release()
    if not frames:
        raise RuntimeError(f"{path}: no frames decoded")
    stack = np.stack(frames)[..., None]
    return stack[(np.arange(FRAMES) * len(stack)) // FRAMES]


def _time_shards(shards_dir: Path, n_clips: int, normalization) -> float:
    """Clips/s of the pretraining stream in this process (one worker)."""
    from echofm.data.loader import ClipStream, training_clips

    stream = ClipStream(
        training_clips(shards_dir),
        batch_size=1,
        epoch_length=n_clips,
        seed=0,
        img_size=SIDE,
        num_frames=FRAMES,
        normalization=normalization,
        augment=None,
        shuffle_buffer=8,
    )
    started = time.perf_counter()
    count = sum(1 for _ in stream)
    return count / (time.perf_counter() - started)


def _time_mp4(paths: list[Path], normalization) -> float:
    from echofm.preprocess.clips import prepare_clip

    started = time.perf_counter()
    for path in paths:
        prepare_clip(read_mp4_clip(path), img_size=SIDE, num_frames=FRAMES, normalization=normalization)
    return len(paths) / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> int:
    import torch

    from echofm.data.codec import DEFAULT_CODEC
    from echofm.data.loader import ClipNormalization, decode_sample, iter_shard_samples, list_shards

    torch.set_num_threads(1)  # one loader worker = one core
    width, height = (int(v) for v in args.source_size.lower().split("x"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="echofm-bench-loader-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.shards is not None:
        shards_dir = args.shards
        clips = [decode_sample(s) for _, s in zip(range(args.clips), iter_shard_samples(list_shards(shards_dir)))]
    else:
        clips = [bench_clip(i) for i in range(args.clips)]
        shards_dir = write_bench_shards(workdir / "output", clips, codec=args.codec or DEFAULT_CODEC)
    source_mp4, clip_mp4 = [], []
    for i, frames in enumerate(clips):
        source_mp4.append(workdir / f"source-{i:04d}.mp4")
        write_mp4(source_mp4[-1], frames, (width, height), args.source_frames)
        clip_mp4.append(workdir / f"clip-{i:04d}.mp4")
        write_mp4(clip_mp4[-1], frames, (SIDE, SIDE), FRAMES)
    norm = ClipNormalization(mean=(0.2,) * 3, std=(0.2,) * 3)

    rates: dict[str, list[float]] = {"shards": [], "mp4_source": [], "mp4_clip": []}
    for _ in range(args.repeats):
        rates["shards"].append(_time_shards(shards_dir, len(clips), norm))
        rates["mp4_source"].append(_time_mp4(source_mp4, norm))
        rates["mp4_clip"].append(_time_mp4(clip_mp4, norm))
    median = {k: statistics.median(v) for k, v in rates.items()}
    shard_bytes = sum(p.stat().st_size for p in list_shards(shards_dir)) / len(clips)
    mp4_bytes = sum(p.stat().st_size for p in source_mp4) / len(clips)
    print(f"clips per round: {len(clips)}, rounds: {args.repeats}, one worker (1 thread)")
    print(f"shards ({args.codec or DEFAULT_CODEC}):            {median['shards']:8.1f} clips/s  ({shard_bytes / 1e6:.2f} MB/clip)")
    print(
        f"mp4 source {width}x{height}x{args.source_frames} (seed): {median['mp4_source']:8.1f} clips/s  "
        f"({mp4_bytes / 1e6:.2f} MB/clip)"
    )
    print(f"mp4 at clip size 224x224x32:      {median['mp4_clip']:8.1f} clips/s")
    print(f"ratio shards / mp4 source: {median['shards'] / median['mp4_source']:.1f}x (target >= 10x)")
    print(f"ratio shards / mp4 at clip size: {median['shards'] / median['mp4_clip']:.1f}x")
    return 0
