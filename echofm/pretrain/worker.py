"""The per-process entry point torchrun starts: `python -m echofm.pretrain.worker --config ...`.

Joins the process group from torchrun's environment, runs `pretrain`, and leaves the group. A
NaN/inf loss (exit 3) or a user error such as data that cannot feed the job (exit 2) is logged as
one line and recorded in `RUN_DIR/failure.json`, so the launcher can tell both from an
infrastructure failure and report the error itself rather than every rank's traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from echofm.data import storage

EXIT_NON_FINITE_LOSS = 3
EXIT_USER_ERROR = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m echofm.pretrain.worker")
    parser.add_argument("--config", type=Path, required=True, help="pretrain_config.json")
    parser.add_argument("--shards", type=storage.location, required=True, help="directory (or s3:// URL) of *.tar shards")
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
    from echofm.errors import EchoFMError
    from echofm.pretrain.config import PretrainConfig
    from echofm.pretrain.distributed import cleanup_distributed, init_distributed
    from echofm.pretrain.launch import FAILURE_FILE, NON_FINITE_LOSS, USER_ERROR
    from echofm.pretrain.loop import pretrain
    from echofm.pretrain.train_loop import NonFiniteLoss

    config = PretrainConfig.from_dict(json.loads(args.config.read_text()))
    ctx = init_distributed()
    log = logging.getLogger("echofm.pretrain.worker")
    try:
        result = pretrain(config, args.shards, args.out, resume=args.resume)
        log.info("finished at step %d, checkpoint %s", result.step, result.checkpoint)
    except NonFiniteLoss as err:
        log.error("%s", err)
        if ctx.is_main:
            _record_failure(args.out / FAILURE_FILE, {"kind": NON_FINITE_LOSS, "step": err.step, "message": str(err)})
        return EXIT_NON_FINITE_LOSS
    except EchoFMError as err:
        log.error("%s", err)
        _record_failure(args.out / FAILURE_FILE, {"kind": USER_ERROR, "error": type(err).__name__, "message": str(err)})
        return EXIT_USER_ERROR
    finally:
        cleanup_distributed()
    return 0


def _record_failure(path: Path, record: dict) -> None:
    """Write `record` whole (any rank may be the one that fails)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
