"""Tiny models shared by the latency tests."""

from __future__ import annotations

import onnx

from onnxprune.testing import GraphBuilder


def three_unit_chain() -> onnx.ModelProto:
    """Three units of 32 channels (convs a, b, c); the last conv's outputs are the graph's."""
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [1, 3, 8, 8])
    for _ in range(3):
        x = b.op("Relu", b.conv(x, 32))
    b.output(b.op("Flatten", b.op("GlobalAveragePool", b.conv(x, 4, k=1, pads=0)), axis=1))
    return b.build()
