"""Progress lines for logs: one per step, at most one per interval, the last always."""

from __future__ import annotations

import pytest

from grl_aecnn.progress import LogLines


def test_lines_are_rate_limited_and_the_last_always_printed(capsys: pytest.CaptureFixture[str]) -> None:
    lines = LogLines(interval_s=60)
    assert lines.enabled  # pytest's captured stderr is not a terminal
    for step in range(1, 6):
        lines(f"step {step}", final=step == 5)
    assert capsys.readouterr().out.splitlines() == ["step 1", "step 5"]


def test_every_line_when_the_interval_is_over(capsys: pytest.CaptureFixture[str]) -> None:
    lines = LogLines(interval_s=0)
    for step in range(3):
        lines(f"step {step}")
    assert capsys.readouterr().out.splitlines() == ["step 0", "step 1", "step 2"]
