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


# --- Loading your rules by name: --rules FILE.py:NAME (CLI, --config) and PruneConfig.rules ---

ROOT = Path(__file__).resolve().parent.parent
CUSTOM_MODEL = ROOT / "fixtures" / "custom_activation.onnx"  # conv1 (filters 1, 5 zero) -> MyAct -> conv2
CUSTOM_RULES = ROOT / "fixtures" / "custom_rules.py"
RULES_TEXT = """
import onnxprune
from onnxprune.rules import passthrough


class MyActRule:
    op_types = ("MyAct",)
    domain = "com.example"

    def propagate(self, node, ctx):
        return passthrough(node, ctx, lambda c: max(c, 0.0))

    def apply(self, node, ctx):
        return None


registry = onnxprune.default_registry().register(MyActRule())
rule = MyActRule()
several = [MyActRule()]


def extend(registry):
    registry.register(MyActRule())


def fresh(registry):
    return onnxprune.default_registry().register(MyActRule())


def broken(registry):
    raise RuntimeError("no luck")


THRESHOLD = 3
"""


def _ort(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _conv1(model: onnx.ModelProto) -> np.ndarray:
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    return _weights(model)[conv1.input[1]]


def test_cli_rules_option_prunes_through_the_custom_op(tmp_path: Path) -> None:
    """Without --rules MyAct pins conv1's channels, and the report says why; with the rules file
    the two zero filters go and onnxruntime gives the original's outputs."""
    from cli_helpers import run_cli

    p = run_cli("prune", CUSTOM_MODEL, "-o", tmp_path / "plain.onnx", "--report", tmp_path / "plain.json")
    assert p.returncode == 0, p.stderr
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["channels_removed"] == 0
    assert "act (MyAct): op MyAct of domain 'com.example' has no rule" in p.stdout
    no_rule = (
        "act (MyAct): op MyAct of domain 'com.example' has no rule; an op without one is never assumed element-wise"
    )
    conv1_kept = [g for g in plain["kept_groups"] if g["members"][0]["node"] == "conv1"]
    assert len(conv1_kept) == 8 and all(g["reasons"] == [no_rule] for g in conv1_kept)

    out = tmp_path / "pruned.onnx"
    p = run_cli(
        "prune", CUSTOM_MODEL, "-o", out, "--rules", f"{CUSTOM_RULES}:registry", "--report", tmp_path / "r.json"
    )
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "r.json").read_text())["channels_removed"] == 2
    pruned, original = onnx.load(out), onnx.load(CUSTOM_MODEL)
    assert _conv1(pruned).shape[0] == 6 and _conv1(original).shape[0] == 8
    assert any(n.op_type == "MyAct" and n.domain == "com.example" for n in pruned.graph.node)
    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)
    want = _ort(original, x)
    np.testing.assert_allclose(_ort(out, x), want, rtol=0, atol=1e-5 * float(np.abs(want).max()))

    p = run_cli("analyze", CUSTOM_MODEL, "--rules", f"{CUSTOM_RULES}:registry")
    assert p.returncode == 0 and "has no rule" not in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("name", ["registry", "rule", "several", "MyActRule", "extend", "fresh"])
def test_rules_may_name_a_registry_a_rule_its_class_a_list_or_a_function(name: str, tmp_path: Path) -> None:
    (tmp_path / "my_rules.py").write_text(RULES_TEXT)
    result = onnxprune.prune(onnx.load(CUSTOM_MODEL), rules=f"{tmp_path}/my_rules.py:{name}")
    assert result.report.channels_removed == 2 and result.report.verification.passed


def test_rules_with_a_lossy_criterion_matches_the_masked_original_on_onnxruntime() -> None:
    """l2 at ratio 0.5 without compensation: the pruned model must compute what the original
    computes with the removed filters of conv1 zeroed (MyAct maps 0 to 0), run by onnxruntime."""
    original = onnx.load(CUSTOM_MODEL)
    result = onnxprune.prune(original, "l2", ratio=0.5, compensation="none", rules=f"{CUSTOM_RULES}:registry")
    w, kept = _conv1(original), _conv1(result.model)
    assert kept.shape[0] == 4
    keep = [next(i for i in range(w.shape[0]) if np.array_equal(w[i], row)) for row in kept]
    masked = onnx.ModelProto()
    masked.CopyFrom(original)
    conv1 = next(n for n in masked.graph.node if n.name == "conv1")
    for init in masked.graph.initializer:
        if init.name in conv1.input[1:]:
            a = numpy_helper.to_array(init).copy()
            a[[i for i in range(a.shape[0]) if i not in keep]] = 0
            init.CopyFrom(numpy_helper.from_array(a, init.name))
    x = np.random.default_rng(6).standard_normal((2, 3, 16, 16)).astype(np.float32)
    want = _ort(masked, x)
    np.testing.assert_allclose(_ort(result.model, x), want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
    assert not np.allclose(_ort(original, x), want)  # the removal really changed the outputs


def test_rules_and_registry_together(tmp_path: Path) -> None:
    """rules= adds to the registry= given (a copy: the caller's is left as it was); a second
    registry is refused."""
    from onnxprune.rules import load_rules

    mine = onnxprune.default_registry()
    extended = load_rules(f"{CUSTOM_RULES}:MyActRule", mine)
    assert extended.lookup("MyAct", "com.example") is not None and mine.lookup("MyAct", "com.example") is None
    assert load_rules(None, mine) is mine
    with pytest.raises(
        onnxprune.UsageError, match=r"^--rules .*custom_rules.py:registry: a rule registry, and registry="
    ):
        onnxprune.prune(onnx.load(CUSTOM_MODEL), registry=mine, rules=f"{CUSTOM_RULES}:registry")
    with pytest.raises(onnxprune.UsageError, match=r"^rules must be"):
        onnxprune.PruneConfig(rules=3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{d}/missing.py:registry", "--rules {d}/missing.py:registry: file {d}/missing.py not found"),
        ("{d}/my_rules.py:registri", "--rules {d}/my_rules.py:registri: {d}/my_rules.py has no name 'registri'"),
        (
            "{d}/my_rules.py:THRESHOLD",
            "--rules {d}/my_rules.py:THRESHOLD: a int (3), not a rule registry, a rule (or its class), a list of "
            "rules or a function that extends a registry",
        ),
        ("{d}/my_rules.py:broken", "--rules {d}/my_rules.py:broken: calling it raised RuntimeError: no luck"),
        (
            "no_such_module_xyz:rules",
            "--rules no_such_module_xyz:rules: no module named 'no_such_module_xyz' (give FILE.py:NAME for a file)",
        ),
        ("nocolon", "--rules 'nocolon': expected FILE.py:NAME or module:NAME"),
    ],
)
def test_cli_rules_errors_are_one_line_naming_the_option_and_file(spec: str, message: str, tmp_path: Path) -> None:
    from cli_helpers import one_line_error, run_cli

    (tmp_path / "my_rules.py").write_text(RULES_TEXT)
    d = str(tmp_path)
    p = run_cli("prune", CUSTOM_MODEL, "-o", tmp_path / "out.onnx", "--rules", spec.format(d=d))
    assert one_line_error(p) == f"onnxprune: error: {message.format(d=d)}"
    assert not (tmp_path / "out.onnx").exists()


def test_config_file_may_name_the_rules(tmp_path: Path) -> None:
    """--config's mapping form takes ``rules`` (a FILE.py relative to the config file); with
    --rules as well it is refused."""
    from cli_helpers import one_line_error, run_cli

    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "my_rules.py").write_text(RULES_TEXT)
    config = sub / "prune.yaml"
    config.write_text("rules: my_rules.py:registry\nconfig_list:\n  - op_names: conv2\n    exclude: true\n")
    p = run_cli("prune", CUSTOM_MODEL, "-o", tmp_path / "out.onnx", "--config", config, "--report", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "r.json").read_text())["channels_removed"] == 2
    p = run_cli(
        "prune", CUSTOM_MODEL, "-o", tmp_path / "o2.onnx", "--config", config, "--rules", f"{CUSTOM_RULES}:rule"
    )
    assert "give one" in one_line_error(p)


def test_python_reads_a_config_file_as_the_cli_does(tmp_path: Path) -> None:
    """load_layer_rules (the Python way to a config file) dropped a mapping's ``rules`` without a
    word: the run pruned without the user's rules for custom ops. PruneConfig.from_file reads the
    file as --config does (layer rules and rules, a relative FILE.py beside the file, the same
    refusals); load_layer_rules refuses a file whose rules it would drop."""
    from cli_helpers import one_line_error, run_cli

    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "my_rules.py").write_text(RULES_TEXT)
    config = sub / "prune.yaml"
    config.write_text("rules: my_rules.py:registry\nconfig_list:\n  - op_names: conv2\n    exclude: true\n")
    loaded = onnxprune.PruneConfig.from_file(config, criterion="zero", verify=False)
    assert loaded.rules == f"{sub}/my_rules.py:registry" and loaded.layer_rules[0].op_names == ("conv2",)
    assert loaded.criterion == "zero" and loaded.verify is False
    result = onnxprune.prune(onnx.load(CUSTOM_MODEL), config=loaded)
    cli = run_cli(
        "prune", CUSTOM_MODEL, "-o", tmp_path / "out.onnx", "--config", config, "--report", tmp_path / "r.json"
    )
    assert cli.returncode == 0, cli.stderr
    removed = json.loads((tmp_path / "r.json").read_text())["channels_removed"]
    assert result.report.channels_removed == removed == 2
    with pytest.raises(onnxprune.UsageError) as caught:
        onnxprune.config.load_layer_rules(config)
    assert str(caught.value) == (
        f"{config}: its rules {sub}/my_rules.py:registry are not layer rules and load_layer_rules would drop them: "
        "read the file with PruneConfig.from_file(path)"
    )
    # rules given twice, and an unknown key: the same one line from Python and the CLI
    with pytest.raises(onnxprune.UsageError) as twice:
        onnxprune.PruneConfig.from_file(config, rules=f"{CUSTOM_RULES}:rule")
    cli = run_cli(
        "prune", CUSTOM_MODEL, "-o", tmp_path / "o2.onnx", "--config", config, "--rules", f"{CUSTOM_RULES}:rule"
    )
    assert str(twice.value) == f"rules {CUSTOM_RULES}:rule and {config}'s rules {sub}/my_rules.py:registry: give one"
    assert one_line_error(cli) == f"onnxprune: error: --{twice.value}"
    config.write_text("rule: my_rules.py:registry\nconfig_list: []\n")
    with pytest.raises(onnxprune.UsageError) as unknown:
        onnxprune.PruneConfig.from_file(config)
    assert str(unknown.value).startswith(f"{config}: unknown key 'rule' in the config mapping")
    cli = run_cli("prune", CUSTOM_MODEL, "-o", tmp_path / "o3.onnx", "--config", config)
    assert one_line_error(cli) == f"onnxprune: error: {unknown.value}"
    entries = sub / "l.json"
    entries.write_text(json.dumps([{"op_names": "x", "exclude": True}]))
    assert onnxprune.PruneConfig.from_file(entries).layer_rules == onnxprune.config.load_layer_rules(entries)
    with pytest.raises(onnxprune.UsageError) as both:
        onnxprune.PruneConfig.from_file(entries, layer_rules=[{"op_names": "y", "exclude": True}])
    assert str(both.value) == f"layer_rules and {entries}'s entries: give one"


def test_an_output_naming_the_rules_script_is_refused_and_the_script_kept(tmp_path: Path) -> None:
    """--rules runs a script, as --validate does: an output naming it would overwrite the user's code."""
    from cli_helpers import run_cli

    script = tmp_path / "my_rules.py"
    script.write_text(Path(CUSTOM_RULES).read_text())
    before = script.read_bytes()
    p = run_cli("prune", CUSTOM_MODEL, "-o", tmp_path / "out.onnx", "--rules", f"{script}:registry", "--report", script)
    assert p.returncode != 0
    assert "the --rules script" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert script.read_bytes() == before and not (tmp_path / "out.onnx").exists()
