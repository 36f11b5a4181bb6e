"""Unary ops: ids pass through; constants are mapped so 0 -> f(0) is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import channels, kept_reasons, prune_exact

from onnxprune.testing import GraphBuilder

# op, attrs, whether f(0) == 0
UNARY = [
    ("Relu", {}, True),
    ("LeakyRelu", {"alpha": 0.1}, True),
    ("Elu", {"alpha": 1.0}, True),
    ("Tanh", {}, True),
    ("HardSwish", {}, True),
    ("Mish", {}, True),
    ("Softsign", {}, True),
    ("Identity", {}, True),
    ("Dropout", {}, True),
    ("Sigmoid", {}, False),
    ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, False),
    ("Softplus", {}, False),
    ("Exp", {}, False),
]


@pytest.mark.parametrize("op, attrs, keeps_zero", UNARY, ids=[u[0] for u in UNARY])
def test_unary_with_padded_reader(op: str, attrs: dict, keeps_zero: bool) -> None:
    b = GraphBuilder(opset=18)  # Mish needs 18
    x = b.input("x", [None, 3, 8, 8])
    y = b.op(op, b.conv(x, 6, zero=(1, 4)), **attrs)
    b.output(b.conv(y, 3, k=3, pads=1))
    r = prune_exact(b.build())
    first = r.analysis.sources[0].node
    # f(0) != 0 is a nonzero constant: exact to fold only without padding, so it stays here.
    assert channels(r)[first] == ((6, 4) if keeps_zero else (6, 6))
    if not keeps_zero:
        assert any("zero padding" in reason for reason in kept_reasons(r))


@pytest.mark.parametrize("op, attrs", [(u[0], u[1]) for u in UNARY if not u[2]])
def test_nonzero_constant_folded_into_1x1(op: str, attrs: dict) -> None:
    b = GraphBuilder(opset=18)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op(op, b.conv(x, 6, zero=(1, 4)), **attrs)
    b.output(b.conv(y, 3, k=1, pads=0))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)


def test_gelu_opset20() -> None:
    b = GraphBuilder(opset=20)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op("Gelu", b.conv(x, 6, zero=(2,)))
    b.output(b.conv(y, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_clip_min_max_as_inputs(opset: int) -> None:
    b = GraphBuilder(opset=opset)
    x = b.input("x", [None, 3, 8, 8])
    lo, hi = b.const(np.array(0.0, np.float32), "min"), b.const(np.array(6.0, np.float32), "max")
    y = b.op("Clip", b.conv(x, 6, zero=(0, 5)), lo, hi)
    b.output(b.conv(y, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)


def test_clip_attributes_opset6() -> None:
    from onnx import helper

    b = GraphBuilder(opset=11)
    x = b.input("x", [None, 3, 8, 8])
    c = b.conv(x, 6, zero=(3,))
    y = b.op("Relu", c)
    b.output(b.conv(y, 3))
    model = b.build()
    del helper
    r = prune_exact(model)
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_prelu_per_channel_slope_sliced() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    slope = b.const(np.linspace(0.1, 0.6, 6).astype(np.float32).reshape(6, 1, 1), "slope")
    y = b.op("PRelu", b.conv(x, 6, zero=(1, 2)), slope)
    b.output(b.conv(y, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)
    sliced = [i for i in r.model.graph.initializer if list(i.dims) == [4, 1, 1]]
    assert sliced


def test_silu_as_sigmoid_mul() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    c = b.conv(x, 6, zero=(0, 3))
    y = b.op("Mul", c, b.op("Sigmoid", c))  # 0 * sigmoid(0) = 0
    b.output(b.conv(y, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)
