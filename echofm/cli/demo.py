"""`echofm demo [--out demo-output]`: the whole pipeline on a synthetic archive, on this machine.

1. writes a synthetic echo archive with faults (every DICOM encoding, MP4, AVI, broken files);
2. runs the `echofm-pipeline` flow on it at the tiny preset: ingestion, pretraining (torchrun),
   fine-tuning against a random-init baseline, evaluation, MLflow registration and promotion;
3. prints the summary and the commands that open the Prefect and MLflow UIs on what it made.

Everything lands in `--out`: the Prefect database (PREFECT_HOME), the MLflow store, the archive,
the shards and the runs, so the UIs show exactly this run. When PREFECT_API_URL or
MLFLOW_TRACKING_URI are set, those servers are used instead. The de-identification secret is
never among them: without `--secret-file` or `ECHOFM_DEID_SECRET` the demo creates (once, then
reuses) `<out>.echofm-key` beside `--out`, outside it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from echofm.cli.pipeline import add_pipeline_arguments, pipeline_parameters
from echofm.errors import EchoFMError

log = logging.getLogger(__name__)
# A folder holding this file was made by the demo and may be replaced by the next demo.
DEMO_MARKER = ".echofm-demo"


# Sized for about seven minutes on two idle cores: ~3 clips per patient gives test splits of
# several patients; the tiny preset on 16 x 64 x 64 clips takes ~0.3 s per step. The
# representation report chose the pretraining (docs/representation.md): a peak lr of ~1e-4
# (base 0.003 per 256 clips at the default batch of 8) for 600 steps keeps the clip embeddings
# apart (mean cosine ~0.6 against ~0.9 at random init), where the seed's base 0.03 collapses them
# within the first 20 steps; the frozen probes beat random init on most runs, not all. Hiding 90%
# of the tokens instead of 75% widened the kNN view margin over random init (mean +0.08 over five
# runs against +0.03 over four; the gate passed 4 of 5 then, 6 of 7 since) and shortens a step.
# Ingestion batches of 24 files keep both cores busy.
DEMO_DEFAULTS: dict[str, Any] = {
    "tasks": ["ef", "view", "reduced_ef"],
    "pretraining": {"steps": 600, "base_lr": 0.003, "img_size": 64, "num_frames": 16, "mask_ratio": 0.9},
    "finetuning": {"epochs": 30},
    "ingest": {"batch_size": 24},
}


class DemoOutputNotOurs(EchoFMError, RuntimeError):
    """--out exists, is not empty, and was not made by a previous demo: refuse to delete it."""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("demo", help="generate a synthetic archive and run the whole pipeline on it",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="everything the demo makes")
    parser.add_argument("--n-clips", type=int, default=96, help="synthetic clips (plus one file per fault kind)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic archive and of pretraining")
    add_pipeline_arguments(parser, defaults=DEMO_DEFAULTS)
    return parser


def prepare_output(out: Path) -> None:
    """Start from an empty `out`; a previous demo's output is replaced, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).exists():
            raise DemoOutputNotOurs(f"{out} exists and was not made by `echofm demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by `echofm demo`; the next demo replaces this folder\n")


# Where `--secret-file` lands (the pipeline's ingestion options, see echofm.cli.pipeline).
SECRET_FILE_DEST = "ingest.secret_file"


def demo_secret_file(out: Path) -> Path:
    """The demo's secret file, beside `out` (never inside: a key must not travel with the data);
    created on first use, reused afterwards so pseudonyms stay the same from one demo to the next."""
    from echofm.io.deid import write_secret_file

    path = out.parent / f"{out.name}.echofm-key"
    if not path.exists():
        write_secret_file(path)
    return path


def use_local_services(out: Path) -> None:
    """Point Prefect and MLflow at stores inside `out` unless servers are configured.

    Must run before Prefect is imported: Prefect reads PREFECT_HOME when it loads its settings.
    """
    if "prefect" in sys.modules:
        raise RuntimeError("use_local_services must run before prefect is imported")
    if not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_HOME"] = str(out / "prefect")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    # Progress is the flow's log lines; per-file download bars would drown them.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def ui_commands(out: Path) -> list[str]:
    bin_dir = Path(sys.executable).parent
    commands = []
    if not os.environ.get("PREFECT_API_URL"):
        commands.append(f"PREFECT_HOME={out / 'prefect'} {bin_dir / 'prefect'} server start   # then http://127.0.0.1:4200")
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if uri.startswith("sqlite:"):
        commands.append(f"{bin_dir / 'mlflow'} ui --backend-store-uri {uri}   # then http://127.0.0.1:5000")
    return commands


def _stage(number: int, text: str) -> None:
    print(f"\n[{number}/3] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    started = time.perf_counter()
    try:
        prepare_output(out)
    except DemoOutputNotOurs as exc:
        log.error("%s", exc)
        return 2
    use_local_services(out)
    if getattr(args, SECRET_FILE_DEST, None) is None and not os.environ.get("ECHOFM_DEID_SECRET"):
        setattr(args, SECRET_FILE_DEST, str(demo_secret_file(out)))
        print(f"de-identification secret: {getattr(args, SECRET_FILE_DEST)} (outside {out.name}/)", flush=True)

    from echofm.synth.archive import generate_archive

    _stage(1, f"writing a synthetic archive of {args.n_clips} clips plus faults into {out / 'synthetic'}")
    archive = generate_archive(out / "synthetic", args.n_clips, args.seed, faults=True,
                               workers=min(2, os.cpu_count() or 1))
    print(f"      {archive.n_files} files in {archive.seconds:.1f} s", flush=True)

    _stage(2, "running the echofm-pipeline flow: ingest -> pretrain -> fine-tune -> evaluate -> register")
    from flows.pipeline import echo_pipeline

    params = pipeline_parameters(args, source=out / "synthetic" / "archive", output=out / "ingest",
                                 runs=out / "runs", labels=out / "synthetic" / "labels.csv")
    params["pretraining"] = params["pretraining"].replace(seed=args.seed)
    try:
        result = echo_pipeline(**params)
    except Exception as exc:  # the flow run logged the traceback; name the failure in one line
        from echofm.boundary import public_message

        log.error("the pipeline failed: %s", public_message(exc))
        return 1

    _stage(3, f"done in {time.perf_counter() - started:.0f} s")
    print(result["summary"])
    print("Browse what this run produced:")
    for command in ui_commands(out):
        print(f"  {command}")
    return 0
