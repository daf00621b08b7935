"""`echofm datasets list` / `echofm datasets prepare NAME ROOT OUT`: public echo datasets in their
published layouts.

`prepare` ingests the dataset's videos from ROOT into OUT exactly as `echofm ingest` does
(OUT/shards, OUT/manifest.parquet, OUT/qc; the same ingest options) and writes OUT/labels.parquet
(clip_id, record, patient, split, the targets) and OUT/labels-report.json (the rows that became
no clip, by reason). `echofm finetune --labels OUT/labels.parquet` then uses the dataset's
official split (`--resplit` for a patient split, `--fold K` for fold datasets). See
docs/datasets.md.

Exit status: 0 done; 2 a layout that does not match (the file and missing columns are named),
an unknown dataset, or a systemic ingestion failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from echofm.cli.ingest import FLAGS as INGEST_FLAGS
from echofm.cli.options import add_option_flags, given_options
from echofm.datasets.catalog import DATASETS
from echofm.ingest.config import IngestOptions


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "datasets", help="public echo datasets (EchoNet, CAMUS, TMED-2, MIMIC-IV-ECHO): list, prepare",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the supported datasets and their expected layouts")
    prepare = actions.add_parser("prepare", help="ingest a dataset's videos and write OUT/labels.parquet")
    prepare.add_argument("name", choices=DATASETS.names(), metavar="NAME", help=", ".join(DATASETS.names()))
    prepare.add_argument("root", type=Path, help="the dataset as downloaded")
    prepare.add_argument("out", type=Path, help="ingestion OUTPUT: shards/, manifest.parquet, qc/, labels.parquet")
    add_option_flags(prepare, IngestOptions, INGEST_FLAGS)
    return parser


def _list() -> int:
    for dataset in DATASETS:
        sys.stdout.write(f"{dataset.name}\n  {dataset.title}\n  layout: {dataset.layout}\n"
                         f"  split: {dataset.split}; tasks: {', '.join(dataset.tasks)}\n")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from echofm.datasets.prepare import ingest_settings, prepare_dataset
    from pydantic import SecretStr

    from flows.ingest import ingest_archive

    options = IngestOptions(**ingest_settings(DATASETS[args.name], given_options(args, IngestOptions)))
    # SOURCE travels as a secret string, as `echofm ingest` passes it: never a plain flow parameter.
    report = prepare_dataset(args.name, args.root, args.out, secret_file=options.secret_file,
                             ingest=lambda source, output: ingest_archive(SecretStr(str(source)), str(output), options))
    summary = {k: v for k, v in report.to_dict().items() if k != "records_by_reason"}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    return _list() if args.action == "list" else _prepare(args)
