"""The `echofm` command: every sub-command is wired in and starts without heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from echofm.cli import COMMAND_MODULES, build_parser, main


def test_every_command_module_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert name.replace("_", "-") in listed  # a command is its module's name, hyphenated


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES))
def test_every_command_prints_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse formats help text with %: a literal one (EF %) must be escaped or --help crashes.
    with pytest.raises(SystemExit) as exit_info:
        main([name.replace("_", "-"), "--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_bench_rejects_an_unknown_benchmark() -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["bench", "nonexistent"])
    assert exit_info.value.code == 2


def test_help_does_not_import_torch_or_prefect() -> None:
    # Start-up cost matters for every command; the heavy libraries load only in the stage that runs.
    code = "import sys; from echofm.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'prefect', 'mlflow', 'great_expectations') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
