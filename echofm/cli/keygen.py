"""`echofm keygen FILE`: create a de-identification secret file (32 random bytes, hex, mode 0600).

Every keyed value in an output (pseudonyms of patients, studies and series; the source id of
each file; the keyed digests of file and pixel content) is computed under this secret. Keep FILE
outside every ingestion OUTPUT, back it up with the same care as the archive itself (whoever
holds it can recompute the pseudonyms of guessed identifiers; whoever loses it cannot add to an
output keyed by it), and pass it as `echofm ingest --secret-file FILE` or put its content in
`ECHOFM_DEID_SECRET`. An existing FILE is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_EXISTS = 2


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("keygen", help="create a de-identification secret file for --secret-file",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="secret file to create (mode 0600, never overwritten)")
    return parser


def run(args: argparse.Namespace) -> int:
    from echofm.io.deid import Pseudonymizer, SecretFileExists, load_secret, write_secret_file

    try:
        path = write_secret_file(args.file)
    except SecretFileExists as exc:
        sys.stderr.write(f"echofm keygen: {exc}\n")
        return EXIT_EXISTS
    key_id = Pseudonymizer(load_secret(secret_file=path)).key_id
    sys.stdout.write(f"wrote a new secret (key id {key_id}); use it with --secret-file {path}\n")
    return 0
