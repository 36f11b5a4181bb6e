"""Parameters as initializers, Constant nodes and Identity; shared initializers; opsets 11-21."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import channels, prune_exact
from onnx import helper, numpy_helper

import onnxprune
from onnxprune.testing import GraphBuilder


def test_constant_node_and_identity_parameters() -> None:
    b = GraphBuilder(opset=13)
    x = b.input("x", [None, 3, 8, 8])
    w = b.const(b.weights([6, 3, 3, 3], zero_rows=(1, 4)), "W", as_node=True)
    w_id = b.op("Identity", w)
    bias = b.const(np.zeros(6, np.float32), "B")
    bias_id = b.op("Identity", bias)
    y = b.op("Relu", b.op("Conv", x, w_id, bias_id, channels=6, kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    b.output(b.conv(y, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)


def test_shared_initializer_copy_on_write() -> None:
    """Two convs read one weight (torch dedups equal tensors); only one loses input channels."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    a = b.op("Relu", b.conv(x, 4, zero=(2,)))
    c = b.op("Relu", b.conv(x, 4))
    shared = b.const(b.weights([5, 4, 3, 3]), "shared")
    ya = b.conv(a, 5, weight=shared, bias=False)
    yc = b.conv(c, 5, weight=shared, bias=False)
    b.output(b.op("Add", ya, yc))
    model = b.build()
    r = prune_exact(model)
    assert channels(r)[r.analysis.sources[0].node] == (4, 3)
    dims = sorted(tuple(i.dims) for i in r.model.graph.initializer if i.name.startswith("shared"))
    assert dims == [(5, 3, 3, 3), (5, 4, 3, 3)]
    # the untouched reader keeps the original tensor and its name
    assert any(i.name == shared and tuple(i.dims) == (5, 4, 3, 3) for i in r.model.graph.initializer)


def test_shared_initializer_same_edit_stays_shared() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    a = b.op("Relu", b.conv(x, 4, zero=(2,)))
    shared = b.const(b.weights([5, 4, 1, 1]), "shared")
    out = b.op("Add", b.conv(a, 5, k=1, weight=shared, bias=False), b.conv(a, 5, k=1, weight=shared, bias=False))
    b.output(out)
    r = prune_exact(b.build())
    shared_inits = [i for i in r.model.graph.initializer if i.name.startswith("shared")]
    assert [tuple(i.dims) for i in shared_inits] == [(5, 3, 1, 1)]


@pytest.mark.parametrize("opset", [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21])
def test_residual_across_opsets(opset: int) -> None:
    b = GraphBuilder(opset=opset)
    x = b.input("x", [None, 3, 8, 8])
    stem = b.op("Relu", b.bn(b.conv(x, 8, zero=(1, 5)), zero=(1, 5)))
    h = b.bn(b.conv(stem, 8, zero=(1, 5, 6)), zero=(1, 5, 6))
    y = b.op("Relu", b.op("Add", stem, h))
    sq = b.op(
        "Squeeze",
        b.op("GlobalAveragePool", y),
        *([b.const(np.array([2, 3], np.int64), "ax")] if opset >= 13 else []),
        **({} if opset >= 13 else {"axes": [2, 3]}),
    )
    b.output(b.gemm(sq, 8, 4))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (8, 6)
    assert r.model.opset_import[0].version == opset


def test_model_fields_kept_and_input_untouched() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, 8, 8])
    b.output(b.conv(b.op("Relu", b.conv(x, 6, zero=(0,))), 2))
    model = b.build()
    model.doc_string = "my model"
    model.model_version = 7
    helper.set_model_props(model, {"author": "someone"})
    before = model.SerializeToString()
    r = prune_exact(model)
    assert model.SerializeToString() == before
    assert r.model.doc_string == "my model" and r.model.model_version == 7
    assert {p.key: p.value for p in r.model.metadata_props} == {"author": "someone"}
    assert r.model.ir_version == model.ir_version
    assert [n.name for n in r.model.graph.node] == [n.name for n in model.graph.node]


def test_dynamic_spatial_dims_need_input_shape() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 3, "H", "W"])
    b.output(b.conv(b.op("Relu", b.conv(x, 6, zero=(0,))), 2))
    model = b.build()
    with pytest.raises(onnxprune.UnsupportedModel, match=r"input_shapes=\{'x': \("):
        onnxprune.prune(model)
    r = prune_exact(model, input_shapes={"x": (1, 3, 8, 8)})
    assert channels(r)[r.analysis.sources[0].node] == (6, 5)


def test_qdq_fixture_per_channel_scales_sliced() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "fixtures" / "residual_qdq.onnx"
    model = onnx.load(path)
    r = prune_exact(model)
    assert r.report.channels_removed > 0
    # every per-channel weight scale matches its int8 weight's first dimension
    inits = {i.name: i for i in r.model.graph.initializer}
    for node in r.model.graph.node:
        if (
            node.op_type == "DequantizeLinear"
            and node.input[0] in inits
            and inits[node.input[0]].data_type == onnx.TensorProto.INT8
        ):
            w, s = inits[node.input[0]], inits[node.input[1]]
            if len(s.dims) == 1 and len(w.dims) > 1:
                assert s.dims[0] == w.dims[0]
    # int8 zero filters are found exactly like float ones: same channels as the float fixture
    float_model = onnx.load(path.with_name("residual.onnx"))
    assert r.report.channels_removed == onnxprune.prune(float_model).report.channels_removed
    assert numpy_helper is not None


def test_float_weight_with_quantize_dequantize_pair() -> None:
    """NNCF's export: float weights behind QuantizeLinear -> DequantizeLinear, per-channel."""
    b = GraphBuilder(opset=13)
    x = b.input("x", [None, 3, 8, 8])
    w = b.weights([6, 3, 3, 3], zero_rows=(0, 4))
    scale = b.const((np.abs(w).reshape(6, -1).max(axis=1) / 127 + 1e-3).astype(np.float32), "ws")
    zp = b.const(np.zeros(6, np.int8), "wzp")
    q = b.op("QuantizeLinear", b.const(w, "wf"), scale, zp, axis=0)
    dq = b.op("DequantizeLinear", q, scale, zp, axis=0)
    a_scale, a_zp = b.const(np.float32(0.05), "as"), b.const(np.uint8(128), "azp")
    y = b.op("Conv", x, dq, b.const(np.zeros(6, np.float32), "B"), channels=6, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = b.op("DequantizeLinear", b.op("QuantizeLinear", b.op("Relu", y), a_scale, a_zp), a_scale, a_zp)
    b.output(b.conv(y, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 4)
    dims = {i.name: list(i.dims) for i in r.model.graph.initializer}
    assert [4, 3, 3, 3] in dims.values() and sum(1 for d in dims.values() if d == [4]) >= 3  # weight, scale, zp, bias
