"""The same input and options give a byte-identical model and report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("extra", [[], ["--criterion", "fpgm", "--ratio", "0.3", "--global"]])
def test_two_runs_identical(tmp_path: Path, extra: list[str]) -> None:
    outputs = []
    for i in range(2):
        out, report = tmp_path / f"o{i}.onnx", tmp_path / f"r{i}.json"
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxprune",
                "prune",
                str(FIXTURES / "yolo_like.onnx"),
                "-o",
                str(out),
                "--report",
                str(report),
                "-q",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        outputs.append((out.read_bytes(), report.read_text().replace(str(out), "OUT")))
    assert outputs[0][0] == outputs[1][0]
    assert outputs[0][1] == outputs[1][1]
