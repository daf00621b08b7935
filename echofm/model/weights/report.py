"""The load report: what happened to every tensor of the file and of the model.

Model side: every tensor of the built model is `mapped` (the file's values, maybe under another
name), `converted` (derived from the file's values; `how` says how) or `initialised` (the model's
own random initialisation). File side: every tensor of the file feeds model tensors (mapped or
converted) or is `ignored` (with why). `model.load_report` holds it; `summary()` is what is
logged; `to_dict()` is what a run stores.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES: tuple[str, ...] = ("mapped", "converted", "initialised", "ignored")
PARTS: tuple[str, ...] = ("encoder", "projector", "decoder")


@dataclass(frozen=True)
class TensorRecord:
    """One tensor. For model tensors `name` is the parameter name, `sources` the file keys it
    came from (as stored, prefixes included) and `part` encoder/projector/decoder; for ignored
    file tensors `name` is the file key and `part` is "file"."""

    name: str
    status: str
    shape: tuple[int, ...]
    part: str
    sources: tuple[str, ...] = ()
    how: str = ""


@dataclass(frozen=True)
class LoadReport:
    """See module doc. `source`: what was asked for; `path`: the file read (a run directory's
    checkpoint, a download's temporary copy); `assumed`: the file's config fields it does not
    state: value and rule;
    `extra`: the container's plain entries (normalisation, run id, training arguments)."""

    source: str
    path: str
    format: str
    config: dict[str, Any]
    model_tensors: tuple[TensorRecord, ...]
    ignored: tuple[TensorRecord, ...]
    assumed: dict[str, str] = field(default_factory=dict)
    allow_partial: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def records(self, status: str, part: str | None = None) -> list[TensorRecord]:
        """Model tensors with `status` (or the ignored file tensors), optionally of one part."""
        pool = self.ignored if status == "ignored" else self.model_tensors
        return [r for r in pool if r.status == status and (part is None or r.part == part)]

    @property
    def mapped(self) -> dict[str, TensorRecord]:
        return {r.name: r for r in self.records("mapped")}

    @property
    def converted(self) -> dict[str, TensorRecord]:
        return {r.name: r for r in self.records("converted")}

    @property
    def initialised(self) -> dict[str, TensorRecord]:
        return {r.name: r for r in self.records("initialised")}

    @property
    def missing_encoder(self) -> list[str]:
        """Encoder tensors left at random initialisation."""
        return [r.name for r in self.records("initialised", "encoder")]

    def file_tensors(self) -> dict[str, tuple[str, str]]:
        """Every file key -> `(status, what)`: into which model tensors (and how), or why not."""
        out: dict[str, tuple[str, str]] = {}
        for record in self.model_tensors:
            for key in record.sources:
                status, targets = out.get(key, ("mapped", ""))
                if record.status == "converted":
                    status = "converted"
                what = record.name if record.status == "mapped" else f"{record.name} ({record.how})"
                out[key] = (status, f"{targets}; {what}" if targets else what)
        for record in self.ignored:
            out[record.name] = ("ignored", record.how)
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Model tensors per part and status, and the ignored file tensors."""
        table = {part: dict(Counter(r.status for r in self.model_tensors if r.part == part))
                 for part in PARTS}
        table["file"] = {"ignored": len(self.ignored)}
        return table

    def summary(self) -> str:
        """Human-readable account: counts, every conversion and initialisation, every ignored
        file tensor (block-numbered names grouped, e.g. `blocks.{0-11}.attn.qkv.weight`)."""
        lines = [f"loaded {self.source} as {self.format}"]
        for part, counts in self.counts().items():
            if part != "file" and counts:
                lines.append(f"  {part}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        lines.append(f"  file tensors ignored: {len(self.ignored)}")
        for status in ("converted", "initialised", "ignored"):
            groups: dict[tuple[str, str], list[str]] = {}
            for record in self.records(status):
                groups.setdefault((record.part, record.how or "-"), []).append(record.name)
            for (part, how), names in groups.items():
                whole = part != "file" and len(names) == sum(
                    1 for r in self.model_tensors if r.part == part)
                what = f"the whole {part} ({len(names)} tensors)" if whole else compact_names(names)
                lines.append(f"  {status}: {what}: {how}")
        for key, value in self.assumed.items():
            lines.append(f"  file's {key} assumed: {value}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NUMBER = re.compile(r"\.(\d+)\.")


def compact_names(names: list[str]) -> str:
    """Names with block numbers grouped: `blocks.0.x`, `blocks.1.x` -> `blocks.{0-1}.x`."""
    groups: dict[str, list[int]] = {}
    for name in names:
        match = _NUMBER.search(name)
        numbers = groups.setdefault(_NUMBER.sub(".{}.", name, count=1) if match else name, [])
        if match:
            numbers.append(int(match.group(1)))
    return ", ".join(_numbered(key, sorted(set(numbers))) for key, numbers in groups.items())


def _numbered(key: str, numbers: list[int]) -> str:
    if not numbers:
        return key
    if len(numbers) == 1:
        return key.replace("{}", str(numbers[0]))
    return key.replace("{}", "{" + _ranges(numbers) + "}")


def _ranges(numbers: list[int]) -> str:
    """`[0, 1, 2, 5]` -> "0-2,5"."""
    spans, start, prev = [], numbers[0], numbers[0]
    for number in numbers[1:]:
        if number != prev + 1:
            spans.append((start, prev))
            start = number
        prev = number
    spans.append((start, prev))
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
