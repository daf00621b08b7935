"""Which torch device and precision a run uses: the one rule for pretraining, fine-tuning and benchmarks."""

from __future__ import annotations

import torch


def resolve_device(choice: str) -> torch.device:
    """`auto` is this process's GPU when there is one (its local GPU under torchrun), else the
    CPU; `cuda` is that GPU; anything else (`cpu`, `cuda:1`) is taken as torch spells it."""
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "auto":
        return torch.device("cpu")
    return torch.device(choice)


def resolve_precision(choice: str, device: torch.device) -> str:
    """The precision actually used: `auto` is bf16 on GPUs that have it, fp16 (with a gradient
    scaler) on older GPUs, and on CPU bf16 only where the CPU computes it natively (AVX-512 BF16 /
    AMX); elsewhere CPU bf16 is emulated and slower than fp32, so fp32."""
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if native_bf16 else "fp32"


AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
