"""Reshape, Flatten, Transpose, channel shuffle, Squeeze/Unsqueeze, Gemm and MatMul."""

from __future__ import annotations

import numpy as np
from conftest import channels, kept_reasons, prune_exact

from onnxprune.testing import GraphBuilder


def test_flatten_to_gemm_repeats_ids(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 4, 4])
    y = builder.op("Relu", builder.conv(x, 6, zero=(1, 4)))
    f = builder.op("Flatten", y, axis=1, channels=96)
    builder.output(builder.gemm(f, 96, 5))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)
    gemm_w = next(i for i in r.model.graph.initializer if i.name.startswith("fcW"))
    assert list(gemm_w.dims) == [5, 64]


def test_reshape_with_explicit_feature_count_is_rewritten(builder: GraphBuilder) -> None:
    x = builder.input("x", [1, 3, 4, 4])
    y = builder.op("Relu", builder.conv(x, 6, zero=(2,)))
    f = builder.op("Reshape", y, builder.const(np.array([1, 96], np.int64), "shape"), channels=96)
    builder.output(builder.gemm(f, 96, 5, trans_b=False))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)
    assert any(
        list(np.frombuffer(i.raw_data, np.int64)) == [1, 80] for i in r.model.graph.initializer if i.data_type == 7
    )


def test_reshape_minus_one_with_dynamic_batch(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 4, 4])
    y = builder.op("Relu", builder.conv(x, 6, zero=(0, 5)))
    f = builder.op("Reshape", y, builder.const(np.array([0, -1], np.int64), "shape"), channels=96)
    builder.output(builder.gemm(f, 96, 5))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)


def test_channel_shuffle_permutation(builder: GraphBuilder) -> None:
    x = builder.input("x", [1, 3, 4, 4])
    a = builder.op("Relu", builder.conv(x, 4, zero=(1,)))
    c = builder.op("Relu", builder.conv(x, 4, zero=(1, 2)))
    cat = builder.op("Concat", a, c, axis=1, channels=8)
    s = builder.op("Reshape", cat, builder.const(np.array([1, 2, 4, 4, 4], np.int64), "s"))
    t = builder.op("Transpose", s, perm=[0, 2, 1, 3, 4])
    y = builder.op("Reshape", t, builder.const(np.array([1, 8, 4, 4], np.int64), "s"), channels=8)
    builder.output(builder.conv(y, 3))
    r = prune_exact(builder.build())
    src = r.analysis.sources
    # position k of both halves is one channel after the shuffle: only k=1 is zero in both.
    assert channels(r)[src[0].node] == (4, 3)
    assert channels(r)[src[1].node] == (4, 3)


def test_transpose_to_channels_last_matmul(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 4, 4])
    y = builder.op("Relu", builder.conv(x, 6, zero=(3,)))
    t = builder.op("Transpose", y, perm=[0, 2, 3, 1])
    w = builder.weights([6, 5])
    m = builder.op("MatMul", t, builder.const(w, "mm"))
    builder.output(m)
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_matmul_zero_column_removed(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 8])
    w1 = builder.weights([8, 6], zero_rows=(2, 4), axis=1)
    h = builder.op("Relu", builder.op("MatMul", x, builder.const(w1, "w1")))
    builder.output(builder.op("MatMul", h, builder.const(builder.weights([6, 3]), "w2")))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)


def test_gemm_chain_with_bias_fold(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 8])
    h = builder.gemm(x, 8, 6, zero=(1,))
    # A zero row with a nonzero bias is a constant: Gemm readers fold it into C exactly.
    bias_name = builder.nodes[-1].input[2]
    init = next(i for i in builder.inits if i.name == bias_name)
    from onnx import numpy_helper

    b = numpy_helper.to_array(init).copy()
    b[1] = 0.75
    init.CopyFrom(numpy_helper.from_array(b, bias_name))
    h = builder.op("Sigmoid", h)
    builder.output(builder.gemm(h, 6, 3))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_squeeze_unsqueeze(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 3, 4, 4])
    y = builder.op("GlobalAveragePool", builder.op("Relu", builder.conv(x, 6, zero=(2,))))
    s = builder.op("Squeeze", y, builder.const(np.array([2, 3], np.int64), "ax"))
    u = builder.op("Unsqueeze", s, builder.const(np.array([2, 3], np.int64), "ax"))
    builder.output(builder.conv(u, 3, k=1, pads=0))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_reshape_mixing_channels_into_batch_pins(builder: GraphBuilder) -> None:
    x = builder.input("x", [1, 4, 4, 4])
    y = builder.op("Relu", builder.conv(x, 6, zero=(2,)))
    # [1, 6, 4, 4] -> [6, 16]: the channel axis becomes the batch axis, read by a reduction.
    f = builder.op("Reshape", y, builder.const(np.array([6, 16], np.int64), "s"))
    builder.output(builder.op("Softmax", f, axis=0))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 6)
    assert any("Softmax" in reason for reason in kept_reasons(r))


def test_matmul_reader_gets_bias_for_folded_constant(builder: GraphBuilder) -> None:
    x = builder.input("x", [None, 4, 8])
    w1 = builder.weights([8, 6], zero_rows=(1, 3), axis=1)
    h = builder.op("MatMul", x, builder.const(w1, "w1"))
    h = builder.op("Add", h, builder.const(np.linspace(-1, 1, 6).astype(np.float32), "b1"))
    h = builder.op("Gelu", h) if builder.opset >= 20 else builder.op("Sigmoid", h)  # constants 1 and 3 nonzero
    builder.output(builder.op("MatMul", h, builder.const(builder.weights([6, 3]), "w2")))
    r = prune_exact(builder.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)
    assert any(n.op_type == "Add" and "folded" in "".join(n.input) for n in r.model.graph.node)
