"""Broadcasting element-wise ops: merged ids, per-channel constant operands, zero rules."""

from __future__ import annotations

import numpy as np
from conftest import channels, kept_reasons, prune_exact

from onnxprune.testing import GraphBuilder


def test_residual_add_needs_both_sides_zero(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    a = builder.op("Relu", builder.conv(x, 8, zero=(1, 2, 5)))
    c = builder.conv(a, 8, zero=(2, 5, 7))
    y = builder.op("Relu", builder.op("Add", a, c))
    builder.output(builder.conv(y, 4))
    r = prune_exact(builder.build())
    s = r.analysis.sources
    # 2 and 5 are zero on both sides; 1 and 7 only on one. Group = same channel of both convs.
    assert channels(r)[s[0].node] == (8, 6)
    assert channels(r)[s[1].node] == (8, 6)


def test_per_channel_constant_operand_is_sliced(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    offset = builder.const(
        np.zeros((1, 6, 1, 1), np.float32) + np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1) * 0, "off"
    )
    scale = builder.const(np.arange(1, 7, dtype=np.float32).reshape(1, 6, 1, 1), "scale")
    y = builder.op("Mul", builder.op("Add", builder.conv(x, 6, zero=(2, 4)), offset), scale)
    y = builder.op("Sub", y, builder.const(np.float32(0.0), "zero"))
    builder.output(builder.conv(y, 3))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)
    assert sum(1 for i in r.model.graph.initializer if list(i.dims) == [1, 4, 1, 1]) == 2


def test_nonzero_per_channel_offset_makes_constant(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    offset = builder.const(np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1), "off")
    y = builder.op("Add", builder.conv(x, 6, zero=(0, 4)), offset)  # channel 0 -> 0, channel 4 -> 4
    builder.output(builder.conv(y, 3, k=3, pads=1))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_se_gate_zero_channel_whatever_the_gate(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    f = builder.op("Relu", builder.conv(x, 8, zero=(3, 6)))
    s = builder.op("GlobalAveragePool", f)
    s = builder.op("Relu", builder.conv(s, 2, k=1, pads=0))
    s = builder.op("Sigmoid", builder.conv(s, 8, k=1, pads=0))
    y = builder.op("Mul", f, s)
    builder.output(builder.conv(y, 4))
    r = prune_exact(builder.build())
    src = {s.node: s for s in r.analysis.sources}
    names = list(src)
    assert channels(r)[names[0]] == (8, 6)
    assert channels(r)[names[2]] == (8, 6)  # the SE expand conv loses the same channels


def test_untracked_full_size_operand_pins(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    other = builder.input("other", [None, 6, 8, 8])
    y = builder.op("Add", builder.conv(x, 6, zero=(1,)), other)
    builder.output(builder.conv(y, 3))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 6)
    assert any("has the channel dimension but no channel ids" in reason for reason in kept_reasons(r))


def test_where_and_max(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    a = builder.conv(x, 6, zero=(2,))
    c = builder.conv(x, 6, zero=(2, 3))
    m = builder.op("Max", a, c)
    cond = builder.op("Greater", a, builder.const(np.float32(0.0), "z"))
    w = builder.op("Where", cond, m, a)
    builder.output(builder.conv(w, 3))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)
