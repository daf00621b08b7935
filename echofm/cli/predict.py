"""`echofm predict SOURCE OUT --model models:/echofm-ef@champion [--model ...]`: score an archive.

Ingests SOURCE into OUT with the normal ingestion (QC, de-identification, sector mask, 32-frame
windows; re-runs add only new files: the `ingest-archive` flow), then scores every accepted clip
with every model (the `score-archive` flow): OUT/predictions.parquet (one row per clip, one
column group per task), OUT/study_predictions.parquet (one row per study), OUT/masks/ for a
segmentation model. Re-running scores only new clips, or every clip again for a model whose
version changed. Without --model, every task's current champion.

The models are looked up first: a URI that names nothing, an alias with no version or a model
of no registered task stops the command (exit 2) before anything is ingested or scored.
Registry: --tracking-uri, else MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from echofm.cli.ingest import FLAGS as INGEST_FIELDS
from echofm.cli.options import add_option_flags, given_options
from echofm.ingest.config import IngestOptions
from echofm.predict.config import ScoreOptions

EXIT_SYSTEMIC = 2
INGEST_FLAGS = {name: f"--{name.replace('_', '-')}" for name in INGEST_FIELDS} | {"batch_size": "--ingest-batch-size"}
SCORE_FIELDS = ("batch_size", "device", "loader_workers", "checkpoint_every")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("predict", help="ingest an archive and score every clip and study with registered models",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="archive directory (DICOM/MP4/AVI), walked recursively")
    parser.add_argument("output", type=Path, help="output directory: manifest, shards, predictions")
    parser.add_argument("--model", action="append", dest="models", metavar="URI",
                        help="models:/NAME@ALIAS or models:/NAME/VERSION, once per model (default: every champion)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow registry (default MLFLOW_TRACKING_URI)")
    add_option_flags(parser.add_argument_group("ingestion options"), IngestOptions, INGEST_FIELDS,
                     flags=INGEST_FLAGS, dest_prefix="ingest.")
    add_option_flags(parser.add_argument_group("scoring options"), ScoreOptions, SCORE_FIELDS, dest_prefix="score.")
    return parser


def run(args: argparse.Namespace) -> int:
    from echofm.cli.ingest import ingest_or_report
    from echofm.predict.models import champion_uris
    from echofm.predict.scoring import prepare_models
    from echofm.store import required_tracking_uri
    from flows.score import score_archive

    ingest_options = IngestOptions(**given_options(args, IngestOptions, dest_prefix="ingest."))
    score_options = ScoreOptions(**given_options(args, ScoreOptions, dest_prefix="score."))
    tracking_uri = required_tracking_uri(args.tracking_uri)
    models = prepare_models(args.models or champion_uris(tracking_uri=tracking_uri), tracking_uri=tracking_uri)
    sys.stderr.write(f"echofm predict: scoring with {', '.join(model.label for model in models)}\n")
    if ingest_or_report(str(args.source), str(args.output), ingest_options, command="predict") is None:
        return EXIT_SYSTEMIC
    summary = score_archive(str(args.output.resolve()), [model.version_uri for model in models], tracking_uri, score_options)
    without = sum(summary["files_without_clip"].values())
    sys.stdout.write(
        f"scored {summary['scored']} clip(s) ({summary['clips']} in the table, {summary['studies']} studies) "
        f"into {summary['predictions']} and {summary['studies_table']}; "
        f"{without} file(s) without a clip keep their status and reason in the manifest\n"
    )
    return 0
