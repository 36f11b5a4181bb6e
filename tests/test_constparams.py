"""Parameters computed from constants (issue 11 item 4) and dynamically quantized models (item 8).

Each pattern is a tiny graph written the way a real exporter writes it; it is pruned with the
zero criterion (zeroed filters: exact against the original) and with l2 (checked against the
original with the same filters zeroed), both checked independently with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import (
    assert_same_outputs,
    channels,
    kept_reasons,
    prune_exact,
    random_feeds,
    run,
)
from onnx import TensorProto, helper, numpy_helper

import onnxprune

RNG = np.random.default_rng(7)
ZEROED = (1, 5)


def _model(nodes: list, inits: list, cout: int = 4, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cout, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _weights(zero: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w1 = (RNG.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32)
    b1 = (RNG.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (RNG.standard_normal((4, 8, 3, 3)) * 0.5).astype(np.float32)
    if zero:
        w1[list(ZEROED)] = 0
        b1[list(ZEROED)] = 0
    return w1, b1, w2


def _const(name: str, values: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(values), name), name=f"{name}_node"
    )


def _bias_written(how: str, b1: np.ndarray) -> tuple[list, list]:
    """The bias [8] reaching Add as [1, 8, 1, 1], the ways exporters write it."""
    init = numpy_helper.from_array
    if how == "reshape_constant":  # older paddle2onnx: Add(conv, Reshape(Constant, [1, C, 1, 1]))
        return [_const("b", b1), helper.make_node("Reshape", ["b", "shape"], ["bias"])], [
            init(np.array([1, 8, 1, 1], np.int64), "shape")
        ]
    if how == "unsqueeze":
        return [helper.make_node("Unsqueeze", ["b", "axes"], ["bias"])], [
            init(b1, "b"),
            init(np.array([0, 2, 3], np.int64), "axes"),
        ]
    if how == "transpose":
        return [helper.make_node("Transpose", ["b"], ["bias"], perm=[0, 3, 1, 2])], [init(b1.reshape(1, 1, 1, 8), "b")]
    if how == "identity_constant":
        return [_const("b", b1.reshape(1, 8, 1, 1)), helper.make_node("Identity", ["b"], ["bias"])], []
    if how == "cast_fp16":
        return [helper.make_node("Cast", ["b"], ["bias"], to=TensorProto.FLOAT)], [
            init(b1.reshape(1, 8, 1, 1).astype(np.float16), "b")
        ]
    if how == "mul_squeeze":  # a scaled bias, rank 3, broadcast against [N, 8, H, W]
        return (
            [helper.make_node("Squeeze", ["b", "sq"], ["bs"]), helper.make_node("Mul", ["bs", "two"], ["bias"])],
            [
                init((b1 / 2).reshape(1, 8, 1, 1), "b"),
                init(np.array([0], np.int64), "sq"),
                init(np.float32(2.0), "two"),
            ],
        )
    raise AssertionError(how)


HOW = ["reshape_constant", "unsqueeze", "transpose", "identity_constant", "cast_fp16", "mul_squeeze"]


def _paddle_bias_model(how: str, zero: bool) -> onnx.ModelProto:
    w1, b1, w2 = _weights(zero)
    if how == "cast_fp16":
        b1 = b1.astype(np.float16).astype(np.float32)
    bias_nodes, bias_inits = _bias_written(how, b1)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        *bias_nodes,
        helper.make_node("Add", ["c1", "bias"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    return _model(nodes, [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), *bias_inits])


def _removed_rows(result: onnxprune.PruneResult, node: str) -> list[int]:
    removed = set(result.plan.removed_groups)
    src = next(s for s in result.analysis.sources if s.node == node)
    return [c for c, r in enumerate(result.analysis.roots(src.ids)) if int(r) in removed]


def _with_rows(model: onnx.ModelProto, values: dict[str, tuple[list[int], float]]) -> onnx.ModelProto:
    """A copy of ``model`` with rows of stored tensors (initializers or Constant nodes) set."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    tensors = {t.name: t for t in m.graph.initializer}
    tensors.update({n.output[0]: n.attribute[0].t for n in m.graph.node if n.op_type == "Constant"})
    for name, (rows, value) in values.items():
        arr = numpy_helper.to_array(tensors[name]).copy()
        flat = arr.reshape(-1) if arr.ndim and arr.shape[0] == 1 else arr  # [1, C, ...] biases
        flat[rows] = value
        tensors[name].CopyFrom(numpy_helper.from_array(arr, tensors[name].name))
    return m


@pytest.mark.parametrize("how", HOW)
def test_bias_written_through_constant_ops_is_sliced(how: str) -> None:
    model = _paddle_bias_model(how, zero=True)
    r = prune_exact(model)
    assert channels(r)["conv1"] == (8, 6)  # as with a plain initializer
    assert not any("no channel ids" in reason for reason in kept_reasons(r))
    assert [list(i.dims) for i in r.model.graph.initializer if i.name == "w1"] == [[6, 3, 3, 3]]


@pytest.mark.parametrize("how", ["reshape_constant", "cast_fp16", "mul_squeeze"])
def test_bias_written_through_constant_ops_l2(how: str) -> None:
    model = _paddle_bias_model(how, zero=False)
    r = onnxprune.prune(model, "l2", ratio=0.25, compensation="none")
    rows = _removed_rows(r, "conv1")
    assert len(rows) == 2
    bias_store = {"reshape_constant": "b", "cast_fp16": "b", "mul_squeeze": "b"}[how]
    zeroed = _with_rows(model, {"w1": (rows, 0.0), bias_store: (rows, 0.0)})
    assert_same_outputs(zeroed, r.model)


def test_conv_weights_in_constant_nodes() -> None:
    """picodet (paddle2onnx): every conv weight is a Constant node."""
    w1, b1, w2 = _weights(zero=True)
    nodes = [
        _const("w1", w1),
        _const("b1", b1),
        _const("w2", w2),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    model = _model(nodes, [])
    r = prune_exact(model)
    assert channels(r)["conv1"] == (8, 6)
    model = _model(nodes, [])
    lossy = onnxprune.prune(_with_rows(model, {"w1": ([0], 1.0)}), "l2", ratio=0.25, compensation="none")
    rows = _removed_rows(lossy, "conv1")
    assert_same_outputs(
        _with_rows(_with_rows(model, {"w1": ([0], 1.0)}), {"w1": (rows, 0.0), "b1": (rows, 0.0)}), lossy.model
    )


def _int8w_model(zero: bool) -> onnx.ModelProto:
    """ppocrv6 rec (tinyocr): INT8 initializer -> Cast -> Mul(per-channel scale) as each weight."""
    w1, b1, w2 = _weights(zero)
    nodes, inits = [], [numpy_helper.from_array(b1, "b1")]
    for name, w in (("w1", w1), ("w2", w2)):
        scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127
        scale = np.where(scale == 0, 1, scale).astype(np.float32).reshape(-1, 1, 1, 1)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        inits += [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(scale, f"{name}_scale")]
        nodes += [
            helper.make_node("Cast", [f"{name}_q"], [f"{name}_cast"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{name}_cast", f"{name}_scale"], [name]),
        ]
    nodes += [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    return _model(nodes, inits)


def _int8w_checks(pruned: onnx.ModelProto, kept: int) -> None:
    """The weights stay int8 in the file, sliced with their per-channel scales."""
    inits = {i.name: i for i in pruned.graph.initializer}
    assert inits["w1_q"].data_type == TensorProto.INT8 and list(inits["w1_q"].dims) == [kept, 3, 3, 3]
    assert list(inits["w1_scale"].dims) == [kept, 1, 1, 1]
    assert inits["w2_q"].data_type == TensorProto.INT8 and list(inits["w2_q"].dims) == [4, kept, 3, 3]
    assert list(inits["w2_scale"].dims) == [4, 1, 1, 1]
    assert not any(
        i.data_type == TensorProto.FLOAT and len(i.dims) == 4 and i.dims[2] == 3 for i in pruned.graph.initializer
    )


def test_weight_only_int8_cast_mul_is_sliced_as_int8() -> None:
    model = _int8w_model(zero=True)
    r = prune_exact(model)
    assert channels(r)["conv1"] == (8, 6)
    _int8w_checks(r.model, 6)


def test_weight_only_int8_l2() -> None:
    model = _int8w_model(zero=False)
    r = onnxprune.prune(model, "l2", ratio=0.25, compensation="none")
    rows = _removed_rows(r, "conv1")
    assert len(rows) == 2
    _int8w_checks(r.model, 6)
    assert_same_outputs(_with_rows(model, {"w1_q": (rows, 0), "b1": (rows, 0.0)}), r.model)


def test_shared_constant_subgraph_is_copied_on_write() -> None:
    """One Reshape(Constant) bias read after two convs: only the pruned one gets a sliced copy."""
    w1, b1, w2 = _weights(zero=True)
    w3 = (RNG.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32)
    bias_nodes, bias_inits = _bias_written("reshape_constant", b1)
    nodes = [
        *bias_nodes,
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Add", ["c1", "bias"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Conv", ["x", "w3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Add", ["c3", "bias"], ["a3"], name="add3"),
        helper.make_node("ReduceMean", ["a3"], ["m3"], axes=[1], keepdims=1),
        helper.make_node("Add", ["c2", "m3"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))] + bias_inits
    model = _model(nodes, inits)
    r = prune_exact(model)
    assert channels(r)["conv1"] == (8, 6) and channels(r)["conv3"] == (8, 8)
    g = r.model.graph
    add1 = next(n for n in g.node if n.name == "add1")
    add3 = next(n for n in g.node if n.name == "add3")
    shapes = {i.name: list(i.dims) for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    assert shapes.get(add1.input[1]) == [1, 6, 1, 1]
    assert add3.input[1] == "bias" and producers["bias"].op_type == "Reshape"  # untouched


# -- dynamically quantized (onnxruntime quantize_dynamic) ------------------------------------


def _quantize(w: np.ndarray) -> tuple[np.ndarray, np.uint8, np.float32]:
    """uint8 asymmetric per-tensor, 0 exactly representable (as quantize_dynamic does)."""
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = np.float32((hi - lo) / 255)
    zp = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
    return np.clip(np.rint(w / scale) + zp, 0, 255).astype(np.uint8), zp, scale


def _dynamic_model(zero: bool, depthwise: bool = False) -> onnx.ModelProto:
    """quantize_dynamic's form of Conv(+bias)->Relu->[depthwise Conv->Relu->]Conv(+bias):
    DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul(x_scale * w_scale) -> Add(Reshape(bias))."""
    w1, b1, w2 = _weights(zero)
    b2 = (RNG.standard_normal(4) * 0.1).astype(np.float32)
    layers = [(w1, b1, 1)]
    if depthwise:
        wd = (RNG.standard_normal((8, 1, 3, 3)) * 0.5).astype(np.float32)
        bd = (RNG.standard_normal(8) * 0.1).astype(np.float32)
        if zero:  # NNCF masks the depthwise filters of a pruned channel too
            wd[list(ZEROED)] = 0
            bd[list(ZEROED)] = 0
        layers.append((wd, bd, 8))
    layers.append((w2, b2, 1))
    nodes, inits = [], [numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64), "bshape")]
    x = "x"
    for i, (w, b, group) in enumerate(layers, start=1):
        q, zp, scale = _quantize(w)
        inits += [
            numpy_helper.from_array(q, f"w{i}_q"),
            numpy_helper.from_array(np.array(zp), f"w{i}_zp"),
            numpy_helper.from_array(np.array(scale), f"w{i}_scale"),
            numpy_helper.from_array(b, f"b{i}"),
        ]
        last = i == len(layers)
        out = "y" if last else f"a{i}"
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [f"{x}_q", f"{x}_s", f"{x}_z"], name=f"dql{i}"),
            helper.make_node("Mul", [f"{x}_s", f"w{i}_scale"], [f"s{i}"]),
            helper.make_node(
                "ConvInteger",
                [f"{x}_q", f"w{i}_q", f"{x}_z", f"w{i}_zp"],
                [f"ci{i}"],
                pads=[1, 1, 1, 1],
                group=group,
                name=f"conv{i}",
            ),
            helper.make_node("Cast", [f"ci{i}"], [f"cf{i}"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"cf{i}", f"s{i}"], [f"m{i}"]),
            helper.make_node("Reshape", [f"b{i}", "bshape"], [f"br{i}"]),
            helper.make_node("Add", [f"m{i}", f"br{i}"], [out]),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            x = f"r{i}"
    return _model(nodes, inits)


def test_dynamic_quantization_zero_is_exact() -> None:
    model = _dynamic_model(zero=True)
    r = prune_exact(model)
    assert channels(r)["conv1"] == (8, 6)
    inits = {i.name: i for i in r.model.graph.initializer}
    assert inits["w1_q"].data_type == TensorProto.UINT8 and list(inits["w1_q"].dims) == [6, 3, 3, 3]
    assert list(inits["w2_q"].dims) == [4, 6, 3, 3]
    assert r.report.macs_after < r.report.macs_before


def test_dynamic_quantization_depthwise() -> None:
    model = _dynamic_model(zero=True, depthwise=True)
    r = prune_exact(model)
    assert channels(r)["conv1"] == (8, 6)
    node = next(n for n in r.model.graph.node if n.name == "conv2")
    assert next(a.i for a in node.attribute if a.name == "group") == 6
    assert [list(i.dims) for i in r.model.graph.initializer if i.name == "w2_q"] == [[6, 1, 3, 3]]


def test_dynamic_quantization_l2_equals_zeroed_filters() -> None:
    model = _dynamic_model(zero=False)
    r = onnxprune.prune(model, "l2", ratio=0.25, compensation="none")
    rows = _removed_rows(r, "conv1")
    assert len(rows) == 2
    zp = int(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w1_zp")))
    zeroed = _with_rows(model, {"w1_q": (rows, zp), "b1": (rows, 0.0)})
    assert_same_outputs(zeroed, r.model)


def test_dynamic_quantization_matmul_integer() -> None:
    """MatMulInteger with a per-tensor weight zero point, as quantize_dynamic writes a MatMul."""
    w1 = (RNG.standard_normal((16, 8)) * 0.5).astype(np.float32)
    w1[:, list(ZEROED)] = 0
    w2 = (RNG.standard_normal((8, 4)) * 0.5).astype(np.float32)
    nodes, inits, x = [], [], "x"
    for i, w in enumerate((w1, w2), start=1):
        q, zp, scale = _quantize(w)
        inits += [
            numpy_helper.from_array(q, f"w{i}_q"),
            numpy_helper.from_array(np.array(zp), f"w{i}_zp"),
            numpy_helper.from_array(np.array(scale), f"w{i}_scale"),
        ]
        out = "y" if i == 2 else "m1"
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [f"{x}_q", f"{x}_s", f"{x}_z"]),
            helper.make_node("Mul", [f"{x}_s", f"w{i}_scale"], [f"s{i}"]),
            helper.make_node("MatMulInteger", [f"{x}_q", f"w{i}_q", f"{x}_z", f"w{i}_zp"], [f"mi{i}"], name=f"mm{i}"),
            helper.make_node("Cast", [f"mi{i}"], [f"mf{i}"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"mf{i}", f"s{i}"], [out]),
        ]
        if i == 1:
            nodes.append(helper.make_node("Relu", ["m1"], ["r1"]))
            x = "r1"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    r = prune_exact(model)
    assert channels(r)["mm1"] == (8, 6)
    assert [list(i.dims) for i in r.model.graph.initializer if i.name == "w2_q"] == [[6, 4]]


def test_static_qlinearconv_left_alone_with_reason() -> None:
    w1, b1, w2 = _weights(zero=True)
    q2, zp2, s2 = _quantize(w2)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in (
            (w1, "w1"),
            (b1, "b1"),
            (q2, "w2_q"),
            (np.array(zp2), "w2_zp"),
            (np.array(s2), "w2_s"),
            (np.array(np.float32(0.05)), "xs"),
            (np.array(np.uint8(128)), "xz"),
            (np.array(np.float32(0.1)), "ys"),
            (np.array(np.uint8(128)), "yz"),
        )
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("QuantizeLinear", ["c1", "xs", "xz"], ["q1"]),
        helper.make_node(
            "QLinearConv",
            ["q1", "xs", "xz", "w2_q", "w2_s", "w2_zp", "ys", "yz"],
            ["q2"],
            pads=[1, 1, 1, 1],
            name="qconv2",
        ),
        helper.make_node("DequantizeLinear", ["q2", "ys", "yz"], ["y"]),
    ]
    model = _model(nodes, inits)
    r = prune_exact(model)
    assert channels(r)["conv1"] == (8, 8)
    assert any("statically quantized QLinearConv" in reason for reason in kept_reasons(r))
    r = onnxprune.prune(model, "l2", ratio=0.25)
    assert channels(r)["conv1"] == (8, 8)
    feeds = random_feeds(model)
    for a, b in zip(run(model, feeds), run(r.model, feeds)):
        np.testing.assert_array_equal(a, b)


def test_quantize_dynamic_per_channel_matmul(tmp_path) -> None:
    """onnxruntime's own quantize_dynamic, per channel: MatMulInteger with zero points [N] and
    the weight scales [N] multiplied by the input's run-time scale; all sliced together."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    w1 = (RNG.standard_normal((16, 8)) * 0.5).astype(np.float32)
    w1[:, list(ZEROED)] = 0
    b1 = (RNG.standard_normal(8) * 0.1).astype(np.float32)
    b1[list(ZEROED)] = 0
    w2 = (RNG.standard_normal((8, 4)) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["y"], name="mm2"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "f.onnx")
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", per_channel=True, weight_type=QuantType.QUInt8)
    q = onnx.load(tmp_path / "q.onnx")
    ops = [n.op_type for n in q.graph.node]
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    r = prune_exact(q)
    mm1 = next(n.name for n in q.graph.node if n.op_type == "MatMulInteger" and n.input[1].startswith("w1"))
    assert channels(r)[mm1] == (8, 6)
    dims = {i.name: list(i.dims) for i in r.model.graph.initializer}
    per_channel = {name: d for name, d in dims.items() if name.startswith("w1") and d[-1:] == [6]}
    assert len(per_channel) >= 3  # the uint8 weight, its zero points and its scales, all [.., 6]
    assert dims[next(n for n in dims if n.startswith("w2_quantized"))] == [6, 4]


def test_constant_subgraphs_are_bounded() -> None:
    """A hostile file: 3,000 Cast nodes between a weight and its Conv are followed to
    params.MAX_CHAIN only (the Conv left alone), and Mul of [N, 1] and [1, N] constants (an
    outer product, never a scaled weight) is not computed."""
    import time

    from onnxprune.analysis import import_graph
    from onnxprune.params import ParamResolver

    w1, b1, w2 = _weights(zero=True)
    nodes = [
        helper.make_node("Cast", [f"c{i}" if i else "w_stored"], [f"c{i + 1}"], to=TensorProto.FLOAT)
        for i in range(3000)
    ]
    nodes += [
        helper.make_node("Conv", ["x", "c3000", "b1"], ["y0"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Conv", ["y0", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w_stored"), (b1, "b1"), (w2, "w2"))]
    start = time.perf_counter()
    analysis = onnxprune.analyze(_model(nodes, inits))
    assert time.perf_counter() - start < 30
    assert all(s.node != "conv" for s in analysis.sources)

    col = numpy_helper.from_array(np.ones((4000, 1), np.float32), "col")
    row = numpy_helper.from_array(np.ones((1, 4000), np.float32), "row")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["col", "row"], ["outer"])],
        "g",
        [],
        [helper.make_tensor_value_info("outer", TensorProto.FLOAT, [4000, 4000])],
        [col, row],
    )
    g = import_graph(helper.make_model(graph))
    assert ParamResolver()(g.nodes[0].outputs[0]) is None
