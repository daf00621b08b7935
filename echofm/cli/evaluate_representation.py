"""`echofm evaluate-representation ENCODER --shards DIR [--labels FILE] [--embeddings-out F.parquet]`.

Runs the representation report pretraining records (`echofm.representation`) on any encoder: a
checkpoint file, a pretraining run directory, or a registered `models:/NAME@ALIAS`, next to a
randomly initialised encoder of the same config (seeded with the run's own seed when the
checkpoint records it), on the same clips, augmentations and folds. Prints the table and the
promotion gate's verdict. `--embeddings-out` also writes every clip's embedding from both
encoders (columns `clip_id`, `encoder` = pretrained|random, `embedding` list<float>, and the
label columns `view` and `ef` where known), so anyone can run their own probes.

Exit status: 0 report printed (whatever the gate says); 2 unusable inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from echofm.cli.options import add_secret_file_flag

EXIT_USAGE = 2
logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("evaluate-representation", help="collapse measures and frozen probes of an encoder vs random init",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoder", help="checkpoint, pretraining run directory, or models:/NAME@ALIAS")
    parser.add_argument("--shards", type=Path, required=True, help="ingestion output shards (manifest beside them)")
    parser.add_argument("--labels", type=Path, default=None, help="labels CSV/Parquet (view, ef, patient); none: collapse measures only")
    parser.add_argument("--clips", type=int, default=0, help="clips to measure, chosen by a stable hash (0: all)")
    parser.add_argument("--seed", type=int, default=None, help="random encoder's seed (default: the run's own, else 0)")
    parser.add_argument("--embeddings-out", type=Path, default=None, help="write per-clip embeddings to this .parquet")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--tracking-uri", default=None, help="for models:/ URIs (default: MLFLOW_TRACKING_URI)")
    add_secret_file_flag(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from echofm.downstream.encoder import load_encoder
    from echofm.errors import EchoFMError
    from echofm.representation.evaluate import evaluate_encoder, write_embeddings
    from echofm.representation.gate import check_representation

    if args.embeddings_out is not None and args.embeddings_out.suffix != ".parquet":
        logger.error("--embeddings-out must name a .parquet file, got %s", args.embeddings_out)
        return EXIT_USAGE
    try:
        labels = _probe_labels(args.shards, args.labels, args.secret_file) if args.labels else None
        loaded = load_encoder(args.encoder, tracking_uri=args.tracking_uri)
        result = evaluate_encoder(loaded.model, args.shards, extra=loaded.extra, clips=args.clips or None,
                                  labels=labels, seed=args.seed)
    except (EchoFMError, MlflowException, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    gate = check_representation(result.report)
    if args.json:
        print(json.dumps({"encoder": args.encoder, "report": result.report.to_dict(), "gate": gate.to_dict()}, indent=2))
    else:
        print(f"Representation of {args.encoder} on {result.report.n_clips} clips "
              f"(labelled: {result.report.n_labelled or 'none'}), against random init (seed {result.seed}):")
        print("\n".join(result.report.lines()))
        print(gate.reason)
    if args.embeddings_out is not None:
        write_embeddings(args.embeddings_out, result)
        print(f"embeddings of both encoders written to {args.embeddings_out}")
    return 0


def _probe_labels(shards: Path, labels: Path, secret_file: str | None):
    """The labels joined to the manifest beside `shards`, as the report's probe table (labels
    named by path join under the ingestion secret)."""
    from echofm.data.loader import manifest_path_for
    from echofm.downstream.dataset import probe_label_table
    from echofm.io.deid import optional_secret

    manifest = manifest_path_for(shards)
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: labels are joined through the manifest, which is missing")
    return probe_label_table(manifest, labels, secret=optional_secret(secret_file))
