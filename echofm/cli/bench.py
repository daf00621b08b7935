"""`echofm bench NAME ...`: benchmarks that live beside the code they measure.

Each benchmark is a module `echofm.bench.NAME` exposing `add_arguments(parser)` and
`run(args) -> int`; it prints ratios measured in one run and medians over repeats. Only the
chosen benchmark's module is imported (they import torch, cv2 or pydicom, which every other
`echofm` command would otherwise pay for at start-up).
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, str] = {
    "model": "forward+backward step time, clips/s and peak memory per model preset",
    "codec": "shard codecs: bytes per clip, decode clips/s per core, fidelity",
    "ingest": "end-to-end ingestion CPU per clip against the best decoders on the kept frames",
    "discovery": "plan time on an archive of many small files: first run, and again with the discovery cache",
    "manifest": "finalize and the GX contract on an archive-sized manifest (time, peak memory)",
    "loader": "WebDataset loader clips/s per worker against per-clip MP4 decoding",
    "deid": "burned-in text removed and tissue kept by the sector mask and overlay removal",
    "volume": "NIfTI / MetaImage sequences: the project's readers against nibabel and SimpleITK",
    "pretrain": "the real pretraining loop: clips/s, model-FLOPs utilisation, peak memory, representation curve",
    "predict": "raw-clip scoring: N single-task models against one multi-task model (clips/s, encoder passes); "
               "--mode stream: the echofm predict scorer end to end from shards (end-to-end, model and loader clips/s)",
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="\n".join(f"{name}: {text}" for name, text in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bench", choices=tuple(BENCHMARKS), metavar="BENCHMARK", help=", ".join(BENCHMARKS))
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's options (see its --help)")
    return parser


def benchmark_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"echofm bench {name}", description=BENCHMARKS[name])
    importlib.import_module(f"echofm.bench.{name}").add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    bench_args = benchmark_parser(args.bench).parse_args(args.bench_args)
    return int(importlib.import_module(f"echofm.bench.{args.bench}").run(bench_args) or 0)
