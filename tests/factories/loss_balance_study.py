"""The loss-balancer study of docs/benchmarks.md ("Multi-task loss balancing"): the three
balancers on the test factory's partially labelled archive at a size where every task learns.

Run from the repository root (it builds on the test factories, not on a real archive):

    ECHOFM_DEID_SECRET=any-string-of-16-bytes EPOCHS=20 .venv/bin/python -m tests.factories.loss_balance_study ROOT 100 1,2,3

ROOT (a new folder) receives the archive; one line per (balancer, seed) with the seconds and the
test metrics of the joint model is printed, and ROOT/balance.json holds them all.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

BALANCES = ("fixed", "initial", "uncertainty")
TASKS = ("ef", "view", "reduced_ef", "segmentation")


def main(root: Path, n_patients: int, seeds: list[int], epochs: int) -> dict:
    from echofm.downstream.multitask.config import MultitaskConfig
    from echofm.downstream.multitask.train import finetune_multitask
    from echofm.downstream.splits import SplitConfig
    from tests.factories.downstream import make_archive, partial_labels

    archive = make_archive(root, n_patients=n_patients, clips_per_patient=2, seed=0)
    labels = partial_labels(archive)
    results = {}
    for seed in seeds:
        for balance in BALANCES:
            started = time.perf_counter()
            config = MultitaskConfig(tasks=TASKS, epochs=epochs, seed=seed, strategy="full", loss_balance=balance,
                                     compare="none", compare_single_task=False, split=SplitConfig(seed=1))
            result = finetune_multitask(config, encoder=archive.encoder_path, shards=archive.shards, labels=labels,
                                        manifest=archive.manifest_path, mask_root=archive.root)
            seconds = time.perf_counter() - started
            results[f"{balance}/{seed}"] = {"test": result.test_metrics, "seconds": seconds, "counts": result.counts}
            print(balance, seed, f"{seconds:.1f}", json.dumps(result.test_metrics), flush=True)
    (root / "balance.json").write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")], int(os.environ.get("EPOCHS", "20")))
