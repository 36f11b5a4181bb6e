"""Loading your rules by name: ``--rules FILE.py:NAME`` (CLI, ``--config``) and ``PruneConfig.rules``,
on fixtures/custom_activation.onnx (conv1 -> MyAct, an op without a built-in rule -> conv2) with
fixtures/custom_rules.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import onnxprune

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
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == conv1.input[1])


def _config_beside_its_rules(tmp_path: Path) -> Path:
    """A config file naming a rules script beside it (relative path) and excluding conv2."""
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "my_rules.py").write_text(RULES_TEXT)
    config = sub / "prune.yaml"
    config.write_text("rules: my_rules.py:registry\nconfig_list:\n  - op_names: conv2\n    exclude: true\n")
    return config


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
        onnxprune.UsageError, match=r"^rules .*custom_rules.py:registry: a rule registry, and registry="
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

    config = _config_beside_its_rules(tmp_path)
    # a budget: exclusions under the zero criterion are refused (tests/test_planning.py)
    p = run_cli(
        "prune",
        CUSTOM_MODEL,
        "-o",
        tmp_path / "out.onnx",
        "--config",
        config,
        "--ratio",
        "0.25",
        "--report",
        tmp_path / "r.json",
    )
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

    config = _config_beside_its_rules(tmp_path)
    sub = config.parent
    loaded = onnxprune.PruneConfig.from_file(config, criterion="l2", ratio=0.25, verify=False)
    assert loaded.rules == f"{sub}/my_rules.py:registry" and loaded.layer_rules[0].op_names == ("conv2",)
    assert loaded.criterion == "l2" and loaded.verify is False
    result = onnxprune.prune(onnx.load(CUSTOM_MODEL), config=loaded)
    cli = run_cli(
        "prune",
        CUSTOM_MODEL,
        "-o",
        tmp_path / "out.onnx",
        "--config",
        config,
        "--ratio",
        "0.25",
        "--report",
        tmp_path / "r.json",
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
