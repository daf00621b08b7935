"""`echofm bench predict`: scoring raw clips with N single-task models against one multi-task model.

Both sides answer the same tasks for the same raw uint8 clips through the serving path
(`echofm.registry.pyfunc.predict_clips`: resample, resize-pad, normalise, encode, decode):

- single: one model per task, each with its own encoder, run one after the other (what a scorer
  does with the registered `echofm-<task>` models);
- multitask: one model, one encoder pass per clip, every head on it.

Encoder passes are counted, not assumed: a forward hook on each encoder's tubelet embedding
adds the clips of every batch it embeds. Without `--single`, the single-task side is the
multi-task model's own heads, each as a `DownstreamModel` on its own copy of the encoder (same
weights), so the two sides must also give the same answers, and the run checks that they do.

Models are checkpoints (`model.pt`) or registry URIs (`models:/NAME@ALIAS`, loaded as the
registered pyfunc with `--tracking-uri`), or, with `--preset` instead of `--multitask`, a
randomly initialised multi-task model of `--tasks` at that model preset (weights do not change
the cost; `random_multitask`). The clips are generated (content does not change the cost). The
sides alternate over `--repeats` rounds after one warm-up round; medians are printed with their
ratio, as JSON.

    echofm bench predict --multitask runs/joint/model.pt --clips 32 --repeats 5
    echofm bench predict --preset base --tasks ef view reduced_ef --clips 4 --repeats 3 --threads 2

`--mode stream` measures the streaming scorer of `echofm predict` instead, from shards
(`echofm.bench.predict_stream`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echofm.bench.random_models import (  # noqa: F401 - re-exported for the bench's callers
    input_spec, machine, preset_config, random_head, random_multitask, random_task_model, random_task_spec,
)

SINGLE, MULTITASK = "single", "multitask"
COMPARE, STREAM = "compare", "stream"
COMPARE_TASKS = ("ef", "view", "reduced_ef")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=(COMPARE, STREAM), default=COMPARE,
                        help="compare: N single-task models against one multi-task model on raw clips (default); "
                             "stream: the `echofm predict` scorer end to end from shards (see echofm.bench.predict_stream)")
    parser.add_argument("--multitask", default=None, help="multi-task model: model.pt or models:/echofm-multitask-...@ALIAS")
    parser.add_argument("--preset", default=None,
                        help="instead of --multitask (compare) and always in stream mode: randomly initialised models "
                             "at this model preset (tiny, base, large)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help=f"tasks of the --preset models (default compare: {' '.join(COMPARE_TASKS)}; "
                             "stream: ef view segmentation)")
    parser.add_argument("--img-size", type=int, default=None, help="override the preset's image size (smoke runs)")
    parser.add_argument("--num-frames", type=int, default=None, help="override the preset's frame count (smoke runs)")
    parser.add_argument("--single", nargs="+", default=None, metavar="MODEL",
                        help="single-task models (model.pt or models:/ URIs), one per task of the multi-task model "
                             "(default: its own heads, each on a copy of its encoder)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store of models:/ URIs (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--clips", type=int, default=32,
                        help="compare: raw clips scored per side per round; "
                             "stream: synthetic files to ingest, one accepted clip each (default 32)")
    parser.add_argument("--clip-shape", default="48x128x128", help="FRAMESxHEIGHTxWIDTH of the raw grey clips (default 48x128x128)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    from echofm.bench.predict_stream import add_stream_arguments

    add_stream_arguments(parser.add_argument_group("stream mode"))


def load_model(source: str, tracking_uri: str | None = None) -> Any:
    """A fine-tuned model (single- or multi-task) from a checkpoint file or a registry URI."""
    if source.startswith(("models:/", "runs:/")):
        import mlflow

        from echofm.store import tracking_uri_scope

        with tracking_uri_scope(tracking_uri):
            return mlflow.pyfunc.load_model(source).unwrap_python_model().model
    from echofm.downstream.multitask.model import load_fine_tuned

    return load_fine_tuned(source).model


def heads_as_single_models(multitask: Any) -> list[Any]:
    """Each head of `multitask` as a single-task model on its own copy of the encoder."""
    models = []
    for task in multitask.tasks:
        single = multitask.head_model(task)
        single.encoder = copy.deepcopy(multitask.encoder)
        models.append(single.eval())
    return models


class PassCounter:
    """Clips embedded by the encoders of `models` (a forward hook on each tubelet embedding)."""

    def __init__(self, models: Sequence[Any]) -> None:
        self.clips = 0
        encoders = {id(m.encoder): m.encoder for m in models}
        self._hooks = [e.patch_embed.register_forward_hook(self._count) for e in encoders.values()]

    def _count(self, module: Any, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        self.clips += int(inputs[0].shape[0])

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def score(models: Sequence[Any], clips: np.ndarray) -> tuple[list[float], int, list[Any]]:
    """Seconds each model takes to answer for `clips`, encoder passes (clips embedded), answers."""
    from echofm.registry.pyfunc import predict_clips

    counter = PassCounter(models)
    seconds, answers = [], []
    try:
        for model in models:
            start = time.perf_counter()
            answers.append(predict_clips(model, clips))
            seconds.append(time.perf_counter() - start)
    finally:
        counter.close()
    return seconds, counter.clips, answers


def columns(answer: Any) -> dict[str, np.ndarray]:
    """An answer (DataFrame, or dict of arrays with masks) as arrays by column name."""
    if isinstance(answer, dict):
        return {name: np.asarray(values) for name, values in answer.items()}
    return {name: answer[name].to_numpy() for name in answer.columns}


def same_answers(single: list[Any], joint: Any) -> bool:
    """Whether every single-task column equals the multi-task answer's column of that name."""
    joined = columns(joint)
    for answer in single:
        for name, values in columns(answer).items():
            other = joined.get(name)
            if other is None or len(other) != len(values):
                return False
            for a, b in zip(values, other):
                a, b = np.asarray(a), np.asarray(b)
                if a.shape != b.shape or not (np.allclose(a, b, rtol=1e-4, atol=1e-5) if a.dtype.kind == "f"
                                              else np.array_equal(a, b)):
                    return False
    return True


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == STREAM:
        from echofm.bench.predict_stream import run_stream

        return run_stream(args)
    return run_compare(args)


def run_compare(args: argparse.Namespace) -> int:
    from echofm.downstream.multitask.model import MultiTaskModel

    if (args.multitask is None) == (args.preset is None):
        raise SystemExit("compare mode takes --multitask MODEL or --preset PRESET (one of the two)")
    if args.preset is not None:
        config = preset_config(args.preset, img_size=args.img_size, num_frames=args.num_frames)
        joint = random_multitask(args.tasks or COMPARE_TASKS, config, seed=0)
    else:
        joint = load_model(args.multitask, args.tracking_uri).eval()
    if not isinstance(joint, MultiTaskModel):
        raise SystemExit(f"{args.multitask} is a single-task model; --multitask takes a multi-task one")
    own_heads = args.single is None
    singles = heads_as_single_models(joint) if own_heads else [load_model(s, args.tracking_uri).eval() for s in args.single]
    single_tasks = sorted(task.task for model in singles for task in model.task_specs)
    if single_tasks != sorted(joint.tasks):
        raise SystemExit(f"the single-task models answer {single_tasks}, the multi-task model {sorted(joint.tasks)}")
    frames, height, width = (int(n) for n in args.clip_shape.lower().split("x"))
    clips = np.random.default_rng(0).integers(0, 256, size=(args.clips, frames, height, width), dtype=np.uint8)

    seconds: dict[str, list[float]] = {SINGLE: [], MULTITASK: []}
    by_task: dict[str, list[float]] = {}
    passes: dict[str, int] = {}
    started_on = machine()
    with torch.inference_mode():
        score(singles, clips[:2])  # warm-up: first calls pay allocation and kernel selection
        score([joint], clips[:2])
        for _ in range(args.repeats):
            single_s, passes[SINGLE], single_answers = score(singles, clips)
            joint_s, passes[MULTITASK], (joint_answer,) = score([joint], clips)
            seconds[SINGLE].append(sum(single_s))
            seconds[MULTITASK].append(sum(joint_s))
            for model, spent in zip(singles, single_s):
                by_task.setdefault(",".join(t.task for t in model.task_specs), []).append(spent)
    ratios = [s / m for s, m in zip(seconds[SINGLE], seconds[MULTITASK])]
    cfg = joint.encoder.config
    report = {
        "mode": COMPARE,
        "model": f"randomly initialised, preset {args.preset}" if args.preset else args.multitask,
        "tasks": list(joint.tasks),
        "encoder": {"embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_frames": cfg.num_frames, "img_size": cfg.img_size},
        "clips": args.clips, "clip_shape": [frames, height, width], "repeats": args.repeats,
        "threads": torch.get_num_threads(), "machine": started_on,
        "single_source": "the multi-task model's heads, each on its own encoder copy" if own_heads else list(args.single),
        "clips_per_s": {side: args.clips / statistics.median(values) for side, values in seconds.items()},
        "encoder_passes": passes,
        "encoder_passes_per_clip": {side: n / args.clips for side, n in passes.items()},
        "speedup_median": statistics.median(ratios),
        "single_seconds_by_task": {task: statistics.median(values) for task, values in by_task.items()},
        "seconds": seconds,
    }
    if own_heads:
        report["answers_match"] = same_answers(single_answers, joint_answer)
    print(json.dumps(report, indent=2))
    return 0 if report.get("answers_match", True) else 1
