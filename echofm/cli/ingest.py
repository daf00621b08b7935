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
from typing import Any

from echofm.cli.options import add_option_flags, given_options
from echofm.ingest.config import IngestOptions

EXIT_SYSTEMIC = 2
# The ingestion options this command offers (the rest keep the config's defaults).
FLAGS: tuple[str, ...] = ("views", "batch_size", "workers", "dask_address", "window_ms", "max_windows", "codec",
                          "view_classifier", "fast_decode", "secret_file", "path_map", "rehash")


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


def ingest_or_report(source: str, output: str, options: IngestOptions, *, command: str) -> dict[str, Any] | None:
    """Run the ingestion flow; its summary, or None after writing one line for a systemic failure.

    The secret (and the path map's place) are checked before Prefect starts, so a missing secret
    stops with one line and no work; SOURCE reaches the flow as a secret string, never as a plain
    parameter the Prefect database would keep."""
    from pydantic import SecretStr

    from echofm.boundary import public_message
    from echofm.data.manifest import ManifestError
    from echofm.ingest.batch import ShardWriteError
    from echofm.ingest.contract import ContractInputError
    from echofm.ingest.discover import SourceError
    from echofm.ingest.lock import OutputLocked
    from echofm.ingest.run import ContractViolation, OutputError, SecretMismatch
    from echofm.ingest.views import ViewClassifierError
    from echofm.io.deid import DeidError, check_path_map, load_secret
    from flows.ingest import ingest_archive

    try:
        load_secret(secret_file=options.secret_file, output=output)
        if options.path_map is not None:
            check_path_map(options.path_map, output)
        return ingest_archive(SecretStr(str(source)), output, options)
    except (DeidError, SecretMismatch) as exc:
        message = str(exc)
    except SourceError as exc:
        message = f"cannot read SOURCE: {exc}"
    except OutputLocked as exc:
        message = f"refused: {exc}"
    except (OutputError, ShardWriteError) as exc:
        message = f"cannot write OUTPUT: {exc}"
    except ContractViolation as exc:
        message = f"the manifest fails its data contract: {exc}"
    except (ManifestError, ContractInputError) as exc:
        message = f"the manifest in OUTPUT cannot be read or does not match its schema: {exc}"
    except ViewClassifierError as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else still gets one line of our own text
        message = f"the run failed: {public_message(exc)}"
    sys.stderr.write(f"echofm {command}: {message}\n")
    return None


def run(args: argparse.Namespace) -> int:
    from echofm.ingest.config import IngestConfigError

    try:
        options = IngestOptions(**given_options(args, IngestOptions))
    except IngestConfigError as exc:
        sys.stderr.write(f"echofm ingest: invalid options: {exc}\n")
        return EXIT_SYSTEMIC
    summary = ingest_or_report(args.source, args.output, options, command="ingest")
    if summary is None:
        return EXIT_SYSTEMIC
    statuses = ", ".join(f"{status} {count}" for status, count in summary["by_status"].items()) or "nothing new"
    sys.stdout.write(
        f"ingested {summary['files']} file(s) into {args.output}: {statuses}; "
        f"{summary['clips']} clip(s) at {summary['clips_per_second']:.2f} clips/s\n"
    )
    return 0
