"""`echofm ingest SOURCE OUTPUT`: run the ingestion flow on an archive.

Ephemeral Prefect (a temporary local API) by default; the server at `PREFECT_API_URL` when set.
Exit 0 when the run completed, whatever individual files did (their fate is in the manifest);
exit 2 with one clear line for a systemic failure: SOURCE unreadable, OUTPUT unwritable, the
manifest contract failing.
"""

from __future__ import annotations

import argparse
import sys

from echofm.ingest.views import CANONICAL_VIEWS, DEFAULT_VIEWS

EXIT_SYSTEMIC = 2


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "ingest",
        help="archive (DICOM/MP4/AVI) -> QC -> view filter -> 32-frame clips in shards + manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="archive directory, walked recursively")
    parser.add_argument("output", help="output directory: shards/, manifest.parquet, qc/")
    parser.add_argument(
        "--views",
        nargs="+",
        choices=CANONICAL_VIEWS,
        default=list(DEFAULT_VIEWS),
        metavar="VIEW",
        help=f"views to keep (default: all cardiac views and unknown); choices: {' '.join(CANONICAL_VIEWS)}",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="files per batch task (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: all cores)")
    parser.add_argument("--dask-address", default=None, help="run batches on this Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--window-ms", type=float, default=None, help="clip window in ms (default: one cardiac cycle, else 1280)")
    parser.add_argument("--max-windows", type=int, default=1, help="most clips cut from one cine (default 1)")
    parser.add_argument("--codec", default=None, help="shard codec (default: the measured default of echofm.data.codec)")
    parser.add_argument("--view-classifier", default=None, help="'module:callable' building a ViewClassifier")
    return parser


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from echofm.data.manifest import ManifestError
    from echofm.ingest.batch import ShardWriteError
    from echofm.ingest.contract import ContractInputError
    from echofm.ingest.discover import SourceError
    from echofm.ingest.run import ContractViolation, OutputError
    from echofm.ingest.views import ViewClassifierError
    from flows.ingest import IngestOptions, ingest_archive

    try:
        options = IngestOptions(
            views=list(args.views),
            batch_size=args.batch_size,
            workers=args.workers,
            dask_address=args.dask_address,
            window_ms=args.window_ms,
            max_windows=args.max_windows,
            codec=args.codec,
            view_classifier=args.view_classifier,
        )
        options.to_config()
    except (ValidationError, ValueError) as exc:
        sys.stderr.write(f"echofm ingest: invalid options: {exc}\n")
        return EXIT_SYSTEMIC
    try:
        summary = ingest_archive(args.source, args.output, options)
    except SourceError as exc:
        sys.stderr.write(f"echofm ingest: cannot read SOURCE: {exc}\n")
        return EXIT_SYSTEMIC
    except (OutputError, ShardWriteError) as exc:
        sys.stderr.write(f"echofm ingest: cannot write OUTPUT: {exc}\n")
        return EXIT_SYSTEMIC
    except ContractViolation as exc:
        sys.stderr.write(f"echofm ingest: the manifest fails its data contract: {exc}\n")
        return EXIT_SYSTEMIC
    except (ManifestError, ContractInputError) as exc:
        sys.stderr.write(f"echofm ingest: the manifest in OUTPUT cannot be read or does not match its schema: {exc}\n")
        return EXIT_SYSTEMIC
    except ViewClassifierError as exc:
        sys.stderr.write(f"echofm ingest: {exc}\n")
        return EXIT_SYSTEMIC
    statuses = ", ".join(f"{status} {count}" for status, count in summary["by_status"].items()) or "nothing new"
    sys.stdout.write(
        f"ingested {summary['files']} file(s) into {args.output}: {statuses}; "
        f"{summary['clips']} clip(s) at {summary['clips_per_second']:.2f} clips/s\n"
    )
    return 0
