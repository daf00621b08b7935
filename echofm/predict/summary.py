"""What a scoring run did, for people: counts only, never an identifier.

Every file of the archive is accounted for: a file with accepted clips is in the prediction
tables; one without keeps its ingestion status and reason in the manifest, and the summary
counts those by status and reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from echofm.data.manifest import MANIFEST_FILENAME, read_manifest
from echofm.predict.scoring import ScoreOutcome


@dataclass(frozen=True)
class ScoreSummary:
    """models: labels (`echofm-ef v3`); clips: accepted clips in the tables; scored: clips that
    went through a model in this run; kept: per task, clips answered by an earlier run;
    files_without_clip: per "status: reason", files of the manifest with no accepted clip."""

    models: tuple[str, ...]
    clips: int
    scored: int
    kept: dict[str, int]
    studies: int
    clips_without_study: int
    files: int
    files_without_clip: dict[str, int]
    seconds: float
    predictions: str
    studies_table: str

    @property
    def clips_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clips_per_second": self.clips_per_second}

    def table(self) -> list[dict[str, Any]]:
        """Rows for a table artifact: what each count is, and the count."""
        rows = [{"what": "models", "count": len(self.models), "detail": ", ".join(self.models)},
                {"what": "accepted clips in the tables", "count": self.clips, "detail": ""},
                {"what": "clips scored in this run", "count": self.scored, "detail": f"{self.clips_per_second:.2f} clips/s"},
                {"what": "studies", "count": self.studies, "detail": ""},
                {"what": "clips without a study pseudonym (in no study row)", "count": self.clips_without_study, "detail": ""},
                {"what": "files in the manifest", "count": self.files, "detail": ""}]
        rows += [{"what": f"clips kept from an earlier run: {task}", "count": n, "detail": ""} for task, n in self.kept.items()]
        rows += [{"what": f"files without a clip: {reason}", "count": n, "detail": "status and reason in the manifest"}
                 for reason, n in self.files_without_clip.items()]
        return rows

    def markdown(self, title: str) -> str:
        lines = [f"# {title}", "", "| what | count | detail |", "|---|---|---|"]
        lines += [f"| {row['what']} | {row['count']} | {row['detail']} |" for row in self.table()]
        return "\n".join(lines) + "\n"


def summarize(outcome: ScoreOutcome, output: str | Path) -> ScoreSummary:
    """The summary of a finished run over OUT (`score_archive`'s outcome)."""
    manifest = read_manifest(Path(output) / MANIFEST_FILENAME).to_pandas()
    # Files are named by their keyed source_id: the manifest holds no path.
    has_clip = manifest.groupby("source_id")["status"].apply(lambda s: bool((s == "accepted").any()))
    without = manifest[manifest["source_id"].isin(has_clip[~has_clip].index)].drop_duplicates("source_id")
    reasons = (without["status"] + ": " + without["reason"].fillna("no reason")).value_counts().sort_index()
    return ScoreSummary(
        models=outcome.models,
        clips=outcome.n_clips,
        scored=outcome.scored,
        kept=outcome.kept,
        studies=outcome.n_studies,
        clips_without_study=outcome.clips_without_study,
        files=int(manifest["source_id"].nunique()),
        files_without_clip={str(k): int(v) for k, v in reasons.items()},
        seconds=outcome.seconds,
        predictions=str(outcome.predictions_path),
        studies_table=str(outcome.studies_path),
    )
