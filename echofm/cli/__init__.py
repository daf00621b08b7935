"""The `echofm` command: the entry-point layer, the only part of `echofm` that runs flows.

Each sub-command lives in its own module under `echofm.cli` and exposes
`add_parser(subparsers) -> argparse.ArgumentParser` (the command: the module's name,
hyphenated) and `run(args) -> int`; command modules parse
arguments (their flags built from the stages' options, `echofm.cli.options`) and call into the
core library or a flow, holding no pipeline logic of their own. This file only wires them
together, so adding a stage never touches another stage's command. A user error that a command
does not report itself (any `EchoFMError`) is printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

EXIT_USAGE = 2
# Order is the order `echofm --help` lists them in: the pipeline's own order.
COMMAND_MODULES: tuple[str, ...] = (
    "keygen",
    "synth",
    "ingest",
    "datasets",
    "pretrain",
    "finetune",
    "evaluate",
    "evaluate_representation",
    "promote",
    "export",
    "predict",
    "pipeline",
    "demo",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echofm",
        description="EchoFM pipeline: echo archives to a video foundation model and clinical models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"echofm.cli.{name}")
        sub_parser = module.add_parser(sub)
        sub_parser.set_defaults(_run=module.run)
    return parser


# Set before any command imports Prefect or MLflow (they read these when they load). Telemetry
# stays off: this tool runs next to clinical archives. The first migration of an empty Prefect
# database takes tens of seconds on a busy small machine, longer than the ephemeral API's
# default start-up wait.
DEFAULT_ENVIRONMENT: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in DEFAULT_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    # Libraries (GX, MLflow, urllib3...) speak only when something is wrong; our own modules
    # report progress at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("echofm", "flows"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from echofm.errors import EchoFMError

    try:
        return int(args._run(args) or 0)
    except EchoFMError as exc:
        sys.stderr.write(f"echofm {args.command}: {exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
