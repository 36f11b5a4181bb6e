"""Conv (plain, depthwise, grouped) and ConvTranspose."""

from __future__ import annotations

import numpy as np
from conftest import channels, kept_reasons, prune_exact

from onnxprune.testing import GraphBuilder


def _conv_names(result):
    return [s.node for s in result.analysis.sources]


def test_zero_filters_removed_exactly(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 8, zero=(1, 3, 6)))
    builder.output(builder.conv(y, 4))
    r = prune_exact(builder.build())
    first, last = _conv_names(r)
    assert channels(r)[first] == (8, 5)
    assert channels(r)[last] == (4, 4)
    w = {i.name: i for i in r.model.graph.initializer}
    assert any(list(t.dims) == [4, 5, 3, 3] for t in w.values())


def test_nonzero_bias_folded_into_unpadded_reader(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    bias = np.array([0.5, -1.0, 0.25, 2.0], np.float32)
    y = builder.op("Relu", builder.conv(x, 4, zero=(0, 2), bias=bias))  # channels 0, 2 are constant 0.5, 0.25
    builder.output(builder.conv(y, 3, k=1, pads=0))
    r = prune_exact(builder.build())
    assert channels(r)[_conv_names(r)[0]] == (4, 2)


def test_nonzero_constant_kept_under_zero_padding(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    bias = np.array([0.5, -1.0, 0.0, 2.0], np.float32)
    y = builder.op("Relu", builder.conv(x, 4, zero=(0, 2), bias=bias))
    builder.output(builder.conv(y, 3, k=3, pads=1))
    r = prune_exact(builder.build())
    assert channels(r)[_conv_names(r)[0]] == (4, 3)  # only channel 2 (exactly 0) goes
    assert any("zero padding" in reason for reason in kept_reasons(r))


def test_depthwise_follows_its_input(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.bn(builder.conv(x, 8, zero=(2, 5)), zero=(2, 5)))
    d = builder.op("Relu", builder.conv(y, 8, group=8))
    builder.output(builder.conv(d, 4, k=1, pads=0))
    model = builder.build()
    r = prune_exact(model)
    assert channels(r)[_conv_names(r)[0]] == (8, 6)
    dw = next(
        n for n in r.model.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    )
    assert next(a.i for a in dw.attribute if a.name == "group") == 6


def test_depthwise_zero_filter_folds_its_bias(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 8))
    d = builder.conv(y, 8, group=8, zero=(3,), bias=np.linspace(-1, 1, 8).astype(np.float32))
    builder.output(builder.conv(builder.op("Relu", d), 4, k=1, pads=0))
    r = prune_exact(builder.build())
    assert channels(r)[_conv_names(r)[0]] == (8, 7)  # producer's channel 3 only fed the zero filter


def test_depthwise_multiplier(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 4, zero=(1,)))
    d = builder.op("Relu", builder.conv(y, 8, group=4, bias=False))  # multiplier 2
    builder.output(builder.conv(d, 4, k=1, pads=0))
    r = prune_exact(builder.build())
    assert channels(r)[_conv_names(r)[0]] == (4, 3)


def test_grouped_conv_needs_equal_count_per_group(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 8, zero=(0, 1)))  # both in group 0 of the grouped conv
    g = builder.op("Relu", builder.conv(y, 8, group=2))
    builder.output(builder.conv(g, 4, k=1, pads=0))
    r = prune_exact(builder.build())
    assert channels(r)[_conv_names(r)[0]] == (8, 8)
    assert any("every group must lose the same number" in reason for reason in kept_reasons(r))


def test_grouped_conv_balanced_removal(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 8, zero=(1, 6)))  # one in each group of 4
    g = builder.op("Relu", builder.conv(y, 12, group=2, zero=(0, 7)))  # one output in each group of 6
    builder.output(builder.conv(g, 4, k=1, pads=0))
    r = prune_exact(builder.build())
    names = _conv_names(r)
    assert channels(r)[names[0]] == (8, 6)
    assert channels(r)[names[1]] == (12, 10)
    grouped = next(n for n in r.model.graph.node if any(a.name == "group" and a.i == 2 for a in n.attribute))
    w = next(i for i in r.model.graph.initializer if i.name == grouped.input[1])
    assert list(w.dims) == [10, 3, 3, 3]


def test_conv_transpose(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 8, 8])
    y = builder.op("Relu", builder.conv(x, 6, zero=(4,)))
    w = builder.weights([6, 5, 2, 2], zero_rows=(1, 3), axis=1)
    up = builder.op(
        "ConvTranspose",
        y,
        builder.const(w, "Wt"),
        builder.const(np.zeros(5, np.float32), "Bt"),
        channels=5,
        kernel_shape=[2, 2],
        strides=[2, 2],
    )
    builder.output(builder.conv(builder.op("Relu", up), 2, k=1, pads=0))
    r = prune_exact(builder.build())
    names = _conv_names(r)
    assert channels(r)[names[0]] == (6, 5)
    assert channels(r)[names[1]] == (5, 3)
