"""`echofm synth OUTPUT --n-clips N --seed S [--faults]`: write the synthetic echo archive."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "synth",
        help="write a synthetic echo archive (DICOM/MP4/AVI) with labels, LV masks and a PHI list",
        description="Writes OUTPUT/archive (media), OUTPUT/labels.csv + labels.parquet, "
        "OUTPUT/labels/masks/*.npz and OUTPUT/phi.json. Deterministic for a seed.",
    )
    parser.add_argument("output", type=Path, help="output folder (its archive/ sub-folder must be empty or absent)")
    parser.add_argument("--n-clips", type=int, default=24, help="clean clips to write (12 or more cover every container variant)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--faults", action="store_true", help="add broken and off-target files (truncated, empty, CT, ...)")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes writing clips (output does not depend on it)"
    )
    parser.add_argument("--mask-frames", choices=("ed_es", "all"), default="ed_es", help="LV masks for ED/ES frames only or every frame")
    return parser


def run(args: argparse.Namespace) -> int:
    from echofm.synth.archive import generate_archive

    # pylibjpeg-openjpeg logs every encoded tile at INFO.
    logging.getLogger("openjpeg").setLevel(logging.WARNING)
    summary = generate_archive(
        args.output, args.n_clips, args.seed, faults=args.faults, mask_frames=args.mask_frames, workers=args.workers
    )
    print(
        f"wrote {summary.n_clips} clips + {summary.n_faults} fault files to {summary.archive_dir} "
        f"in {summary.seconds:.1f} s; labels: {summary.labels_csv}"
    )
    return 0
