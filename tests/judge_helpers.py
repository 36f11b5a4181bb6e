"""The tiny classifier the search-judge tests (test_unseen, test_unseen_bound) share: its one
low-norm channel moves a known margin and nothing else."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.testing import GraphBuilder


def margin_classifier() -> onnx.ModelProto:
    """x [N, 3, 1, 1] -> 1x1 Conv (channels x0, x1, 0.5 * x2) -> Flatten -> Gemm: class 0 =
    x0 + x2, class 1 = x1. The third channel has the lowest L2 norm (0.5): removing it (0,
    no compensation) takes x2 from class 0's score, a margin loss of x2, and changes nothing else."""
    b = GraphBuilder(opset=17, seed=0)
    x = b.input("x", [None, 3, 1, 1])
    w = np.diag([1.0, 1.0, 0.5]).astype(np.float32).reshape(3, 3, 1, 1)
    conv = b.conv(x, 3, k=1, pads=0, bias=False, weight=b.const(w, "W"))
    flat = b.op("Flatten", conv, axis=1)
    g = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]], np.float32)
    b.output(b.op("Gemm", flat, b.const(g, "G"), b.const(np.zeros(2, np.float32), "g"), channels=2, transB=1))
    return b.build()


def identity_classifier(batch: int | None = None) -> onnx.ModelProto:
    """x [batch, 2, 1, 1] -> 1x1 Conv (identity) -> Flatten -> Gemm (identity): the class
    scores are the input's two channels, and the Conv's channels are prunable."""
    b = GraphBuilder(opset=17, seed=0)
    x = b.input("x", [batch, 2, 1, 1])
    eye = np.eye(2, dtype=np.float32)
    conv = b.conv(x, 2, k=1, pads=0, bias=False, weight=b.const(eye.reshape(2, 2, 1, 1), "W"))
    flat = b.op("Flatten", conv, axis=1)
    b.output(b.op("Gemm", flat, b.const(eye, "G"), b.const(np.zeros(2, np.float32), "g"), channels=2, transB=1))
    return b.build()
