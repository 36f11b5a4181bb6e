"""A user's rule for a custom weight-bearing op works everywhere, not only in the analysis.

``MyConv`` (domain com.example) is a model-local ONNX function whose body is a Conv
(testing.as_custom_op), so onnxruntime runs it while onnxprune sees an op it has no rule for. With
``MyConvRule(ConvRule)`` registered, every step (analysis, surgery, l2 scores, MACs, data-free
and calibration compensation, reconstruction, the fidelity budget) must give exactly what the
same model built with plain Conv gives: same plan, same MACs, same weights, same outputs.
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import onnxprune
from onnxprune.analysis import AnalysisContext
from onnxprune.compensation import data_free_values
from onnxprune.rules import ApplyContext, ConvRule, LayerSemantics, PropagateContext
from onnxprune.surgery import SurgeryContext
from onnxprune.testing import GraphBuilder, as_custom_op

RULES = Path(onnxprune.__file__).parent / "rules"


class MyConvRule(ConvRule):
    op_types = ("MyConv",)
    domain = "com.example"


def _model(custom: bool) -> onnx.ModelProto:
    """conv 3->8, BN, Relu, conv 8->6, Relu, global pool, Gemm 6->4; the convs as MyConv."""
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op("Relu", b.bn(b.conv(x, 8)))
    y = b.op("Relu", b.conv(y, 6))
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", y), axis=1, channels=6), 6, 4))
    m = b.build()
    if custom:
        m = as_custom_op(m, "Conv", "MyConv", "com.example")
        assert {n.op_type for n in m.graph.node} & {"Conv", "MyConv"} == {"MyConv"}
        onnx.checker.check_model(m)
    return m


def _registry() -> onnxprune.RuleRegistry:
    return onnxprune.default_registry().register(MyConvRule())


def _calib(tmp_path: Path, n: int = 16) -> str:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32))
    return str(path)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _report(result: onnxprune.PruneResult) -> dict:
    """The report as JSON with the op name unified and the file sizes left out (the custom
    model also carries its function)."""
    d = result.report.to_dict()
    for key in ("size_before", "size_after"):
        d.pop(key)
    if d.get("sensitivity"):
        d["sensitivity"].pop("seconds")
    return json.loads(json.dumps(d).replace("MyConv", "Conv"))


# conv1: 8 x 8 x 8 outputs x 3 x 3 x 3; conv2: 6 x 8 x 8 outputs x 8 x 3 x 3; Gemm: 4 x 6
MACS = 8 * 64 * 27 + 6 * 64 * 72 + 4 * 6


def test_without_the_rule_the_custom_op_is_pinned_and_not_counted() -> None:
    """The control: MyConv really is an op onnxprune knows nothing about."""
    r = onnxprune.prune(_model(custom=True), "l2", ratio=0.5)
    assert [s.op for s in r.analysis.sources] == ["Gemm"]  # the MyConv layers create no channels
    assert r.report.channels_removed == 0
    assert r.report.macs_before == 4 * 6  # the Gemm only


SCENARIOS = {
    "l2": {"ratio": 0.5, "compensation": "none"},
    "l2-data-free": {"ratio": 0.5, "compensation": "data-free"},
    "l2-calibration": {"ratio": 0.5, "compensation": "calibration", "calibration": True},
    "l2-reconstruct": {"ratio": 0.5, "compensation": "none", "calibration": True, "reconstruct": True},
    "macs-target": {"macs_target": 0.5, "compensation": "data-free"},
    # 12 calibration samples: the lower bound (95%) of the agreement on unseen inputs holds 0.7, not 0.8.
    "fidelity-budget": {"min_fidelity": 0.7, "calibration": True, "reconstruct": True},
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_user_conv_rule_prunes_exactly_like_conv(name: str, tmp_path: Path) -> None:
    options = dict(SCENARIOS[name])
    if options.pop("calibration", False):
        options["calibration"] = _calib(tmp_path)
    custom = onnxprune.prune(_model(custom=True), "l2", registry=_registry(), **options)
    plain = onnxprune.prune(_model(custom=False), "l2", **options)

    assert custom.report.macs_before == plain.report.macs_before == MACS
    assert custom.report.channels_removed > 0
    assert custom.plan.removed_groups == plain.plan.removed_groups
    assert custom.plan.kept_reasons == plain.plan.kept_reasons
    assert not any("no score" in r for reasons in custom.plan.kept_reasons.values() for r in reasons)
    assert custom.report.verification.passed
    assert _report(custom) == _report(plain)
    w_custom, w_plain = _weights(custom.model), _weights(plain.model)
    assert w_custom.keys() == w_plain.keys()
    for k in w_plain:
        assert np.array_equal(w_custom[k], w_plain[k]), k
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(custom.model, x), _run(plain.model, x))
    if options.get("reconstruct"):
        assert custom.report.to_dict()["reconstructed_layers"]


def test_data_free_values_use_the_user_rule() -> None:
    """The zeroed filters' constants (BatchNormalization's mean and all) reach the readers."""
    values = {}
    for custom in (True, False):
        model = _model(custom)
        registry = _registry() if custom else onnxprune.default_registry()
        analysis = onnxprune.analyze(model, registry=registry)
        plan = onnxprune.plan(analysis, "l2", model=model, ratio=0.5, registry=registry)
        values[custom] = data_free_values(model, analysis, plan, registry)
    assert values[True].keys() == values[False].keys() and values[True]
    for k in values[False]:
        np.testing.assert_array_equal(values[True][k], values[False][k])
    assert any(np.any(v != 0) for v in values[True].values())


def test_registry_layer_gives_the_conv_semantics_for_the_custom_node() -> None:
    model = _model(custom=True)
    registry = _registry()
    nodes = [n for n in model.graph.node if n.op_type == "MyConv"]
    layer = registry.layer(nodes[1], 17)
    assert layer is not None and isinstance(layer.semantics, MyConvRule)
    assert (layer.weight_index, layer.bias_index, layer.out_axis, layer.in_axis, layer.groups) == (1, 2, 0, 1, 1)
    assert layer.macs((1, 8, 8, 8), (6, 8, 3, 3), (1, 6, 8, 8)) == 6 * 64 * 72
    assert onnxprune.default_registry().layer(nodes[1], 17) is None
    assert registry.layer(next(n for n in model.graph.node if n.op_type == "Relu"), 17) is None


@pytest.mark.parametrize(
    ("op", "shape", "attrs", "out_axis"),
    [
        ("Conv", (6, 4, 3, 3), {}, 0),
        ("ConvTranspose", (4, 6, 3, 3), {}, 1),
        ("Gemm", (5, 6), {"transB": 0}, 1),
        ("Gemm", (6, 5), {"transB": 1}, 0),
        ("MatMul", (5, 6), {}, 1),
    ],
)
def test_built_in_layer_weight_matrix_round_trip(op: str, shape: tuple[int, ...], attrs: dict, out_axis: int) -> None:
    """Row c of the weight matrix is output channel c's filter, and the matrix maps back."""
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    layer = onnxprune.default_registry().layer(node)
    assert layer is not None and isinstance(layer.semantics, LayerSemantics)
    assert layer.out_axis == out_axis
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    m = layer.weight_matrix(w)
    assert m.shape == (6, w.size // 6)
    for c in range(6):
        np.testing.assert_array_equal(m[c], np.take(w, c, axis=out_axis).reshape(-1))
    np.testing.assert_array_equal(layer.weight_from_matrix(m, w.shape), w)
    w[(slice(None),) * out_axis + (2,)] = 0
    assert layer.zero_rows(w).tolist() == [c == 2 for c in range(6)]


def test_contexts_satisfy_the_rule_protocols() -> None:
    """The analysis' and the surgery's contexts provide every member of the protocols rules are
    written against, with the same parameters."""
    model = _model(custom=False)
    analysis = onnxprune.analyze(model)
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    actx = AnalysisContext(graph=graph, shapes={}, opset=17)
    sctx = SurgeryContext(
        graph=graph, analysis=analysis, removed_ids=np.zeros(len(analysis.root_of), bool), fills={}, opset=17
    )
    for protocol, impl in ((PropagateContext, actx), (ApplyContext, sctx)):
        assert isinstance(impl, protocol)
        for name, member in vars(protocol).items():
            if callable(member) and not name.startswith("_"):
                want = list(inspect.signature(member).parameters)[1:]
                assert list(inspect.signature(getattr(impl, name)).parameters) == want, (protocol.__name__, name)


def test_rules_import_nothing_from_analysis_or_surgery() -> None:
    """Nor name their context classes (a string annotation is an import for type checkers)."""
    for path in sorted(RULES.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = (node.module or "").split(".")
                assert not {"analysis", "surgery"} & set(module), f"{path.name} imports from {node.module}"
            name = node.id if isinstance(node, ast.Name) else node.value if isinstance(node, ast.Constant) else None
            assert name not in ("AnalysisContext", "SurgeryContext"), f"{path.name}:{node.lineno} names {name}"


def _gemm_head(beta: float, c2: np.ndarray) -> onnx.ModelProto:
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [None, 6])
    h = b.op(
        "Relu",
        b.op("Gemm", x, b.const(b.weights([6, 8]), "w1"), b.const(np.full(8, 0.3, np.float32), "c1"), channels=8),
    )
    b.output(b.op("Gemm", h, b.const(b.weights([8, 4]), "w2"), b.const(c2, "c2"), channels=4, beta=beta))
    return b.build()


def test_reconstruction_honours_gemm_beta() -> None:
    """Reconstruction fits the bias as the layer adds it (beta x C): a Gemm with beta=0.5 is
    refitted to what the same function with beta=1 and C/2 is refitted to."""
    from onnxprune.reconstruction import reconstruct

    c2 = np.linspace(-1, 1, 4).astype(np.float32)
    feeds = [{"x": np.random.default_rng(i).standard_normal((16, 6)).astype(np.float32)} for i in range(4)]
    x = np.random.default_rng(9).standard_normal((64, 6)).astype(np.float32)
    outputs, layers = [], []
    for model in (_gemm_head(0.5, c2), _gemm_head(1.0, c2 * 0.5)):
        analysis = onnxprune.analyze(model)
        plan = onnxprune.plan(analysis, "l2", model=model, ratio=0.5)
        rebuilt, done = reconstruct(model, onnxprune.apply(model, analysis, plan), analysis, plan, feeds)
        outputs.append(_run(rebuilt, x))
        layers.append(done)
    assert [d.node for d in layers[0]] == [d.node for d in layers[1]] and layers[0]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    assert abs(layers[0][0].error_after - layers[1][0].error_after) < 1e-9


def _custom_activation_model() -> onnx.ModelProto:
    """conv (2 of 6 filters zero) -> com.example MyAct (a model-local function: Relu) -> conv."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w1[[1, 4]] = 0
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("MyAct", ["c"], ["a"], name="act", domain="com.example"),
        helper.make_node("Conv", ["a", "W2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    body = helper.make_function(
        "com.example", "MyAct", ["X"], ["Y"], [helper.make_node("Relu", ["X"], ["Y"])], [helper.make_opsetid("", 17)]
    )
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        [
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(rng.standard_normal((4, 6, 3, 3)).astype(np.float32), "W2"),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    return helper.make_model(graph, opset_imports=opsets, functions=[body])


def test_an_element_wise_rule_may_map_constants_one_at_a_time() -> None:
    # README's passthrough(node, ctx, f): f got the array of the channels' constants, so a
    # scalar function such as max(c, 0.0) raised "The truth value of an array ... is ambiguous"
    from onnxprune.rules import passthrough

    class MyActRule:
        op_types = ("MyAct",)
        domain = "com.example"

        def propagate(self, node, ctx):
            return passthrough(node, ctx, lambda c: max(c, 0.0))

        def apply(self, node, ctx):
            return None

    model = _custom_activation_model()
    assert onnxprune.prune(model).report.channels_removed == 0  # no rule: MyAct pins them
    registry = onnxprune.default_registry().register(MyActRule())
    result = onnxprune.prune(model, registry=registry)
    assert result.report.channels_removed == 2 and result.report.verification.passed
    with pytest.raises(onnxprune.UsageError, match=r"does not implement the Rule protocol"):
        registry.register(lambda node, ctx: None)  # was a TypeError, outside the library's errors
