"""`echofm ingest SOURCE OUTPUT`: run the ingestion flow on an archive.

Ephemeral Prefect (a temporary local API) by default; the server at `PREFECT_API_URL` when set.
Needs the de-identification secret: `ECHOFM_DEID_SECRET` or `--secret-file FILE` (outside OUTPUT;
`echofm keygen FILE` makes one). Exit 0 when the run completed, whatever individual files did
(their fate is in the manifest); exit 2 with one clear line, before any work where it can be
known, for a systemic failure: no secret (or one inside OUTPUT), SOURCE unreadable, OUTPUT
unwritable or being written by another ingestion, the manifest contract failing. Messages never
name SOURCE or a file under it.
"""

from __future__ import annotations

import argparse
import sys

from echofm.cli.options import add_option_flags, given_options
from echofm.ingest.config import IngestOptions

EXIT_SYSTEMIC = 2
# The ingestion options this command offers (the rest keep the config's defaults).
FLAGS: tuple[str, ...] = ("views", "batch_size", "workers", "dask_address", "window_ms", "max_windows", "codec",
                          "view_classifier", "fast_decode", "secret_file", "path_map")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "ingest",
        help="archive (DICOM/MP4/AVI) -> QC -> view filter -> 32-frame clips in shards + manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="archive directory (or s3://bucket/prefix), walked recursively")
    parser.add_argument("output", help="output directory (or s3://bucket/prefix): shards/, manifest.parquet/, qc/")
    add_option_flags(parser, IngestOptions, FLAGS)
    return parser


def run(args: argparse.Namespace) -> int:
    from echofm.data.manifest import ManifestError
    from echofm.ingest.batch import ShardWriteError
    from echofm.ingest.config import IngestConfigError
    from echofm.ingest.contract import ContractInputError
    from echofm.ingest.discover import SourceError
    from pydantic import SecretStr

    from echofm.boundary import public_message
    from echofm.ingest.lock import OutputLocked
    from echofm.ingest.run import ContractViolation, OutputError, SecretMismatch
    from echofm.ingest.views import ViewClassifierError
    from echofm.io.deid import DeidError, check_path_map, load_secret
    from flows.ingest import ingest_archive

    try:
        options = IngestOptions(**given_options(args, IngestOptions))
    except IngestConfigError as exc:
        sys.stderr.write(f"echofm ingest: invalid options: {exc}\n")
        return EXIT_SYSTEMIC
    try:
        # Before Prefect starts: a missing secret stops the command with one line and no work.
        load_secret(secret_file=options.secret_file, output=args.output)
        if options.path_map is not None:
            check_path_map(options.path_map, args.output)
    except DeidError as exc:
        sys.stderr.write(f"echofm ingest: {exc}\n")
        return EXIT_SYSTEMIC
    try:
        summary = ingest_archive(SecretStr(str(args.source)), args.output, options)
    except (DeidError, SecretMismatch) as exc:
        sys.stderr.write(f"echofm ingest: {exc}\n")
        return EXIT_SYSTEMIC
    except SourceError as exc:
        sys.stderr.write(f"echofm ingest: cannot read SOURCE: {exc}\n")
        return EXIT_SYSTEMIC
    except OutputLocked as exc:
        sys.stderr.write(f"echofm ingest: refused: {exc}\n")
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
    except Exception as exc:  # noqa: BLE001 - anything else still gets one line of our own text
        sys.stderr.write(f"echofm ingest: the run failed: {public_message(exc)}\n")
        return EXIT_SYSTEMIC
    statuses = ", ".join(f"{status} {count}" for status, count in summary["by_status"].items()) or "nothing new"
    sys.stdout.write(
        f"ingested {summary['files']} file(s) into {args.output}: {statuses}; "
        f"{summary['clips']} clip(s) at {summary['clips_per_second']:.2f} clips/s\n"
    )
    return 0
