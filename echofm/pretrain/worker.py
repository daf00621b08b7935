"""The per-process entry point torchrun starts: `python -m echofm.pretrain.worker --config ...`.

Joins the process group from torchrun's environment, runs `pretrain`, and leaves the group. A
NaN/inf loss is recorded in `RUN_DIR/failure.json` (so the launcher can tell divergence from an
infrastructure failure) and exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_NON_FINITE_LOSS = 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m echofm.pretrain.worker")
    parser.add_argument("--config", type=Path, required=True, help="pretrain_config.json")
    parser.add_argument("--shards", type=Path, required=True, help="directory of *.tar shards")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    from echofm.pretrain.config import PretrainConfig
    from echofm.pretrain.distributed import cleanup_distributed, init_distributed
    from echofm.pretrain.launch import FAILURE_FILE
    from echofm.pretrain.loop import NonFiniteLoss, pretrain

    config = PretrainConfig.from_dict(json.loads(args.config.read_text()))
    ctx = init_distributed()
    log = logging.getLogger("echofm.pretrain.worker")
    try:
        result = pretrain(config, args.shards, args.out, resume=args.resume)
        log.info("finished at step %d, checkpoint %s", result.step, result.checkpoint)
    except NonFiniteLoss as err:
        log.error("%s", err)
        if ctx.is_main:
            (args.out / FAILURE_FILE).write_text(
                json.dumps({"kind": "non_finite_loss", "step": err.step, "message": str(err)})
            )
        return EXIT_NON_FINITE_LOSS
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
