"""Pooling, Resize, Pad, Reduce, BatchNormalization, InstanceNormalization, channel-mixing norms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import channels, kept_reasons, prune_exact

from onnxprune.testing import GraphBuilder


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
        ("GlobalAveragePool", {}),
        ("GlobalMaxPool", {}),
        ("LpPool", {"kernel_shape": [2, 2], "p": 2}),
    ],
)
def test_pooling_passes_channels(op: str, attrs: dict) -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op(op, b.op("Relu", b.conv(x, 6, zero=(0, 4))), **attrs)
    b.output(b.conv(y, 3, k=1, pads=0))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)


@pytest.mark.parametrize("opset", [11, 13, 19])
def test_resize_nearest(opset: int) -> None:
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(1,)))
    roi = b.const(np.zeros(0, np.float32), "roi")
    up = b.op("Resize", y, roi, b.const(np.array([1, 1, 2, 2], np.float32), "scales"), mode="nearest")
    b.output(b.conv(up, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_pad_spatial_and_channel() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(2,)))
    p = b.op("Pad", y, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"), mode="reflect")
    z = b.op("Relu", b.conv(p, 5, zero=(4,), pads=0))
    q = b.op("Pad", z, b.const(np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64), "pads"), channels=6)  # pads channels
    b.output(b.conv(q, 3))
    r = prune_exact(b.build())
    src = r.analysis.sources
    assert channels(r)[src[0].node] == (6, 5)
    assert channels(r)[src[1].node] == (5, 5)
    assert any("pads the channel axis" in reason for reason in kept_reasons(r))


def test_reduce_mean_spatial_passes_reduce_over_channels_pins() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(2,)))
    m = b.op("ReduceMean", y, axes=[2, 3], keepdims=1)
    s = b.op("ReduceSum", b.op("Relu", b.conv(x, 4, zero=(1,))), b.const(np.array([1], np.int64), "ax"), keepdims=1)
    b.output(b.conv(m, 3, k=1, pads=0))
    b.output(s)
    r = prune_exact(b.build())
    src = r.analysis.sources
    assert channels(r)[src[0].node] == (6, 5)
    assert channels(r)[src[1].node] == (4, 4)
    assert any("reduces over a channel axis" in reason for reason in kept_reasons(r))


def test_batchnorm_beta_constant_folded() -> None:
    b = GraphBuilder(opset=13)
    x = b.input("x", [None, 3, 8, 8])
    c = b.conv(x, 6, zero=(1, 3))
    y = b.op("Relu", b.bn(c))  # BN keeps nonzero beta: channels 1, 3 are nonzero constants
    b.output(b.conv(y, 3, k=1, pads=0))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)
    assert any(list(i.dims) == [4] and "gamma" in i.name for i in r.model.graph.initializer)


def test_instance_normalization() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    c = b.conv(x, 6, zero=(0,))
    y = b.op("InstanceNormalization", c, b.const(np.ones(6, np.float32), "s"), b.const(np.zeros(6, np.float32), "b"))
    b.output(b.conv(b.op("Relu", y), 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_layer_normalization_over_channels_pins() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 4, 4])
    y = b.op("Transpose", b.conv(x, 6, zero=(0, 2)), perm=[0, 2, 3, 1])
    ln = b.op(
        "LayerNormalization", y, b.const(np.ones(6, np.float32), "g"), b.const(np.zeros(6, np.float32), "b"), axis=-1
    )
    b.output(b.op("MatMul", ln, b.const(b.weights([6, 2]), "w")))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 6)
    assert any("normalises across channels" in reason for reason in kept_reasons(r))
