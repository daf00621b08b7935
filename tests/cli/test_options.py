"""Flags built from the stages' options models: one definition of each option."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import pytest

from echofm.cli import build_parser
from echofm.cli.options import add_option_flags, given_options
from echofm.downstream.config import FinetuneConfig, FinetuneOptions
from echofm.ingest.config import IngestOptions
from echofm.pretrain.config import LaunchSpec, PretrainConfig, PretrainConfigError, PretrainOptions


def test_flags_take_type_choices_help_and_shown_default_from_the_field() -> None:
    parser = argparse.ArgumentParser()
    add_option_flags(parser, PretrainConfig, ("batch_size", "precision", "register_model", "warmup_steps"))
    assert given_options(parser.parse_args([]), PretrainConfig) == {}  # the default stays in the model
    args = parser.parse_args(["--batch-size", "4", "--precision", "bf16", "--no-register-model"])
    assert given_options(args, PretrainConfig) == {"batch_size": 4, "precision": "bf16", "register_model": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp8"])  # choices come from the Literal
    text = parser.format_help()
    assert "clips per process per micro-batch (default 8)" in text and "5% of the run" in text
    # Bounds are the model's, and raise the stage's own error with the field named.
    with pytest.raises(PretrainConfigError, match="batch_size"):
        PretrainConfig(steps=1, **given_options(parser.parse_args(["--batch-size", "0"]), PretrainConfig))


def _command(name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


def test_commands_left_alone_run_the_stages_defaults(tmp_path: Path) -> None:
    from echofm.cli import finetune, pipeline, pretrain

    args = _command("pretrain").parse_args(["--shards", str(tmp_path), "--steps", "5"])
    assert pretrain.config_from_args(args) == PretrainConfig(steps=5)
    assert LaunchSpec(**given_options(args, LaunchSpec)) == LaunchSpec()
    args = _command("finetune").parse_args(["--task", "view", "--shards", "s", "--labels", "l", "--encoder", "e",
                                            "--out", "o"])
    assert finetune.config_from_args(args) == FinetuneConfig(task="view")
    args = _command("ingest").parse_args(["source", "output"])
    assert IngestOptions(**given_options(args, IngestOptions)) == IngestOptions()
    params = pipeline.pipeline_parameters(_command("pipeline").parse_args(["a", "b", "--runs", "r"]),
                                          source=tmp_path, output=tmp_path, runs=tmp_path, labels=None)
    assert params["pretraining"] == PretrainOptions() and params["finetuning"] == FinetuneOptions()


def test_the_split_seed_follows_the_seed_unless_the_split_names_one() -> None:
    assert FinetuneConfig(task="ef", seed=3).split.seed == 3
    assert FinetuneConfig(task="ef", seed=3, split={"val_fraction": 0.2}).split.seed == 3
    assert FinetuneConfig(task="ef", seed=3, split={"seed": 1}).split.seed == 1


def test_flows_take_the_models_the_commands_are_built_from() -> None:
    from flows.finetune import finetune_and_register
    from flows.ingest import ingest_archive
    from flows.pretrain import pretrain

    for flow, model in ((pretrain, PretrainOptions), (finetune_and_register, FinetuneOptions), (ingest_archive, IngestOptions)):
        assert model in typing.get_args(typing.get_type_hints(flow.fn)["options"])
    # The pretraining form is the run, its process layout and the retry policy, each field once.
    assert set(PretrainOptions.model_fields) == (set(PretrainConfig.model_fields) | set(LaunchSpec.model_fields)
                                                 | {"retries", "retry_delay_seconds", "resume"})


def test_usage_errors_name_only_the_files_the_command_line_named(tmp_path: Path) -> None:
    from echofm.cli.options import usage_error_message
    from echofm.downstream.labels import LabelError, load_source_masks

    given = tmp_path / "labels.csv"
    args = argparse.Namespace(labels=given, out=tmp_path / "out")
    assert usage_error_message(FileNotFoundError(2, "No such file", str(given)), args) == f"no such file: {given}"
    inside = "/masks/DOE^JOHN_12345678.npz"
    assert "DOE" not in usage_error_message(FileNotFoundError(2, "No such file", inside), args)
    with pytest.raises(LabelError) as caught:
        load_source_masks(tmp_path / "DOE^JOHN_12345678.npz")
    assert "DOE" not in usage_error_message(caught.value, args)


def test_the_pipeline_takes_the_pretraining_data_flags_a_small_archive_needs(tmp_path: Path) -> None:
    from echofm.cli import pipeline

    args = _command("pipeline").parse_args(["a", "b", "--runs", "r", "--holdout-clips", "2", "--loader-workers", "0",
                                            "--eval-every", "0", "--cache-mib", "64", "--workers", "3"])
    params = pipeline.pipeline_parameters(args, source=tmp_path, output=tmp_path, runs=tmp_path, labels=None)
    assert params["pretraining"] == PretrainOptions(holdout_clips=2, num_workers=0, eval_every=0, cache_mib=64)
    assert params["ingest"].workers == 3  # --workers stays ingestion's
