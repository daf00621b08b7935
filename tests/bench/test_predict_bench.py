"""`echofm bench predict` on a saved multi-task model: passes counted, answers compared."""

from __future__ import annotations

import argparse
import json

import pytest

from echofm.cli.bench import run as run_bench_command
from tests.factories.downstream import MULTITASK_TASKS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def bench(capsys, *flags: str) -> tuple[int, dict]:
    code = run_bench_command(argparse.Namespace(bench="predict", bench_args=list(flags)))
    return code, json.loads(capsys.readouterr().out)


def test_one_encoder_pass_per_clip_against_one_per_task(multitask_run, capsys) -> None:
    result, _ = multitask_run
    code, report = bench(capsys, "--multitask", str(result.checkpoint), "--clips", "3", "--clip-shape", "20x40x48",
                         "--repeats", "1")
    assert code == 0 and report["answers_match"] is True  # the heads alone answer as the joint model does
    assert report["tasks"] == list(MULTITASK_TASKS)
    assert report["encoder_passes"] == {"single": 3 * len(MULTITASK_TASKS), "multitask": 3}
    assert report["clips_per_s"]["multitask"] > 0 and len(report["seconds"]["single"]) == 1


def test_single_task_models_must_cover_the_same_tasks(multitask_run, downstream_archive, tmp_path) -> None:
    from echofm.downstream.config import FinetuneConfig
    from echofm.downstream.finetune import finetune

    result, labels = multitask_run
    alone = finetune(FinetuneConfig(task="ef", epochs=1, compare="none"), encoder=downstream_archive.encoder_path,
                     shards=downstream_archive.shards, labels=labels, manifest=downstream_archive.manifest_path,
                     out_dir=tmp_path)
    with pytest.raises(SystemExit, match="single-task models answer \\['ef'\\]"):
        run_bench_command(argparse.Namespace(bench="predict", bench_args=[
            "--multitask", str(result.checkpoint), "--single", str(alone.checkpoint)]))


def test_a_random_model_at_a_preset_needs_no_checkpoint(capsys) -> None:
    code, report = bench(capsys, "--preset", "tiny", "--img-size", "32", "--num-frames", "16", "--tasks", "ef", "view",
                         "--clips", "2", "--clip-shape", "20x40x48", "--repeats", "1")
    assert code == 0 and report["answers_match"] is True and report["tasks"] == ["ef", "view"]
    assert report["encoder_passes"] == {"single": 4, "multitask": 2} and report["encoder"]["img_size"] == 32
    assert report["clips_per_s"]["single"] > 0 and report["model"] == "randomly initialised, preset tiny"
