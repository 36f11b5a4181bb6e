"""Unknown means untouched: every channel an op does not understand stays, with a reason."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import channels, kept_reasons, prune_exact
from onnx import TensorProto, helper

import onnxprune
from onnxprune.testing import GraphBuilder


def test_custom_domain_op_pins() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.conv(x, 6, zero=(1,))
    b.nodes.append(helper.make_node("MyOp", [y], ["custom"], domain="com.example", name="custom_node"))
    b.output(b.conv(b.op("Relu", y), 3))
    b.outputs.append(helper.make_tensor_value_info("custom", TensorProto.FLOAT, [1, 6, 4, 4]))
    model = b.build(domains={"com.example": 1})
    a = onnxprune.analyze(model)
    g = next(g for g in a.groups if (a.sources[0].node, 1) in g.members)
    assert any("MyOp" in r and "com.example" in r for r in g.pinned_by)


def test_softmax_over_channels_pins() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Softmax", b.conv(x, 6, zero=(1,)), axis=1)
    b.output(b.conv(y, 3))
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 6)
    assert any("Softmax has no rule" in reason for reason in kept_reasons(r))


def test_graph_output_pins() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.conv(x, 6, zero=(1, 2))
    b.output(y)
    r = prune_exact(b.build())
    assert channels(r)[r.analysis.sources[0].node] == (6, 6)
    assert any("reaches graph output" in reason for reason in kept_reasons(r))


def test_subgraph_reading_a_tensor_pins() -> None:
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Relu", b.conv(x, 6, zero=(1, 2)))
    then_out = helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, 6, 4, 4])
    then_g = helper.make_graph([helper.make_node("Identity", [y], ["then_out"])], "then", [], [then_out])
    else_out = helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 6, 4, 4])
    else_g = helper.make_graph([helper.make_node("Neg", [y], ["else_out"])], "else", [], [else_out])
    cond = b.const(np.array(True), "cond")
    b.nodes.append(helper.make_node("If", [cond], ["if_out"], then_branch=then_g, else_branch=else_g, name="if"))
    b.output(b.conv("if_out", 3) if False else "if_out")
    model = b.build()
    r = prune_exact(model)
    assert channels(r)[r.analysis.sources[0].node] == (6, 6)


def test_user_rule_for_custom_op_in_registry() -> None:
    """A user registers a rule for their own element-wise op; without it the channels pin."""
    from onnxprune.rules import UnaryRule, passthrough

    class Swish2Rule:
        op_types = ("Swish2",)
        domain = "com.example"

        def propagate(self, node, ctx):
            return passthrough(node, ctx, lambda c: c * 2)

        def apply(self, node, ctx):
            return None

    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.conv(x, 6, zero=(1,))
    b.nodes.append(helper.make_node("Swish2", [y], ["sw"], domain="com.example", name="sw"))
    b.channels["sw"] = 6
    out = b.conv("sw", 3)
    b.output(out)
    graph = helper.make_graph(
        b.nodes, "g", b.inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 3, 4, 4])], b.inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    default = onnxprune.analyze(model)
    assert all(g.pinned for g in default.groups if any(m[0] == default.sources[0].node for m in g.members))
    registry = onnxprune.default_registry().register(Swish2Rule())
    plan = onnxprune.plan(onnxprune.analyze(model, registry=registry))
    assert len(plan.removed_groups) == 1
    del UnaryRule
    assert onnxprune.default_registry().lookup("Swish2", "com.example") is None  # no global state


def test_qoperator_model_is_left_alone(tmp_path) -> None:
    """QLinearConv / QLinearMatMul (integer-only operators) have no rule: untouched, never a crash."""
    from pathlib import Path

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.data = iter([{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(2)])

        def get_next(self) -> dict | None:
            return next(self.data, None)

    src = Path(__file__).resolve().parent.parent / "fixtures" / "residual.onnx"
    dst = tmp_path / "q.onnx"
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator, weight_type=QuantType.QInt8)
    model = onnx.load(dst)
    assert any(n.op_type == "QLinearConv" for n in model.graph.node)
    r = prune_exact(model)
    assert r.report.channels_removed == 0


def _convs_inside_if() -> onnx.ModelProto:
    """Silero VAD's shape: all compute in the branches of one If (a Conv with a zero filter in
    each branch, reading the outer input and an outer-scope weight)."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[1] = 0
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])

    def branch(name: str, op: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4, 6, 6])
        nodes = [
            helper.make_node("Conv", ["x", "W"], [f"{name}_c"], pads=[1, 1, 1, 1], name=f"{name}_conv"),
            helper.make_node(op, [f"{name}_c"], [f"{name}_y"]),
        ]
        return helper.make_graph(nodes, name, [], [out])

    graph = helper.make_graph(
        [
            helper.make_node(
                "If", ["cond"], ["y"], then_branch=branch("then", "Relu"), else_branch=branch("else", "Neg")
            )
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [y_info],
        [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(np.array(True), "cond")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_convs_inside_an_if_are_named_as_not_analysed(tmp_path) -> None:
    import subprocess
    import sys

    model = _convs_inside_if()
    a = onnxprune.analyze(model)
    assert a.summary()["channels"] == 0
    assert len(a.not_analysed) == 1 and a.not_analysed[0].startswith("2 Conv nodes are inside the subgraphs of If ")
    assert "(else_branch, then_branch), which are not analysed: left untouched" in a.not_analysed[0]
    r = prune_exact(model)
    assert r.report.channels_removed == 0 and list(a.not_analysed) == [n for n in r.report.notes if "subgraphs" in n]
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    import onnxruntime as ort

    want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    got = ort.InferenceSession(r.model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)
    path = tmp_path / "if.onnx"
    onnx.save(model, path)
    for command in ("analyze", "explain"):
        p = subprocess.run(
            [sys.executable, "-m", "onnxprune", command, str(path)], capture_output=True, text=True, check=False
        )
        assert p.returncode == 0 and f"note: {a.not_analysed[0]}" in p.stdout, (command, p.stdout, p.stderr)
