"""The training data path end to end: loader + optimiser step, and how long steps wait for data.

`measure_data_path` runs the pretraining input pipeline (`make_pretrain_loader`, augmentation
on, worker processes) feeding real optimiser steps of a preset on CPU, and reports training
clips/s and the fraction of step time spent waiting for the next batch (target: under 10%).
`echofm bench model --shards DIR` prints it; on its own:

    python -m echofm.bench.train_path --preset tiny --batch 4 --workers 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class DataPathReport:
    """Measured over `steps` steps after `warmup` (worker start-up excluded).

    clips_per_s: batch_size x steps / total time; step_s: median step time (s), waiting included;
    wait_s: median time a step waited for its batch (s); data_wait_fraction: total wait / total
    step time.
    """

    preset: str
    batch_size: int
    num_workers: int
    img_size: int
    num_frames: int
    steps: int
    clips_per_s: float
    step_s: float
    wait_s: float
    data_wait_fraction: float

    def summary(self) -> str:
        return (
            f"data path {self.preset} ({self.num_frames}x{self.img_size}^2, batch {self.batch_size}, "
            f"{self.num_workers} loader worker(s)): {self.clips_per_s:.1f} clips/s end to end, "
            f"step {self.step_s * 1000:.0f} ms (median), waiting for data {self.wait_s * 1000:.1f} ms "
            f"= {100 * self.data_wait_fraction:.1f}% of step time (target < 10%)"
        )


def measure_data_path(
    shards_dir: str | Path,
    preset: str = "tiny",
    *,
    batch_size: int = 4,
    steps: int = 8,
    warmup: int = 2,
    num_workers: int = 1,
    img_size: int | None = None,
    num_frames: int | None = None,
    seed: int = 0,
) -> DataPathReport:
    """Train `preset` for `warmup + steps` AdamW steps on `shards_dir` (CPU, fp32) and time the
    data path; see `DataPathReport`."""
    from echofm.data.augment import AugmentConfig
    from echofm.data.loader import ClipNormalization, make_pretrain_loader
    from echofm.model import build_model
    from echofm.pretrain.optim import build_optimizer

    overrides = {k: v for k, v in (("img_size", img_size), ("num_frames", num_frames)) if v is not None}
    torch.manual_seed(seed)
    model = build_model(preset, **overrides).train()
    config = model.config
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
    loader = make_pretrain_loader(
        shards_dir,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        epoch_length=warmup + steps,
        img_size=config.img_size,
        num_frames=config.num_frames,
        augment=AugmentConfig(),
        normalization=ClipNormalization.for_shards(shards_dir, max_clips=32),
    )
    loader.dataset.set_epoch(0)
    batches = iter(loader)
    waits, totals = [], []
    for index in range(warmup + steps):
        started = time.perf_counter()
        video = next(batches)
        fetched = time.perf_counter()
        out = model(video)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        finished = time.perf_counter()
        if index >= warmup:
            waits.append(fetched - started)
            totals.append(finished - started)
    del batches
    return DataPathReport(
        preset=preset,
        batch_size=batch_size,
        num_workers=num_workers,
        img_size=config.img_size,
        num_frames=config.num_frames,
        steps=steps,
        clips_per_s=batch_size * steps / sum(totals),
        step_s=statistics.median(totals),
        wait_s=statistics.median(waits),
        data_wait_fraction=sum(waits) / sum(totals),
    )


def generated_shards(out_dir: Path, n_clips: int = 16) -> Path:
    """`out_dir/shards` with `n_clips` generated 32 x 224 x 224 clips (see `echofm.bench.loader`)."""
    from echofm.bench.loader import bench_clip, write_bench_shards

    clips = [bench_clip(i) for i in range(n_clips)]
    return write_bench_shards(out_dir, clips, max_count=max(1, n_clips // 4))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m echofm.bench.train_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=None, help="shards to read (default: 16 generated clips)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    shards = args.shards or generated_shards(Path(tempfile.mkdtemp(prefix="echofm-bench-path-")))
    report = measure_data_path(shards, args.preset, batch_size=args.batch, steps=args.steps, num_workers=args.workers)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
