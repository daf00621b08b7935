"""`echofm bench ingest`'s report: medians over the passes, per stage too."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from echofm.bench.ingest import PipelinePass, _report


@dataclass
class _FloorPass:
    """One measured pass of the decode floor, as `DecodeFloor.measure` returns it."""

    seconds: float
    jpeg: dict[str, float] = field(default_factory=dict)
    video: dict[str, float] = field(default_factory=dict)

    def best(self) -> float:
        return self.seconds


def test_the_stage_split_is_the_median_of_the_passes_not_the_last_one() -> None:
    # Three passes of 10 clips; the last one caught a busy moment in its resize.
    passes = [
        PipelinePass(0.1, 0.9, 10, {"decode": 0.4, "resize": 0.2}, Path("a")),
        PipelinePass(0.1, 1.0, 10, {"decode": 0.5, "resize": 0.2}, Path("b")),
        PipelinePass(0.1, 1.9, 10, {"decode": 0.45, "resize": 1.0, "view": 0.01}, Path("c")),
    ]
    floors = [_FloorPass(0.40, {"opencv": 0.3}, {"pyav": 0.1}) for _ in passes]
    lines = _report({"pipeline": passes}, floors, [0.5] * 3, [0.9] * 3, 10, 10, object())
    assert "110.0 ms CPU per clip" in lines[1]  # median of 1.0, 1.1, 2.0 s over 10 clips
    stage_line = next(line for line in lines if line.startswith("CPU per clip by stage"))
    assert "(median of 3)" in stage_line
    assert "decode 45.0 ms, resize 20.0 ms, view 0.0 ms" in stage_line
    assert "ratio floor / pipeline: 0.36" in "\n".join(lines)
