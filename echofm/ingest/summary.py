"""Run summary: counts by status, reason and view, throughput; as a dict and as Markdown.

Built from manifest rows, which hold no identifying values; the summary itself names no file
(source paths may carry patient names in real archives), only counts and canonical names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IngestSummary:
    """Counts over the rows one run added, plus totals of the whole manifest.

    files: distinct input files in the new rows; clips: accepted rows (one per window);
    seconds: wall time of the run; clips_per_second: accepted clips / seconds.
    """

    files: int
    clips: int
    by_status: dict[str, int]
    by_reason: dict[str, int]
    by_view: dict[str, int]
    by_format: dict[str, int]
    seconds: float
    manifest_rows: int
    workers: int = 1
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "clips": self.clips,
            "by_status": self.by_status,
            "by_reason": self.by_reason,
            "by_view": self.by_view,
            "by_format": self.by_format,
            "seconds": round(self.seconds, 3),
            "clips_per_second": round(self.clips_per_second, 3),
            "files_per_second": round(self.files_per_second, 3),
            "manifest_rows": self.manifest_rows,
            "workers": self.workers,
        }


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    seconds: float,
    manifest_rows: int,
    workers: int = 1,
    stage_seconds: Mapping[str, float] | None = None,
) -> IngestSummary:
    """Summarise the rows a run added (statuses of files, not of windows: a file of three accepted
    windows counts once under `accepted` in `by_status`, three times in `clips`)."""
    rows = list(rows)
    per_file: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:
        per_file.setdefault((row["source_hash"], row["source_id"]), row)
    files = list(per_file.values())
    accepted = [row for row in rows if row["status"] == "accepted"]
    return IngestSummary(
        files=len(files),
        clips=len(accepted),
        by_status=dict(Counter(row["status"] for row in files).most_common()),
        by_reason=dict(Counter(row["reason"] for row in files if row.get("reason")).most_common()),
        by_view=dict(Counter(row.get("view") or "unknown" for row in accepted).most_common()),
        by_format=dict(Counter(row["source_format"] for row in files).most_common()),
        seconds=seconds,
        manifest_rows=manifest_rows,
        workers=workers,
        stage_seconds=dict(stage_seconds or {}),
    )


def _table(title: str, counts: Mapping[str, int | float]) -> list[str]:
    if not counts:
        return [f"**{title}**: none", ""]
    lines = [f"| {title} | count |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in counts.items()]
    return lines + [""]


def summary_markdown(summary: IngestSummary, *, title: str = "Ingestion run") -> str:
    """Markdown for the Prefect artifact and the CLI (counts and canonical names only)."""
    lines = [
        f"# {title}",
        "",
        f"- files processed: **{summary.files}**, clips accepted: **{summary.clips}**",
        f"- wall time: {summary.seconds:.1f} s on {summary.workers} worker(s); "
        f"{summary.clips_per_second:.2f} clips/s, {summary.files_per_second:.2f} files/s",
        f"- manifest rows in total: {summary.manifest_rows}",
        "",
    ]
    lines += _table("status", summary.by_status)
    lines += _table("reason", summary.by_reason)
    lines += _table("view", summary.by_view)
    lines += _table("format", summary.by_format)
    if summary.stage_seconds:
        stages = {name: round(value, 2) for name, value in sorted(summary.stage_seconds.items(), key=lambda kv: -kv[1])}
        lines += _table("stage (CPU seconds, all workers)", stages)
    return "\n".join(lines)
