"""The command line: help that explains itself, config errors that stop before anything runs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from grl_aecnn.cli import EXIT_CONFIG, build_parser, main


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grl_aecnn.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_help_lists_every_command() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    expected = {"run", "train-backbone", "train-codecs", "train-policy", "evaluate", "config", "submit", "jobs",
                "resume"}
    assert expected <= set(commands.choices)
    listed = {a.dest for a in commands._choices_actions if a.help}  # each command has a help line
    assert listed == set(commands.choices)
    for command in ("run", "train-backbone", "config show"):
        sub = _cli(*command.split(), "--help")
        assert sub.returncode == 0 and "--config" in sub.stdout and "--set" in sub.stdout


def test_config_show_prints_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "backbone.epochs=9"]) == 0
    assert "epochs: 9" in capsys.readouterr().out


def test_config_error_exits_2_with_one_line_and_starts_nothing(tmp_path: Path) -> None:
    res = _cli("run", "--set", f"output_dir={tmp_path}", "--set", "backbone.lr=-1", cwd=tmp_path)
    assert res.returncode == EXIT_CONFIG
    assert res.stderr.strip().splitlines() == [
        "grl-aecnn: config error: backbone.lr: Input should be greater than 0 (got -1)"]
    assert not any(tmp_path.iterdir())
