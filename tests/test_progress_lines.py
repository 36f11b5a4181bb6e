"""--progress: a run whose stderr is not a terminal (CI, nohup) showed nothing for minutes; with
--progress lines it writes a plain line at each phase's start and end, and a few between."""

from __future__ import annotations

import io
import re
from pathlib import Path

from cli_helpers import run_cli

from onnxprune.cli_common import progress_bars

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_at_each_phases_start_and_end_and_few_between() -> None:
    stream, clock = io.StringIO(), _Clock()
    show = progress_bars(False, "lines", stream=stream, clock=clock, every=10.0)
    assert show is not None
    for step in range(101):  # one step a second: a line at 0, then every 10 s, and the last
        clock.now = float(step)
        show("search", step, 100)
    show("verification", 0, 2)
    clock.now = 170.0
    show("verification", 2, 2)
    show("search", 0, 3)  # a phase run again starts anew
    lines = stream.getvalue().splitlines()
    assert lines[0] == "onnxprune: search 0/100 (0%) after 0 s"
    assert lines[1] == "onnxprune: search 10/100 (10%) after 10 s"
    assert lines[10] == "onnxprune: search 100/100 (100%) after 1 min 40 s"
    assert lines[11:] == [
        "onnxprune: verification 0/2 (0%) after 0 s",
        "onnxprune: verification 2/2 (100%) after 1 min 10 s",
        "onnxprune: search 0/3 (0%) after 0 s",
    ]
    assert len(lines) == 14


def test_auto_is_a_bar_on_a_terminal_and_nothing_elsewhere() -> None:
    assert progress_bars(False, "auto", stream=io.StringIO()) is None  # logs stay clean
    assert progress_bars(True, "auto", stream=_Terminal()) is None  # -q
    assert progress_bars(False, "none", stream=_Terminal()) is None
    terminal = _Terminal()
    bar = progress_bars(False, "auto", stream=terminal)
    assert bar is not None
    bar("sensitivity", 1, 4)
    assert "sensitivity" in terminal.getvalue()
    assert progress_bars(True, "lines", stream=io.StringIO()) is not None  # asked for: shown with -q too


def test_prune_progress_lines_off_a_terminal(tmp_path: Path) -> None:
    """Before: no progress at all when stderr is not a terminal, and no way to ask for it."""
    args = ["prune", FIXTURES / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.3", "-q"]
    quiet = run_cli(*args)
    assert quiet.returncode == 0 and quiet.stderr == ""  # auto, off a terminal: nothing, as before
    p = run_cli(*args, "--progress", "lines")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert all(
        re.fullmatch(r"onnxprune: [a-z A-Z/]+ \d+/\d+ \(\d+%\) after (\d+ min )?\d+ s", line) for line in lines
    ), lines
    verification = [line.split(" after ")[0] for line in lines if line.startswith("onnxprune: verification ")]
    total = verification[0].split("/")[1].split()[0]  # the runs verification makes (batch 1 and 2)
    assert verification[0] == f"onnxprune: verification 0/{total} (0%)"
    assert verification[-1] == f"onnxprune: verification {total}/{total} (100%)"
    bad = run_cli(*args, "--progress", "dots")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "argument --progress: invalid choice: 'dots'" in bad.stderr
