"""Graphs shared by the saving and file-replacement tests."""

from __future__ import annotations

import onnx

from onnxprune.testing import GraphBuilder


def wide_model() -> onnx.ModelProto:
    """Convs and a Gemm whose weights are far above the size from which they are deferred."""
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [1, 8, 6, 6])
    y = b.op("Relu", b.conv(x, 96, zero=(1, 5, 40)))
    y = b.op("Relu", b.conv(y, 96, zero=(0, 7)))
    y = b.op("Flatten", b.op("GlobalAveragePool", y), axis=1)
    b.output(b.gemm(y, 96, 300), shape=[1, 300])
    return b.build()
