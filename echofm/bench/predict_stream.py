"""`echofm bench predict --mode stream`: the scorer of `echofm predict`, end to end from shards.

What it runs, in a working directory (`--out`, else a temporary one, removed after):
1. a synthetic archive of `--clips` files ingested to shards without Prefect
   (`echofm.bench.pretrain.synthetic_ingest`; not timed);
2. randomly initialised models at `--preset`: one per task of `--tasks` (`--models single`, what
   `echofm predict` scores with by default, every task's champion), one multi-task model of them
   all (`--models multitask`), or both sets (`--models single multitask`); each saved as a
   fine-tuned checkpoint, logged as the EchoFM pyfunc and made champion in a throw-away MLflow
   registry (SQLite) in the working directory. Weights do not change the cost;
3. the scorer's own steps: `prepare_models` (registry look-up and checks), `load_predictor` (the
   registered pyfuncs on `--device`, loaded once: a long scoring run pays it once too), then
   `--repeats` rounds of `score_archive` with those predictors, every clip re-scored each round
   (the previous round's tables removed), after a warm-up clip through every model; with both
   sets, each round scores with one set then the other (two `score_archive` runs: one run may
   not hold two models of one task).

Figures, medians over the rounds (JSON):
- `end_to_end`: accepted clips / wall time of `score_archive` (plan, stream from the shards in
  `--loader-workers` processes, every model, parts, tables, masks);
- `models`: clips / time spent inside the models' predict calls (summed over models, so with N
  per-task models it is the rate of all N together);
- `loader`: clips / wall time of streaming the same clips alone (`clip_batches`, same batch size
  and workers), measured in each round just before the scoring, so both see the same load;
- with both sets, `multitask_speedup_median`: the median over rounds of single / multi-task time.

    echofm bench predict --mode stream --preset base --models single multitask --clips 6 --repeats 2 \\
        --batch-size 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SINGLE, MULTITASK = "single", "multitask"
STREAM_TASKS = ("ef", "view", "segmentation")


def add_stream_arguments(group: Any) -> None:
    group.add_argument("--out", type=Path, default=None,
                       help="working directory (archive, shards, registry); default a temporary one, removed after")
    group.add_argument("--models", nargs="+", choices=(SINGLE, MULTITASK), default=[SINGLE],
                       help="single: one model per task, as the champions are (default); multitask: one model of "
                            "every task; both: the two scored in turn in each round, with their ratio")
    group.add_argument("--batch-size", type=int, default=None, help="clips per forward pass (default: echofm predict's)")
    group.add_argument("--loader-workers", type=int, default=None,
                       help="shard-reading processes (default: echofm predict's)")
    group.add_argument("--device", default="cpu", help="torch device of the models (default cpu)")


class TimedPredictor:
    """A predictor that adds the seconds of each call to `seconds`."""

    def __init__(self, predict: Any) -> None:
        self.predict = predict
        self.seconds = 0.0

    def __call__(self, clips: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.predict(clips)
        finally:
            self.seconds += time.perf_counter() - start


def register_random_models(tasks: Sequence[str], config: Any, kind: str, directory: Path, tracking_uri: str) -> list[str]:
    """Randomly initialised models of `tasks` (module doc, step 2) registered as champions;
    their `models:/NAME@champion` URIs."""
    import mlflow
    from mlflow import MlflowClient

    from echofm.bench.random_models import random_multitask, random_task_model
    from echofm.downstream.model import save_downstream
    from echofm.downstream.multitask.config import canonical_tasks, multitask_model_name
    from echofm.downstream.multitask.model import save_multitask
    from echofm.downstream.tasks import TASKS
    from echofm.registry.pyfunc import log_pyfunc
    from echofm.registry.runs import experiment_id
    from echofm.store import CHAMPION, tracking_uri_scope

    if kind == MULTITASK:
        ordered = tuple(canonical_tasks(tasks))
        models = {multitask_model_name(ordered): (random_multitask(ordered, config, seed=0), save_multitask)}
    else:
        models = {TASKS[task].model_name: (random_task_model(task, config, seed=i), save_downstream)
                  for i, task in enumerate(tasks)}
    client = MlflowClient(tracking_uri)
    uris = []
    with tracking_uri_scope(tracking_uri):
        experiment = experiment_id(client, "bench-predict", tracking_uri)
        for name, (model, save) in models.items():
            checkpoint = save(directory / name / "model.pt", model)
            with mlflow.start_run(experiment_id=experiment, run_name=name):
                info = log_pyfunc(model, checkpoint, registered_model_name=name)
            client.set_registered_model_alias(name, CHAMPION, str(info.registered_model_version))
            checkpoint.unlink()  # the registry keeps its own copy
            uris.append(f"models:/{name}@{CHAMPION}")
    return uris


def clear_predictions(output: Path) -> None:
    """Remove what a scoring round wrote, so the next round scores every clip again."""
    from echofm.predict.columns import MASKS_DIRNAME
    from echofm.predict.scoring import PARTS_DIRNAME, PREDICTIONS_FILENAME, STUDIES_FILENAME

    for name in (PREDICTIONS_FILENAME, STUDIES_FILENAME):
        (output / name).unlink(missing_ok=True)
    for name in (PARTS_DIRNAME, MASKS_DIRNAME):
        shutil.rmtree(output / name, ignore_errors=True)


def run_stream(args: argparse.Namespace) -> int:
    import os

    import torch

    from echofm.bench.random_models import machine, preset_config
    from echofm.bench.pretrain import synthetic_ingest
    from echofm.predict.config import ScoreOptions
    from echofm.predict.scoring import load_predictor, plan_scoring, prepare_models, score_archive
    from echofm.predict.stream import clip_batches

    if args.preset is None:
        raise SystemExit("stream mode takes --preset PRESET (the models are randomly initialised)")
    defaults = ScoreOptions()
    options = ScoreOptions(batch_size=args.batch_size or defaults.batch_size, device=args.device,
                           loader_workers=defaults.loader_workers if args.loader_workers is None else args.loader_workers)
    sides = list(dict.fromkeys(args.models))
    temporary = args.out is None
    out = Path(tempfile.mkdtemp(prefix="echofm-bench-predict-")) if temporary else args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        shards, _ = synthetic_ingest(out, args.clips, os.cpu_count() or 1)
        output = shards.parent
        ingest_s = time.perf_counter() - started

        config = preset_config(args.preset, img_size=args.img_size, num_frames=args.num_frames)
        tasks = tuple(args.tasks or STREAM_TASKS)
        tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
        started = time.perf_counter()
        uris = {side: register_random_models(tasks, config, side, out / "models", tracking_uri) for side in sides}
        register_s = time.perf_counter() - started

        started = time.perf_counter()
        models = {side: prepare_models(uris[side], tracking_uri=tracking_uri) for side in sides}
        predictors = {side: [TimedPredictor(load_predictor(model, tracking_uri=tracking_uri, device=options.device,
                                                           batch_size=options.batch_size)) for model in models[side]]
                      for side in sides}
        load_s = time.perf_counter() - started

        clear_predictions(output)
        plan = plan_scoring(output, models[sides[0]])
        wanted = {clip_id: plan.shards[clip_id] for clip_id in plan.to_score}
        n_clips = len(wanted)
        if not n_clips:
            raise SystemExit("the synthetic archive gave no accepted clip to score")
        started_on = machine()
        _, first = next(iter(clip_batches(wanted, batch_size=options.batch_size, workers=0)))
        for predict in (p for side in sides for p in predictors[side]):
            predict(first[:1])  # warm-up: first calls pay allocation and kernel selection

        loader_s: list[float] = []
        seconds = {side: {"end_to_end": [], "models": []} for side in sides}
        by_model: dict[str, list[float]] = {model.label: [] for side in sides for model in models[side]}
        for _ in range(args.repeats):
            start = time.perf_counter()
            streamed = sum(len(keys) for keys, _ in clip_batches(wanted, batch_size=options.batch_size,
                                                                  workers=options.loader_workers))
            loader_s.append(time.perf_counter() - start)
            for side in sides:  # alternating within each round: every side sees the same load
                clear_predictions(output)
                for predict in predictors[side]:
                    predict.seconds = 0.0
                start = time.perf_counter()
                outcome = score_archive(output, models[side], tracking_uri=tracking_uri, options=options,
                                        predictors=predictors[side])
                seconds[side]["end_to_end"].append(time.perf_counter() - start)
                seconds[side]["models"].append(sum(predict.seconds for predict in predictors[side]))
                for model, predict in zip(models[side], predictors[side]):
                    by_model[model.label].append(predict.seconds)
                if outcome.scored != n_clips or streamed != n_clips:
                    raise SystemExit(f"a round scored {outcome.scored} and streamed {streamed} of {n_clips} clips")

        rates: dict[str, Any] = {"loader": n_clips / statistics.median(loader_s)}
        for side in sides:
            medians = {part: statistics.median(values) for part, values in seconds[side].items()}
            rates[side] = {part: n_clips / median for part, median in medians.items()}
            rates[side]["model_share_of_end_to_end"] = medians["models"] / medians["end_to_end"]
        report = {
            "mode": "stream",
            "preset": args.preset,
            "encoder": {"embed_dim": config.embed_dim, "depth": config.depth, "num_frames": config.num_frames,
                        "img_size": config.img_size},
            "models": {side: [model.label for model in models[side]] for side in sides},
            "tasks": list(tasks),
            "clips": n_clips, "repeats": args.repeats,
            "batch_size": options.batch_size, "loader_workers": options.loader_workers, "device": options.device,
            "threads": torch.get_num_threads(), "machine": started_on,
            "clips_per_s": rates,
            "seconds_by_model": {label: statistics.median(values) for label, values in by_model.items()},
            "seconds": {"loader": loader_s, **seconds},
            "setup_seconds": {"synthesise_and_ingest": ingest_s, "register": register_s, "resolve_and_load": load_s},
        }
        if len(sides) == 2:
            report["multitask_speedup_median"] = {
                part: statistics.median(a / b for a, b in zip(seconds[SINGLE][part], seconds[MULTITASK][part]))
                for part in ("end_to_end", "models")
            }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if temporary:
            shutil.rmtree(out, ignore_errors=True)
