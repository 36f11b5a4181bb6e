"""Concat, Split (attribute, input, num_outputs) and Slice on the channel axis."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import channels, prune_exact

from onnxprune.testing import GraphBuilder


def test_concat_maps_positions(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    a = builder.op("Relu", builder.conv(x, 4, zero=(1,)))
    c = builder.op("Relu", builder.conv(x, 6, zero=(0, 5)))
    cat = builder.op("Concat", a, c, axis=1, channels=10)
    builder.output(builder.conv(cat, 3))
    r = prune_exact(builder.build())
    s = r.analysis.sources
    assert channels(r)[s[0].node] == (4, 3)
    assert channels(r)[s[1].node] == (6, 4)


def test_concat_with_graph_input_pins_only_that_part(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    a = builder.op("Relu", builder.conv(x, 4, zero=(1, 2)))
    cat = builder.op("Concat", x, a, axis=1, channels=7)
    builder.output(builder.conv(cat, 3))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (4, 2)


@pytest.mark.parametrize("opset, style", [(11, "attr"), (13, "input"), (18, "num_outputs")])
def test_split_sizes_rewritten(opset: int, style: str) -> None:
    b = GraphBuilder(opset=opset)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op("Relu", b.conv(x, 8, zero=(1, 2, 6)))
    if style == "attr":
        p, q = b.op("Split", y, axis=1, split=[4, 4], outputs=2, channels=4)
    elif style == "input":
        p, q = b.op("Split", y, b.const(np.array([4, 4], np.int64), "split"), axis=1, outputs=2, channels=4)
    else:
        p, q = b.op("Split", y, axis=1, num_outputs=2, outputs=2, channels=4)
    b.output(b.op("Add", b.conv(p, 3), b.conv(q, 3)))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (8, 5)


def test_slice_bounds_rewritten(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 8, zero=(0, 3, 5, 7)))
    s = builder.op(
        "Slice",
        y,
        builder.const(np.array([2], np.int64), "st"),
        builder.const(np.array([6], np.int64), "en"),
        builder.const(np.array([1], np.int64), "ax"),
        channels=4,
    )
    t = builder.op(
        "Slice",
        y,
        builder.const(np.array([-3], np.int64), "st"),
        builder.const(np.array([2**62], np.int64), "en"),
        builder.const(np.array([1], np.int64), "ax"),
        channels=3,
    )
    builder.output(builder.conv(s, 2))
    builder.output(builder.conv(t, 2))
    r = prune_exact(builder.build())
    # zero: 3, 5, 7; read by no slice at all: 0, 1 (dead channels go too)
    assert channels(r)[r.analysis.sources[0].node] == (8, 3)


def test_slice_with_step_pins(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 8, zero=(0, 3)))
    s = builder.op(
        "Slice",
        y,
        builder.const(np.array([0], np.int64), "st"),
        builder.const(np.array([8], np.int64), "en"),
        builder.const(np.array([1], np.int64), "ax"),
        builder.const(np.array([2], np.int64), "sp"),
        channels=4,
    )
    builder.output(builder.conv(s, 2))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (8, 8)
