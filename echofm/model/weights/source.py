"""A weights file read into this model's names, at the file's own geometry.

A layout reader (`layouts.py`) walks the file with a `SourceBuilder`: every tensor it takes is put
under this model's parameter name, with the file keys it came from and the steps that changed
it (`Entry`); every tensor it leaves is classified as ignored (not needed here) or unsupported
(the encoder computes with it, and this model cannot). Nothing is dropped unaccounted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# Block attention layouts: "fused" qkv (timm, this model), "split" q/k/v (MAE-ST, EchoFM),
# "qv_bias" fused weight with separate q and v biases and no k bias (VideoMAE, BEiT); each block
# is read in the layout its keys show.
_PARTS = ("weight", "bias")


@dataclass(frozen=True)
class Entry:
    """One tensor in this model's naming: values, the file keys it came from, and the steps
    that turned them into it (empty: the file's tensor as stored)."""

    tensor: torch.Tensor
    sources: tuple[str, ...]
    steps: tuple[str, ...] = ()


@dataclass
class SourceModel:
    """What a layout reader made of a file (see module doc).

    original: stripped file key -> key as stored; shapes: stripped file key -> shape as stored;
    hints: config fields the file states (its stored config, `model_args`); assumed: config fields
    the file does not state, with the value a rule gave them and why; decoder_head_dim: the width
    per decoder head of this family, used when the file does not say the head count.
    """

    format: str
    tensors: dict[str, Entry]
    ignored: dict[str, str]
    unsupported: dict[str, str]
    original: dict[str, str]
    shapes: dict[str, torch.Size]
    hints: dict[str, Any] = field(default_factory=dict)
    assumed: dict[str, tuple[Any, str]] = field(default_factory=dict)
    decoder_head_dim: int = 32


def block_indices(keys: Any, prefix: str) -> list[int]:
    """Sorted block numbers `i` of keys `{prefix}{i}.*`."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    return sorted({int(m.group(1)) for key in keys if (m := pattern.match(key))})


class SourceBuilder:
    """Collects `Entry`s from a stripped state dict and accounts for every key (module doc)."""

    def __init__(self, fmt: str, state: dict[str, torch.Tensor], original: dict[str, str]) -> None:
        self.format = fmt
        self.state = state
        self.original = original
        self.used: set[str] = set()
        self.tensors: dict[str, Entry] = {}
        self.ignored: dict[str, str] = {}
        self.unsupported: dict[str, str] = {}

    def has(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> torch.Tensor:
        self.used.add(key)
        return self.state[key]

    def put(self, name: str, tensor: torch.Tensor, sources: tuple[str, ...], *steps: str) -> None:
        self.tensors[name] = Entry(tensor, sources, tuple(s for s in steps if s))

    def copy(self, key: str, name: str, *steps: str) -> bool:
        """Put file tensor `key` under `name` when present; returns whether it was."""
        if key not in self.state:
            return False
        self.put(name, self.take(key), (key,), *steps)
        return True

    def copy_parts(self, stem: str, name: str) -> None:
        """`{stem}.weight/.bias` -> `{name}.weight/.bias` (those present)."""
        for part in _PARTS:
            self.copy(f"{stem}.{part}", f"{name}.{part}")

    def ignore(self, key: str, reason: str) -> None:
        self.used.add(key)
        self.ignored[key] = reason

    def ignore_matching(self, pattern: str, reason: str) -> None:
        regex = re.compile(pattern)
        for key in self.state:
            if key not in self.used and regex.match(key):
                self.ignore(key, reason)

    def attention_layout(self, src: str) -> str:
        """The attention layout of block `src*`: "split", "qv_bias" or "fused" (see top)."""
        if self.has(f"{src}attn.q.weight"):
            return "split"
        if self.has(f"{src}attn.q_bias"):
            return "qv_bias"
        return "fused"

    def block(self, src: str, dst: str) -> None:
        """Read one transformer block `src*` (e.g. "blocks.3.") into timm's layout at `dst*`.

        Separate q/k/v projections are concatenated into the fused `qkv`; VideoMAE's q/v biases
        become the fused bias with a zero k part; an attention without bias gets a zero one; a
        per-channel layer scale (`gamma_1/2`, `ls1/2.gamma`) is folded into the projection
        before it (`attn.proj`, `mlp.fc2`), which computes exactly the same.
        """
        for stem in ("norm1", "norm2", "mlp.fc1"):
            self.copy_parts(src + stem, dst + stem)
        self._qkv(src, dst, self.attention_layout(src))
        for stem, scales in (("attn.proj", ("gamma_1", "ls1.gamma")),
                             ("mlp.fc2", ("gamma_2", "ls2.gamma"))):
            scale_key = next((src + s for s in scales if self.has(src + s)), None)
            if scale_key is None:
                self.copy_parts(src + stem, dst + stem)
                continue
            gamma = self.take(scale_key)
            how = f"layer scale {scale_key} folded in (rows multiplied by it)"
            weight, bias = f"{src}{stem}.weight", f"{src}{stem}.bias"
            self.put(f"{dst}{stem}.weight", self.take(weight) * gamma.unsqueeze(1),
                     (weight, scale_key), how)
            if self.has(bias):
                self.put(f"{dst}{stem}.bias", self.take(bias) * gamma, (bias, scale_key), how)

    def _qkv(self, src: str, dst: str, attention: str) -> None:
        weight_name, bias_name = f"{dst}attn.qkv.weight", f"{dst}attn.qkv.bias"
        if attention == "fused":
            self.copy(f"{src}attn.qkv.weight", weight_name)
            if not self.copy(f"{src}attn.qkv.bias", bias_name):
                self._zero_bias(src, bias_name)
            return
        if attention == "split":
            keys = [f"{src}attn.{p}.weight" for p in "qkv"]
            if all(self.has(k) for k in keys):
                self.put(weight_name, torch.cat([self.take(k) for k in keys]), tuple(keys),
                         "q, k and v projections concatenated into qkv")
            biases = [f"{src}attn.{p}.bias" for p in "qkv"]
            if all(self.has(k) for k in biases):
                self.put(bias_name, torch.cat([self.take(k) for k in biases]), tuple(biases),
                         "q, k and v biases concatenated into the qkv bias")
            elif self.has(keys[0]):
                self._zero_bias(src, bias_name)
            return
        self.copy(f"{src}attn.qkv.weight", weight_name)
        q_key, v_key = f"{src}attn.q_bias", f"{src}attn.v_bias"
        if self.has(q_key) and self.has(v_key):
            q, v = self.take(q_key), self.take(v_key)
            self.put(bias_name, torch.cat([q, torch.zeros_like(q), v]), (q_key, v_key),
                     "qkv bias = [q_bias, zeros (no k bias in the source), v_bias]")
        else:
            self._zero_bias(src, bias_name)

    def _zero_bias(self, src: str, name: str) -> None:
        weight = self.tensors.get(name.replace(".bias", ".weight"))
        if weight is not None:
            self.put(name, weight.tensor.new_zeros(weight.tensor.shape[0]), (),
                     f"zeros: the source attention {src}attn has no bias")

    def blocks(self, src: str, dst: str) -> None:
        """Every block `{src}{i}.` -> `{dst}{i}.` (see `block`)."""
        for index in block_indices(self.state, src):
            self.block(f"{src}{index}.", f"{dst}{index}.")

    def finish(self, classify: Callable[[str], tuple[bool, str]], **fields: Any) -> SourceModel:
        """Classify every key not taken: `classify(key) -> (unsupported, reason)`."""
        for key in self.state:
            if key in self.used:
                continue
            unsupported, reason = classify(key)
            (self.unsupported if unsupported else self.ignored)[key] = reason
        return SourceModel(format=self.format, tensors=self.tensors, ignored=self.ignored,
                           unsupported=self.unsupported, original=self.original,
                           shapes={key: value.shape for key, value in self.state.items()}, **fields)
