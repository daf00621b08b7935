"""Ingestion: archive files -> QC -> view filter -> 32-frame clips in shards and a manifest.

Stages, one module each: `discover` (find and recognise files), `qc` (named quality reasons),
`views` (pluggable view classifier), `batch` (one batch of files end to end), `run` (plan, resume,
merge), `summary` (counts for people), `contract` (the manifest's GX suite). Names are loaded on
first use so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "IngestConfig": "echofm.ingest.config",
    "QCThresholds": "echofm.ingest.config",
    "DiscoveredFile": "echofm.ingest.discover",
    "discover": "echofm.ingest.discover",
    "run_qc": "echofm.ingest.qc",
    "QCResult": "echofm.ingest.qc",
    "ViewClassifier": "echofm.ingest.views",
    "ViewPrediction": "echofm.ingest.views",
    "HeaderViewClassifier": "echofm.ingest.views",
    "process_batch": "echofm.ingest.batch",
    "BatchResult": "echofm.ingest.batch",
    "plan_ingest": "echofm.ingest.run",
    "finalize_ingest": "echofm.ingest.run",
    "ingest_serially": "echofm.ingest.run",
    "validate_manifest": "echofm.ingest.contract",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
