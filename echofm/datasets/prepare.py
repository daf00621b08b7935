"""`prepare_dataset`: a public dataset's download -> the normal ingestion -> OUT/labels.parquet.

1. The dataset's definition reads its label files into a `Listing` (a layout that does not match
   stops here, with the file and the missing columns named); rows whose identifier is not in the
   dataset's published form are set aside, never ingested (a renamed file may carry a name).
2. The listed videos, and nothing else under ROOT, are ingested exactly as `echofm ingest` does
   (QC, de-identification, sector mask, resampling; OUT/shards, OUT/manifest.parquet, OUT/qc):
   the ingestion SOURCE is a temporary folder of links to them at their own paths relative to
   ROOT, so the manifest names each file as ingesting ROOT itself would, and re-running adds
   nothing (ingestion is incremental).
3. Each listed video is joined to its manifest rows by the keyed `source_id` of its relative
   path (the path itself never leaves memory); every accepted
   clip becomes one row of OUT/labels.parquet, masks go to OUT/masks/<dataset>/<record>.npz, and
   every listed row that did not become a clip is counted by reason in the report
   (OUT/labels-report.json).

labels.parquet: `clip_id`, `record` (the dataset's published identifier), `patient` (the key of
a patient split), `split` (train/val/test or a fold number, when the dataset defines one), the
targets in the project's column names, and `mask_file` (relative to OUT) where there are masks.
No local path and no raw identifier is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echofm.datasets.catalog import DATASETS
from echofm.datasets.dataset import Listing, ListedVideo, PublicDataset
from echofm.errors import DatasetError

logger = logging.getLogger(__name__)

LABELS_FILENAME = "labels.parquet"
REPORT_FILENAME = "labels-report.json"
MASKS_DIRNAME = "masks"
KEY_COLUMNS: tuple[str, ...] = ("clip_id", "record", "patient", "split")

Ingest = Callable[[Path, Path], Any]  # (SOURCE, OUTPUT) -> anything; the run's options are bound


class PrepareError(DatasetError, RuntimeError):
    """Ingestion left no manifest, or none of the dataset's videos became a clip."""


@dataclass
class PrepareReport:
    """What one `prepare_dataset` run produced.

    listed: rows the dataset lists (videos); clips: rows of labels.parquet; videos_accepted:
    listed videos with at least one clip; not_prepared: `{reason: count}` of listed rows that
    became no clip (layout problems such as `video_missing`, and ingestion's reasons such as
    `frozen`); records_by_reason: their published identifiers.
    """

    dataset: str
    listed: int
    clips: int
    videos_accepted: int
    not_prepared: dict[str, int]
    records_by_reason: dict[str, list[str]] = field(default_factory=dict)
    labels: str = LABELS_FILENAME
    split: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_settings(dataset: PublicDataset, given: Mapping[str, Any]) -> dict[str, Any]:
    """The ingestion options of a run: the dataset's needs (`ingest_defaults`), then what the
    user gave, which wins."""
    return {**dataset.ingest_defaults, **given}


def _published_only(listing: Listing, dataset: PublicDataset) -> list[ListedVideo]:
    """Videos whose record has the dataset's published form, each record once; the others go
    to `listing.unusable` under a reason that names no value."""
    kept, seen = [], set()
    for video in listing.videos:
        if not dataset.record_pattern.match(video.record):
            listing.unusable.append(("", "record_not_published_form"))
        elif video.record in seen:
            listing.unusable.append((video.record, "duplicate_record"))
        else:
            seen.add(video.record)
            kept.append(video)
    return kept


@contextmanager
def selected_source(root: Path, videos: list[ListedVideo]) -> Iterator[Path]:
    """A temporary folder holding links to the listed videos (and their companion files) at
    their paths relative to ROOT: what ingestion walks instead of ROOT (module doc, step 2)."""
    folder = Path(tempfile.mkdtemp(prefix="echofm-dataset-"))
    try:
        for rel in sorted({rel for video in videos for rel in (video.rel_path, *video.companions)}):
            link = folder / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(root / rel, link)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _source_keys(videos: list[ListedVideo], keys: Any) -> dict[str, ListedVideo]:
    """Each listed video under the manifest's `source_id` of its path relative to SOURCE, keyed
    under the run's secret (the identity contract of docs/deid.md: the manifest holds no path)."""
    return {keys.source_id(video.rel_path): video for video in videos}


def _write_masks(out: Path, dataset: str, video: ListedVideo) -> str | None:
    """OUT/masks/<dataset>/<record>.npz (`masks`, `frame_indices`, `classes`), written once;
    its path relative to OUT, None when the video has no masks."""
    if video.masks is None:
        return None
    rel = f"{MASKS_DIRNAME}/{dataset}/{video.record}.npz"
    path = out / rel
    if not path.exists():
        masks = video.masks()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(partial, masks=masks.masks.astype(np.uint8), frame_indices=masks.frame_indices,
                            classes=np.array(masks.classes))
        partial.replace(path)
    return rel


def _label_rows(out: Path, dataset: PublicDataset, videos: list[ListedVideo], manifest: Any,
                keys: Any) -> tuple[list[dict[str, Any]], Counter[str], dict[str, list[str]], int]:
    by_key = _source_keys(videos, keys)
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for row in manifest[manifest["source_id"].isin(list(by_key))].to_dict("records"):
        rows_of.setdefault(row["source_id"], []).append(row)
    labels, reasons, records, accepted = [], Counter(), {}, 0
    for key, video in by_key.items():
        rows = sorted(rows_of.get(key, []), key=lambda r: r["window_index"])
        clips = [r for r in rows if r["status"] == "accepted"]
        if not clips:
            reason = rows[0]["reason"] if rows else "not_ingested"
            reasons[reason] += 1
            records.setdefault(reason, []).append(video.record)
            continue
        accepted += 1
        mask_file = _write_masks(out, dataset.name, video)
        for clip in clips:
            row = {"clip_id": clip["clip_id"], "record": video.record, "patient": video.patient, "split": video.split,
                   **video.targets}
            if mask_file is not None:
                row["mask_file"] = mask_file
            labels.append(row)
    return labels, reasons, records, accepted


def _write_labels(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if frame["split"].isna().all():
        frame = frame.drop(columns="split")
    elif frame["split"].map(lambda v: isinstance(v, (int, np.integer))).all():
        frame["split"] = frame["split"].astype("int64")
    targets = [c for c in frame.columns if c not in KEY_COLUMNS]
    frame = frame[[c for c in KEY_COLUMNS if c in frame.columns] + targets].sort_values("clip_id", kind="stable")
    partial = path.with_name(path.name + ".tmp")
    frame.to_parquet(partial, index=False)
    partial.replace(path)


class RunKeys:
    """The run's pseudonymizer (the secret ingestion uses for this OUT: `secret_file`, else
    `ECHOFM_DEID_SECRET`), loaded on first use, so that a download whose layout does not match
    reports only its layout error and leaves OUT untouched."""

    def __init__(self, out: Path, secret_file: str | Path | None = None) -> None:
        self._out, self._secret_file, self._keys = out, secret_file, None

    def __getattr__(self, name: str) -> Any:
        if self._keys is None:
            from echofm.io.deid import Pseudonymizer, load_secret

            self._keys = Pseudonymizer(load_secret(secret_file=self._secret_file, output=self._out))
        return getattr(self._keys, name)


def prepare_dataset(name: str, root: str | Path, out: str | Path, *, ingest: Ingest,
                    secret_file: str | Path | None = None) -> PrepareReport:
    """Prepare dataset `name` from its download at `root` into `out` (see the module doc).

    ingest: runs ingestion of a SOURCE into OUTPUT with the run's options (the CLI passes the
    `ingest-archive` flow); secret_file: the de-identification secret that ingestion uses (None:
    `ECHOFM_DEID_SECRET`), to key the listed videos' ids as the manifest does. Raises DatasetLayoutError (layout mismatch), UnknownDataset, or
    PrepareError (no clip at all); ingestion's own errors pass through.
    """
    from echofm.data.manifest import MANIFEST_FILENAME, read_manifest

    dataset = DATASETS[name]
    root, out = Path(root).resolve(), Path(out).resolve()
    keys = RunKeys(out, secret_file)
    listing = dataset.read(root, keys)
    out.mkdir(parents=True, exist_ok=True)
    videos = _published_only(listing, dataset)
    if videos:
        with selected_source(root, videos) as source:
            ingest(source, out)
    manifest_path = out / MANIFEST_FILENAME
    if not manifest_path.exists():
        raise PrepareError(f"{dataset.name}: no video of the listing was ingested ({len(listing.unusable)} rows unusable)")
    manifest = read_manifest(manifest_path).to_pandas()
    rows, reasons, records, accepted = _label_rows(out, dataset, videos, manifest, keys)
    for record, reason in listing.unusable:
        reasons[reason] += 1
        if record:
            records.setdefault(reason, []).append(record)
    if not rows:
        raise PrepareError(f"{dataset.name}: none of the {len(videos)} listed videos became a clip: {dict(reasons)}")
    _write_labels(rows, out / LABELS_FILENAME)
    split = "none" if all(v.split is None for v in videos) else dataset.split
    report = PrepareReport(dataset=dataset.name, listed=len(videos) + len(listing.unusable), clips=len(rows),
                           videos_accepted=accepted, not_prepared=dict(sorted(reasons.items())),
                           records_by_reason={k: sorted(v) for k, v in sorted(records.items())}, split=split)
    (out / REPORT_FILENAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    logger.info("%s: %d clips from %d videos; not prepared: %s", dataset.name, len(rows), accepted, report.not_prepared)
    return report
