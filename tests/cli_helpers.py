"""What the CLI tests share: run the command line as a subprocess (the exit code and the single
error line matter), and a small CNN every criterion has something to score in."""

from __future__ import annotations

import subprocess
import sys

import onnx

from onnxprune.testing import GraphBuilder

__all__ = ["one_line_error", "run_cli", "small_cnn"]


def run_cli(*args: str, cwd: object = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxprune", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def one_line_error(p: subprocess.CompletedProcess, code: int = 2) -> str:
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def small_cnn(shape: tuple[int | str | None, ...] = (None, 3, 8, 8), seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-Relu, global pool, Gemm: every criterion has something to score."""
    b = GraphBuilder(opset=17, seed=seed)
    x = b.input("input", shape)
    b.channels[x] = 3
    y = b.op("Relu", b.bn(b.conv(x, 8)))
    y = b.op("Relu", b.conv(y, 8))
    y = b.op("Flatten", b.op("GlobalAveragePool", y), channels=8)
    b.output(b.gemm(y, 8, 4))
    return b.build()
