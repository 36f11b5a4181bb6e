"""Shapes computed at run time from Shape() (torch exports with dynamic axes)."""

from __future__ import annotations

import numpy as np
from conftest import channels, kept_reasons, prune_exact

from onnxprune.testing import GraphBuilder


def _dim(b: GraphBuilder, x: str, i: int) -> str:
    """Shape(x)[i] as a 1-element int64 tensor, the way torch's tracer writes x.size(i)."""
    g = b.op("Gather", b.op("Shape", x), b.const(np.array(i, np.int64), "idx"), axis=0)
    return b.op("Unsqueeze", g, b.const(np.array([0], np.int64), "ax"))


def test_view_batch_minus_one() -> None:
    b = GraphBuilder(opset=13)
    x = b.input("x", [None, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(1, 3)))
    shape = b.op("Concat", _dim(b, y, 0), b.const(np.array([-1], np.int64), "m1"), axis=0)
    f = b.op("Reshape", y, shape, channels=96)
    b.output(b.gemm(f, 96, 5))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)


def test_chunk_and_runtime_channel_shuffle() -> None:
    """ShuffleNetV2 as torch exports it: x.chunk(2, 1) with Slice bounds from Shape, and
    x.view(n, 2, c // 2, h, w) with c read from the shape."""
    b = GraphBuilder(opset=13)
    x = b.input("x", [None, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 8, zero=(1, 5, 6)))
    c = b.op("Gather", b.op("Shape", y), b.const(np.array([1], np.int64), "i1"), axis=0)
    half = b.op("Div", b.op("Add", c, b.const(np.array([1], np.int64), "one")), b.const(np.array([2], np.int64), "two"))
    ax = b.const(np.array([1], np.int64), "ax")
    left = b.op("Slice", y, b.const(np.array([0], np.int64), "z"), half, ax, channels=4)
    right = b.op("Slice", y, half, b.op("Mul", half, b.const(np.array([2], np.int64), "two")), ax, channels=4)
    r2 = b.op("Relu", b.conv(right, 4, k=1, pads=0, zero=(1,)))
    cat = b.op("Concat", left, r2, axis=1, channels=8)
    cc = b.op("Gather", b.op("Shape", cat), b.const(np.array(1, np.int64), "i1"), axis=0)
    per = b.op(
        "Unsqueeze", b.op("Div", cc, b.const(np.array(2, np.int64), "two")), b.const(np.array([0], np.int64), "a0")
    )
    shape1 = b.op(
        "Concat", _dim(b, cat, 0), b.const(np.array([2], np.int64), "g"), per, _dim(b, cat, 2), _dim(b, cat, 3), axis=0
    )
    s = b.op("Reshape", cat, shape1)
    t = b.op("Transpose", s, perm=[0, 2, 1, 3, 4])
    shape2 = b.op("Concat", _dim(b, cat, 0), _dim(b, cat, 1), _dim(b, cat, 2), _dim(b, cat, 3), axis=0)
    out = b.op("Reshape", t, shape2, channels=8)
    b.output(b.conv(out, 3), shape=[None, 3, 4, 4])
    r = prune_exact(b.build())
    # The shuffle ties left[k] to r2[k]: left[1] = y1 and r2[1] are both zero, so they go.
    # y5 and y6 (right half) are zero and read only by the right conv, but the chunk needs both
    # halves to lose the same count: one of them stays.
    src = r.analysis.sources
    assert channels(r)[src[0].node] == (8, 6)
    assert channels(r)[src[1].node] == (4, 3)
    assert any("fractions (1/2) of the channel count" in reason for reason in kept_reasons(r))


def test_channel_count_used_by_expand_pins() -> None:
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(2,)))
    ones = b.op("Expand", b.const(np.ones((1, 1, 1, 1), np.float32), "one"), b.op("Shape", y), channels=6)
    b.output(b.conv(b.op("Add", b.conv(y, 6), ones), 2))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 6)
    assert any("reads the channel count" in reason for reason in kept_reasons(r))


def test_resize_sizes_from_shapes() -> None:
    """Segmentation heads: Resize(x, sizes = Shape(x)[:2] ++ Shape(skip)[2:])."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 8, 8])
    skip = b.op("Relu", b.conv(x, 4, zero=(1,)))  # 8x8, its channel 1 is zero
    y = b.op("Relu", b.conv(skip, 6, stride=2, zero=(2, 3)))  # 4x4
    head = b.op("Shape", y, start=0, end=2)
    hw = b.op("Shape", skip, start=2)
    sizes = b.op("Concat", head, hw, axis=0)
    up = b.op("Resize", y, "", "", sizes, mode="nearest")
    b.output(b.conv(up, 2, k=1, pads=0), shape=[1, 2, 8, 8])
    r = prune_exact(b.build())
    src = r.analysis.sources
    assert channels(r)[src[1].node] == (6, 4)
    assert channels(r)[src[0].node] == (4, 3)  # the skip's shape is read, but only its H and W
