"""`echofm bench model`: training-step time, clips/s and peak memory of a model preset.

Measures forward + backward (with `--optimizer`, an AdamW step too) on random input of the
preset's shape, for three variants in one run, their measured steps alternating:

- `fused`: `MaskedAutoencoderViT` as it trains, with timm's fused scaled-dot-product attention;
- `unfused`: the same weights with `fused_attn=False` on every attention layer (hand-written
  softmax(QK^T)V), which isolates what fused attention alone buys;
- `published`: `echofm.bench.reference.PublishedStepReference`, the work of one training step of
  the published EchoFM implementation at the same sizes (`--compare attention` leaves it out).

    echofm bench model --preset large --batch 2 --warmup 1 --steps 3
    echofm bench model --preset large --batch 8 --device cuda --dtype bf16 --flops
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import torch

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peaks (TFLOP/s) used for model FLOPs utilisation when not given.
PEAK_BF16_TFLOPS: dict[str, float] = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class StepTiming:
    """One measurement of forward + backward steps of one variant (see `measure_variants`).

    seconds_per_step: median over the measured steps (s); step_seconds: each measured step (s);
    clips_per_second: batch_size / seconds_per_step; peak_memory_bytes: on CPU the peak resident
    set size during the measured steps above the level after warm-up with gradients freed
    (activations, gradients and transient buffers; sampled every 5 ms), on CUDA
    `torch.cuda.max_memory_allocated` (weights included).
    """

    label: str
    batch_size: int
    device: str
    dtype: str
    seconds_per_step: float
    step_seconds: tuple[float, ...]
    clips_per_second: float
    peak_memory_bytes: int


def set_fused_attention(model: torch.nn.Module, fused: bool) -> int:
    """Switch timm's fused SDPA on or off in every attention layer; returns how many were set."""
    from timm.layers import Attention

    count = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = fused
            count += 1
    return count


def _release_freed_memory() -> None:
    # Give freed heap pages back to the OS so the next RSS baseline is not inflated by the
    # previous run's cache (glibc only; elsewhere the RSS delta is a lower bound).
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _RssPeak:
    """Samples this process's RSS in a background thread and keeps the peak of each labelled
    window (`begin(label)` ... `end()`), in bytes above the RSS at construction."""

    def __init__(self, interval_s: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self._window_peak = self.baseline
        self._label: object = None
        self.peaks: dict[object, int] = {}
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._window_peak = max(self._window_peak, self._rss())
            time.sleep(self._interval)

    def begin(self, label: object) -> None:
        self._label = label
        self._window_peak = self._rss()

    def end(self) -> None:
        peak = max(self._window_peak, self._rss()) - self.baseline
        self.peaks[self._label] = max(self.peaks.get(self._label, 0), peak)

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(model: torch.nn.Module, video: torch.Tensor, dtype: str,
          optimizer: torch.optim.Optimizer | None = None) -> float:
    """One forward + backward (+ `optimizer.step()` when given); seconds."""
    _sync(video.device)
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    with _autocast(video.device, dtype):
        out = model(video)
    out.loss.backward()
    if optimizer is not None:
        optimizer.step()
    _sync(video.device)
    return time.perf_counter() - start


def random_video(model: torch.nn.Module, batch_size: int, device: torch.device) -> torch.Tensor:
    """Standard-normal input `[B, C, T, H, W]` of the model's configured shape (seeded)."""
    cfg = model.config
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
    return torch.randn(shape, generator=generator).to(device)


def _fused_state(model: torch.nn.Module) -> bool:
    return all(getattr(m, "fused_attn", True) for m in model.modules())


@dataclass(frozen=True)
class StepVariant:
    """One thing to time: `model`'s training step, after `prepare()` (e.g. an attention switch).

    Variants may share one model (the attention variants of `MaskedAutoencoderViT`) or not (the
    published-step reference); every variant gets the same input, of `model.config`'s shape.
    """

    model: torch.nn.Module
    prepare: Callable[[], None] = lambda: None
    # Stepped inside the timed region when given (a whole training step, not only its gradients).
    optimizer: torch.optim.Optimizer | None = None


def attention_variants(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, StepVariant]:
    """`fused` (SDPA) and `unfused` (hand-written softmax(QK^T)V) attention on the same weights."""
    return {
        "fused": StepVariant(model, partial(set_fused_attention, model, True), optimizer),
        "unfused": StepVariant(model, partial(set_fused_attention, model, False), optimizer),
    }


def measure_variants(
    variants: Mapping[str, StepVariant],
    batch_size: int,
    *,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    steps: int = 5,
    warmup: int = 2,
) -> dict[str, StepTiming]:
    """Time forward+backward steps of each variant in training mode on the same random input.

    Each variant gets `warmup` unmeasured steps; then measured steps alternate between the
    variants, reversing the order every round (ABBA...), so a change in machine load during the
    run (this machine is shared) hits every variant alike and the ratios stay meaningful.
    Returns one `StepTiming` per label (median of its `steps` steps). The attention setting of
    every model is restored afterwards.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if steps < 1 or warmup < 0 or not variants:
        raise ValueError("steps must be >= 1, warmup >= 0, and at least one variant given")
    device = torch.device(device)
    labels = list(variants)
    models = list({id(v.model): v.model for v in variants.values()}.values())
    for model in models:
        model.to(device).train()
    video = random_video(variants[labels[0]].model, batch_size, device)
    original = {m: m.fused_attn for model in models for m in model.modules()
                if hasattr(m, "fused_attn")}
    times: dict[str, list[float]] = {label: [] for label in labels}
    peaks: dict[str, int] = {label: 0 for label in labels}

    def run_step(label: str) -> float:
        variant = variants[label]
        variant.prepare()
        seconds = _step(variant.model, video, dtype, variant.optimizer)
        variant.model.zero_grad(set_to_none=True)
        return seconds

    try:
        # Warm-up first: first calls map library code and fill kernel caches, which would
        # otherwise count as step time and step memory.
        for label in labels:
            for i in range(warmup):
                log.info("warm-up %d/%d, %s: %.3f s", i + 1, warmup, label, run_step(label))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        else:
            _release_freed_memory()
        with contextlib.ExitStack() as stack:
            rss = None if device.type == "cuda" else stack.enter_context(_RssPeak())
            for i in range(steps):
                for label in labels if i % 2 == 0 else labels[::-1]:
                    if rss is None:
                        torch.cuda.reset_peak_memory_stats(device)
                    else:
                        rss.begin(label)
                    times[label].append(run_step(label))
                    # Large presets take minutes per step on CPU: show progress as it happens.
                    log.info("step %d/%d, %s: %.3f s", i + 1, steps, label, times[label][-1])
                    if rss is None:
                        peaks[label] = max(peaks[label], torch.cuda.max_memory_allocated(device))
                    else:
                        rss.end()
            if rss is not None:
                peaks.update(rss.peaks)
    finally:
        for model in models:
            model.zero_grad(set_to_none=True)
        for module, fused in original.items():
            module.fused_attn = fused
    results = {}
    for label in labels:
        median = statistics.median(times[label])
        results[label] = StepTiming(
            label=label,
            batch_size=batch_size,
            device=str(device),
            dtype=dtype,
            seconds_per_step=median,
            step_seconds=tuple(times[label]),
            clips_per_second=batch_size / median,
            peak_memory_bytes=int(peaks[label]),
        )
    return results


def measure_step(
    model: torch.nn.Module,
    batch_size: int,
    *,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    steps: int = 5,
    warmup: int = 2,
) -> StepTiming:
    """Time `warmup + steps` forward+backward steps of `model` (moved to `device`) as it is
    (its current attention setting); the median of the last `steps` (see `StepTiming`)."""
    label = "fused" if _fused_state(model) else "unfused"
    return measure_variants({label: StepVariant(model)}, batch_size, device=device, dtype=dtype,
                            steps=steps, warmup=warmup)[label]


def count_step_flops(model: torch.nn.Module, batch_size: int, *, device: str | torch.device,
                     dtype: str = "fp32") -> int:
    """FLOPs of one forward + backward step (matmuls, convolutions, attention), by
    `torch.utils.flop_counter` on one real step."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    video = random_video(model, batch_size, device)
    counter = FlopCounterMode(display=False)
    with counter:
        _step(model, video, dtype)
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="model preset name (default: tiny)")
    parser.add_argument("--batch", type=int, default=2, help="clips per step (default: 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                        help="fp32, or bf16 autocast")
    parser.add_argument("--steps", type=int, default=5, help="measured steps (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps (default: 2)")
    parser.add_argument("--img-size", type=int, default=None, help="override the preset's")
    parser.add_argument("--num-frames", type=int, default=None, help="override the preset's")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads on CPU (default: torch's default)")
    parser.add_argument("--compare", choices=("all", "attention"), default="all",
                        help="all: also time the published EchoFM step (echofm.bench.reference); "
                             "attention: fused vs unfused attention only (default: all)")
    parser.add_argument("--optimizer", action="store_true",
                        help="time an AdamW step too (as echofm.pretrain.optim builds it; torch's "
                             "default AdamW for the published step)")
    parser.add_argument("--flops", action="store_true",
                        help="count FLOPs of one step and report TFLOP/s (and MFU on known GPUs)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for MFU (default: known dense bf16 peak of the GPU)")
    parser.add_argument("--shards", default=None,
                        help="also measure the data path: training clips/s end to end (loader + "
                             "step) on these shards and the fraction of step time spent waiting for data")
    parser.add_argument("--loader-workers", type=int, default=1,
                        help="data-loader processes for --shards (default: 1)")


# Row names of the printed table, by variant label.
VARIANT_NAMES: dict[str, str] = {
    "fused": "echofm (SDPA)",
    "unfused": "echofm unfused",
    "published": "published EchoFM",
}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _row(label: str, timing: StepTiming) -> str:
    return (f"{label:<16} {timing.seconds_per_step:>10.3f} {timing.clips_per_second:>9.2f} "
            f"{_mib(timing.peak_memory_bytes):>12}   steps: "
            + ", ".join(f"{s:.3f}" for s in timing.step_seconds))


def run(args: argparse.Namespace) -> int:
    from echofm.model import build_model
    from echofm.pretrain.optim import build_optimizer

    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine; use --device cpu")
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("img_size", args.img_size),
                                   ("num_frames", args.num_frames)) if v is not None}
    torch.manual_seed(0)
    model = build_model(args.preset, **overrides)
    cfg = model.config
    encoder = sum(p.numel() for p in model.encoder_parameters())
    total = sum(p.numel() for p in model.parameters())
    where = (torch.cuda.get_device_name() if args.device == "cuda"
             else f"cpu, {torch.get_num_threads()} threads")
    print(f"model bench: preset={args.preset} batch={args.batch} device={args.device} "
          f"({where}) dtype={args.dtype} warmup={args.warmup} steps={args.steps} "
          f"step={'forward+backward+AdamW' if args.optimizer else 'forward+backward'}")
    print(f"input {cfg.in_chans}x{cfg.num_frames}x{cfg.img_size}x{cfg.img_size}, grid {cfg.grid}, "
          f"{cfg.num_patches} tokens ({cfg.mask_mode} mask {cfg.mask_ratio}); parameters "
          f"{total / 1e6:.1f}M (encoder {encoder / 1e6:.1f}M)")
    model.to(args.device)
    # A tiny lr: the step does all of AdamW's work while the weights barely move.
    optimizer = (build_optimizer(model, lr=1e-7, weight_decay=0.05, betas=(0.9, 0.95))
                 if args.optimizer else None)
    variants = attention_variants(model, optimizer)
    if args.compare == "all":
        from echofm.bench.reference import PublishedStepReference

        # Seeded like the model, so a run is repeatable; its weights are never compared.
        torch.manual_seed(0)
        reference = PublishedStepReference(cfg).to(args.device)
        # The published training script's optimiser: AdamW with torch's default implementation.
        ref_optimizer = (torch.optim.AdamW(reference.parameters(), lr=1e-7, betas=(0.9, 0.95))
                         if args.optimizer else None)
        variants["published"] = StepVariant(reference, optimizer=ref_optimizer)
    timings = measure_variants(variants, args.batch, device=args.device, dtype=args.dtype,
                               steps=args.steps, warmup=args.warmup)
    fused = timings["fused"]
    memory = "peak alloc" if args.device == "cuda" else "peak RSS +"
    print(f"{'step':<16} {'s/step':>10} {'clips/s':>9} {memory:>12}   (median of steps)")
    for label, timing in timings.items():
        print(_row(VARIANT_NAMES[label], timing))
    print(f"speed-up of fused over unfused attention: "
          f"{timings['unfused'].seconds_per_step / fused.seconds_per_step:.2f}x")
    if "published" in timings:
        print(f"speed-up over the published EchoFM step: "
              f"{timings['published'].seconds_per_step / fused.seconds_per_step:.2f}x")
    if args.flops:
        flops = count_step_flops(model, args.batch, device=args.device, dtype=args.dtype)
        achieved = flops / fused.seconds_per_step / 1e12
        line = f"model FLOPs/step {flops / 1e12:.2f} TFLOP, achieved {achieved:.1f} TFLOP/s"
        peak = args.peak_tflops
        if peak is None and args.device == "cuda" and args.dtype == "bf16":
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak:
            line += f", MFU {achieved / peak:.1%} of {peak:.0f} TFLOP/s"
        print(line)
        if "published" in timings:
            reference = variants["published"].model
            ref_flops = count_step_flops(reference, args.batch, device=args.device,
                                         dtype=args.dtype)
            print(f"published EchoFM FLOPs/step {ref_flops / 1e12:.2f} TFLOP "
                  f"({ref_flops / flops:.2f}x the model's)")
    if args.shards:
        from echofm.bench.train_path import measure_data_path

        report = measure_data_path(args.shards, args.preset, batch_size=args.batch, steps=args.steps,
                                   warmup=args.warmup, num_workers=args.loader_workers,
                                   img_size=args.img_size, num_frames=args.num_frames)
        print(report.summary())
    return 0
