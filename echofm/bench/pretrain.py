"""`echofm bench pretrain`: the real pretraining loop for a fixed number of steps, measured.

What it runs: a synthetic echo archive (`--n-clips`, labels included) ingested without Prefect
(batches in a process pool), then `echofm.pretrain.loop.pretrain` itself, MLflow and the
representation report included, so the figures are those of a real run. `--shards` measures an
existing ingestion output instead (with `--labels` for the report's probes).

What it prints (and writes to `OUT/bench-pretrain.json`): training clips/s (median of the
logged steps after the first tenth, which hold compilation and warm-up), model FLOPs of one
step (`torch.utils.flop_counter`), achieved TFLOP/s and model-FLOPs utilisation against the
device's dense bf16 peak, peak memory (CUDA allocator peak, or the process's peak RSS on CPU),
the data-wait fraction, and the representation report's curve (mean cosine, RankMe, kNN view
accuracy and EF R^2 at every evaluation, with the random encoder's values).

    echofm bench pretrain --preset base --n-clips 512 --steps 400 --batch 32 --device cuda \\
        --precision bf16 [--compile] [--activation-checkpointing]
    echofm bench pretrain --preset tiny --n-clips 12 --steps 4 --batch 2 --img-size 32 --num-frames 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

CURVE = ("mean_cosine", "rankme", "knn_view_accuracy", "ef_r2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench-pretrain"), help="working directory (replaced parts: run/)")
    parser.add_argument("--shards", type=Path, default=None, help="existing ingestion shards (default: synthesise)")
    parser.add_argument("--labels", type=Path, default=None, help="labels for --shards (default: the synthetic labels)")
    parser.add_argument("--n-clips", type=int, default=512, help="synthetic clips to generate (default 512)")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32, help="clips per step")
    parser.add_argument("--base-lr", type=float, default=1.5e-4)
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--report-clips", type=int, default=128)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto")
    parser.add_argument("--num-workers", type=int, default=None, help="loader workers (default: cores / 2, at most 8)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training model")
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute activations in backward")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    parser.add_argument("--workers", type=int, default=None, help="synthesis/ingestion processes (default: all cores)")


def synthetic_ingest(out: Path, n_clips: int, workers: int) -> tuple[Path, Path]:
    """Synthesise `n_clips` (once: reused when `out/ingest` is complete) and ingest them in
    `workers` processes under the bench's own secret (`bench_secret`); returns (shards dir,
    labels csv)."""
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.run import finalize_ingest, plan_ingest, run_batch
    from echofm.synth.archive import SMALL_ARCHIVE_OPTIONS, generate_archive

    shards, labels = out / "ingest" / "shards", out / "synthetic" / "labels.csv"
    if (out / "ingest" / "manifest.parquet").exists() and labels.exists():
        return shards, labels
    # Small source videos: ingestion brings every clip to the 32 x 224^2 shard contract anyway,
    # so the source size changes only how long the preparation takes, not what is trained on.
    archive = generate_archive(out / "synthetic", n_clips, seed=0, workers=workers, **SMALL_ARCHIVE_OPTIONS)
    plan = plan_ingest(archive.archive_dir, out / "ingest", IngestConfig(secret_file=str(bench_secret(out))))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run_batch, *zip(*[(plan.source, plan.output, plan.config, b) for b in plan.batches])))
    finalize_ingest(plan, results)
    return shards, labels


def bench_secret(out: Path) -> Path:
    """The bench's throw-away de-identification secret, beside (never inside) its OUTPUT
    `out/ingest`, made once so a reused ingestion keeps its keyed ids."""
    from echofm.io.deid import write_secret_file

    path = out / "bench.secret"
    return path if path.exists() else write_secret_file(path)


def _peak_memory(device: Any) -> tuple[int, str]:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "CUDA allocator peak"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale, "process peak RSS"


def _history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((int(m.step), float(m.value)) for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))


def run(args: argparse.Namespace) -> int:
    import torch

    from echofm.bench.model import PEAK_BF16_TFLOPS, count_step_flops
    from echofm.model import build_model
    from echofm.device import resolve_device, resolve_precision
    from echofm.downstream.dataset import probe_label_table
    from echofm.io.deid import load_secret, optional_secret
    from echofm.pretrain.config import PretrainConfig
    from echofm.pretrain.loop import pretrain
    from echofm.store import resolve_tracking_uri

    cores = os.cpu_count() or 1
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.shards is None:
        shards, labels = synthetic_ingest(out, args.n_clips, args.workers or cores)
    else:
        shards, labels = args.shards.resolve(), args.labels
    prepared_s = time.perf_counter() - started
    probe_labels = None
    if labels is not None:
        probe_labels = out / "probe-labels.parquet"
        # Labels named by path join under the secret the ingestion used (the bench's own, or the user's).
        secret = load_secret(secret_file=bench_secret(out)) if args.shards is None else optional_secret()
        probe_label_table(shards.parent / "manifest.parquet", labels, secret=secret).to_parquet(probe_labels, index=False)

    run_dir = out / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    config = PretrainConfig(
        preset=args.preset, img_size=args.img_size, num_frames=args.num_frames, steps=args.steps,
        batch_size=args.batch, base_lr=args.base_lr, device=args.device, precision=args.precision,
        num_workers=args.num_workers if args.num_workers is not None else max(1, min(8, cores // 2)),
        eval_every=args.eval_every, ckpt_every=args.steps, report_clips=args.report_clips,
        probe_labels=str(probe_labels) if probe_labels else None, compile=args.compile,
        activation_checkpointing=args.activation_checkpointing, register_model=False,
        experiment_name="echofm-bench-pretrain",
    )
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_started = time.perf_counter()
    result = pretrain(config, shards, run_dir)
    train_s = time.perf_counter() - train_started
    peak_bytes, peak_kind = _peak_memory(device)

    uri = resolve_tracking_uri(run_dir)
    rates = [v for step, v in _history(uri, result.run_id, "clips_per_s") if step > args.steps // 10]
    clips_per_s = statistics.median(rates) if rates else result.clips_per_s
    probe = build_model(config.preset, **config.model_kwargs()).to(device)
    flops = count_step_flops(probe, args.batch, device=device, dtype=precision)
    achieved = flops * clips_per_s / args.batch / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    curve = {key: _history(uri, result.run_id, f"repr/{key}") for key in CURVE}
    random = {key: (_history(uri, result.run_id, f"repr/random/{key}") or [(0, float("nan"))])[0][1] for key in CURVE}
    figures = {
        "device": name, "preset": args.preset, "precision": precision, "compile": args.compile,
        "activation_checkpointing": args.activation_checkpointing, "batch": args.batch, "steps": args.steps,
        "input": f"{probe.config.num_frames}x{probe.config.img_size}^2", "data_prep_s": round(prepared_s, 1),
        "train_s": round(train_s, 1), "clips_per_s": clips_per_s, "step_tflop": flops / 1e12,
        "achieved_tflops": achieved, "mfu": achieved / peak if peak else None, "peak_memory_bytes": peak_bytes,
        "peak_memory_kind": peak_kind, "data_wait_fraction": result.data_wait_fraction,
        "representation_curve": curve, "representation_random": random, "cores": cores,
    }
    (out / "bench-pretrain.json").write_text(json.dumps(figures, indent=2))
    mfu = f", MFU {achieved / peak:.1%} of {peak:.0f} TFLOP/s" if peak else ""
    print(f"pretrain {args.preset} {figures['input']} on {name} ({precision}, batch {args.batch}, "
          f"compile {args.compile}, activation checkpointing {args.activation_checkpointing}):")
    print(f"  {clips_per_s:.1f} clips/s, {flops / 1e12:.2f} TFLOP/step, {achieved:.1f} TFLOP/s{mfu}")
    print(f"  peak memory {peak_bytes / 2**30:.2f} GiB ({peak_kind}), data wait {result.data_wait_fraction:.1%}, "
          f"{train_s:.0f} s training after {prepared_s:.0f} s of data preparation")
    print("  representation report (random init in brackets):")
    for key in CURVE:
        points = "  ".join(f"{step}: {value:.3f}" for step, value in curve[key])
        print(f"    {key:<18} [{random[key]:.3f}]  {points}")
    return 0
