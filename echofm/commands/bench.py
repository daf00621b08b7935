"""`echofm bench NAME ...`: benchmarks that live beside the code they measure.

Each benchmark is a module `echofm.bench.NAME` exposing `add_arguments(parser)` and
`run(args) -> int`; it prints ratios measured in one run and medians over repeats.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, str] = {
    "model": "forward+backward step time, clips/s and peak memory per model preset",
    "codec": "shard codecs: bytes per clip, decode clips/s per core, fidelity",
    "ingest": "end-to-end ingestion clips/s against the decode-only floor",
    "loader": "WebDataset loader clips/s per worker against per-clip MP4 decoding",
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("bench", help="run a benchmark and print its figures")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name, help_text in BENCHMARKS.items():
        bench_parser = benches.add_parser(name, help=help_text)
        bench_parser.set_defaults(_bench_module=f"echofm.bench.{name}")
        # Imported only to declare arguments; heavy imports stay inside each `run`.
        importlib.import_module(f"echofm.bench.{name}").add_arguments(bench_parser)
    return parser


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._bench_module).run(args) or 0)
