"""Your own validation function (``validate=`` / ``--validate``) and ``max_drop``, on tiny
graphs where the function's value is a known function of the channels removed, so the plan
the search must find and the number of calls it needs are known."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune import cli
from onnxprune.errors import UsageError, ValidationFunctionFailed
from onnxprune.testing import GraphBuilder
from onnxprune.user_validation import Candidate, MaxDrop, Validator, parse_max_drop, resolve_function

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _one_unit_model() -> onnx.ModelProto:
    """One prunable conv 'A' (8 channels) read by a Gemm whose output is the graph's: the only
    unit the search can cut."""
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [None, 3, 6, 6])
    a = b.op("Relu", b.conv(x, 8))
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", a), axis=1), 8, 3))
    return b.build()


def _conv_channels(path: str) -> int:
    """Output channels of the first Conv's weight in the model file."""
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    return int(inits[conv.input[1]].dims[0])


class KeptFraction:
    """A validation function whose value is (channels of conv A kept) / 8 x scale; it records
    every candidate it saw and checks that each runs."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.paths: list[str] = []
        self.values: list[float] = []

    def __call__(self, candidate: Candidate) -> float:
        self.paths.append(candidate.path)
        feeds = {"x": np.zeros((2, 3, 6, 6), np.float32)}
        (out,) = candidate.run(feeds)
        assert out.shape == (2, 3) and candidate.input_names == ["x"]
        value = _conv_channels(candidate.path) / 8 * self.scale
        self.values.append(value)
        return value


def _calib(tmp_path: Path, n: int = 16) -> str:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((n, 3, 6, 6)).astype(np.float32))
    return str(path)


def test_search_keeps_the_largest_cut_within_the_drop_with_exact_calls(tmp_path: Path) -> None:
    model_path = tmp_path / "m.onnx"
    onnx.save(_one_unit_model(), model_path)
    fn = KeptFraction()
    r = onnxprune.prune(model_path, calibration=_calib(tmp_path), validate=fn, max_drop=0.3)
    v = r.report.validation
    # Baseline 1.0, allowed drop 0.3: 6 of 8 channels (0.75) is the most that stays >= 0.7.
    assert [c.channels_after for c in r.report.layers] == [6]
    assert v.baseline == 1.0 and v.threshold == pytest.approx(0.7) and v.final == 0.75
    # The ladder 0.1..0.7 of 8 channels is 5 groups in the flat order: prefixes 0..5. The
    # bisection judges prefixes 3 (0.625, no), 1 (0.875, yes) and 2 (0.75, yes): with the
    # baseline, 4 calls; the final model is the plan judged last, so it comes from the cache.
    assert fn.values == [1.0, 0.625, 0.875, 0.75]
    assert v.calls == len(fn.values) == 4 and v.searched
    assert [(s.groups, s.within) for s in v.steps] == [(3, False), (1, True), (2, True)]
    # The original is given as its own file (untouched); every candidate file is removed.
    assert fn.paths[0] == str(model_path) and model_path.exists()
    assert all(not os.path.exists(p) for p in fn.paths[1:])
    assert not any(Path(p).parent.exists() for p in fn.paths[1:])
    d = r.report.to_dict()["validation"]
    assert d["calls"] == 4 and d["final"] == 0.75 and d["max_drop"] == "0.3" and len(d["steps"]) == 3


def test_relative_and_absolute_drop(tmp_path: Path) -> None:
    model, calib = _one_unit_model(), _calib(tmp_path)
    # Baseline 10: 25% of it is 2.5, so >= 7.5: 6 channels (7.5) stay, as with the absolute 2.5.
    for drop in ("25%", 2.5, "2.5"):
        r = onnxprune.prune(model, calibration=calib, validate=KeptFraction(10.0), max_drop=drop)
        assert [c.channels_after for c in r.report.layers] == [6], drop
        assert r.report.validation.threshold == pytest.approx(7.5)
    # An absolute 0.3 on a baseline of 10 allows no channel to go (7 of 8 is 8.75).
    r = onnxprune.prune(model, calibration=calib, validate=KeptFraction(10.0), max_drop=0.3)
    assert r.report.layers == () and r.report.validation.final == 10.0
    assert parse_max_drop("0.5%") == MaxDrop(0.5, True) and MaxDrop(0.5, True).allowed(-2.0) == pytest.approx(0.01)
    for bad in ("x", "-1", "100%", "nan", True):
        with pytest.raises(UsageError):
            parse_max_drop(bad)


def test_cache_never_scores_a_plan_twice() -> None:
    built: list[frozenset[int]] = []
    model = _one_unit_model()

    def build(groups: frozenset[int]) -> onnx.ModelProto:
        built.append(groups)
        return model

    calls: list[str] = []
    v = Validator(lambda c: calls.append(c.path) or 0.5, "f", model, build, MaxDrop(0.1))
    assert v.value([3, 1]) == v.value((1, 3)) == v.value({3, 1}) == 0.5
    assert v.within([1, 3]) and v.baseline == 0.5
    assert len(calls) == v.calls == 2 and built == [frozenset({1, 3})]  # the plan once, the original once


def test_max_drop_without_validate_is_a_fidelity_budget(tmp_path: Path) -> None:
    calib = str(FIXTURES / "digits_calibration.npz")
    by_drop = onnxprune.prune(FIXTURES / "digits_cnn.onnx", calibration=calib, max_drop=0.05)
    by_floor = onnxprune.prune(FIXTURES / "digits_cnn.onnx", calibration=calib, min_fidelity=0.95)
    relative = onnxprune.prune(FIXTURES / "digits_cnn.onnx", calibration=calib, max_drop="5%")
    assert by_drop.plan.removed_groups == by_floor.plan.removed_groups == relative.plan.removed_groups
    assert by_drop.plan.removed_groups and by_drop.report.validation is None
    with pytest.raises(UsageError, match="not both"):
        onnxprune.PruneConfig(ratio=0.2, max_drop=0.01)
    with pytest.raises(UsageError, match="below 1"):
        onnxprune.PruneConfig(max_drop=1.5, calibration=calib)
    with pytest.raises(UsageError, match="calibration"):
        onnxprune.PruneConfig(validate=len)


def test_with_another_budget_the_function_only_measures(tmp_path: Path) -> None:
    fn = KeptFraction()
    r = onnxprune.prune(_one_unit_model(), ratio=0.5, validate=fn)
    v = r.report.validation
    assert not v.searched and v.steps == () and v.threshold is None and v.max_drop is None
    assert fn.values == [1.0, 0.5] and v.calls == 2 and v.final == 0.5 and v.drop == 0.5


def test_reconstructed_candidate_is_judged(tmp_path: Path) -> None:
    """With reconstruct, the function sees the refitted weights: the delivered model's."""
    seen: list[np.ndarray] = []

    def gemm_weights(candidate: Candidate) -> float:
        model = onnx.load(candidate.path)
        gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
        w = next(i for i in model.graph.initializer if i.name == gemm.input[1])
        seen.append(onnx.numpy_helper.to_array(w).copy())
        return float(w.dims[1] if len(w.dims) > 1 else 0)

    r = onnxprune.prune(
        _one_unit_model(), calibration=_calib(tmp_path), validate=gemm_weights, max_drop=10.0, reconstruct=True
    )
    assert r.report.reconstructed_layers  # the Gemm was refitted ...
    final = next(
        i
        for i in r.model.graph.initializer
        if i.name == next(n for n in r.model.graph.node if n.op_type == "Gemm").input[1]
    )
    # ... and the last candidate judged (the delivered plan, from the cache) had those weights.
    assert any(s.shape == tuple(final.dims) and np.array_equal(s, onnx.numpy_helper.to_array(final)) for s in seen)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("raise RuntimeError('labels missing')", "raised RuntimeError: labels missing (validating the original model)"),
        ("return float('nan')", "returned nan, not a finite number"),
        ("return 'high'", "returned str 'high', not a number"),
        ("return None", "returned NoneType None, not a number"),
        ("return True", "returned bool True, not a number"),
    ],
)
def test_a_broken_function_is_one_line_exit_2_nothing_written(
    tmp_path: Path, body: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "acc.py").write_text(f"def score(candidate):\n    {body}\n")
    out = tmp_path / "out.onnx"
    spec = f"{tmp_path / 'acc.py'}:score"
    code = cli.main(
        [
            "prune",
            str(FIXTURES / "digits_cnn.onnx"),
            "-o",
            str(out),
            "--calibration",
            _calib_digits(),
            "--validate",
            spec,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"onnxprune: error: {spec}: ") and message in err


def _calib_digits() -> str:
    return str(FIXTURES / "digits_calibration.npz")


def test_bad_specs(tmp_path: Path) -> None:
    (tmp_path / "acc.py").write_text("THRESHOLD = 3\ndef score(c):\n    return 1.0\n")
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    cases = {
        "nocolon": "expected FILE.py:function or module:function",
        f"{tmp_path}/missing.py:score": "not found",
        f"{tmp_path}/acc.py:other": "has no function 'other'",
        f"{tmp_path}/acc.py:THRESHOLD": "is not a function (int)",
        f"{tmp_path}/broken.py:score": "raised ModuleNotFoundError",
        "no_such_module_xyz:score": "no module named 'no_such_module_xyz'",
    }
    for spec, message in cases.items():
        with pytest.raises(ValidationFunctionFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
            resolve_function(spec)
    fn, name = resolve_function(f"{tmp_path}/acc.py:score")
    assert fn(None) == 1.0 and name.endswith("acc.py:score")
    fn, name = resolve_function("math:sqrt")
    assert fn is math.sqrt and name == "math:sqrt"
    with pytest.raises(UsageError):
        onnxprune.PruneConfig(validate=3)


def test_cli_validate_and_max_drop(tmp_path: Path) -> None:
    (tmp_path / "acc.py").write_text(
        "import onnx\n"
        "def kept(candidate):\n"
        "    m = onnx.load(candidate.path)\n"
        "    w = {i.name: i for i in m.graph.initializer}\n"
        "    conv = next(n for n in m.graph.node if n.op_type == 'Conv')\n"
        "    return w[conv.input[1]].dims[0] / 8 * 10\n"
    )
    model = tmp_path / "m.onnx"
    onnx.save(_one_unit_model(), model)
    report, md = tmp_path / "r.json", tmp_path / "r.md"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxprune",
            "prune",
            str(model),
            "-o",
            str(tmp_path / "out.onnx"),
            "--calibration",
            _calib(tmp_path),
            "--validate",
            f"{tmp_path / 'acc.py'}:kept",
            "--max-drop",
            "25%",
            "--report",
            str(report),
            "--markdown",
            str(md),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "original 10 -> pruned 7.5 (drop 2.5; allowed drop 25% (keep >= 7.5))" in p.stdout
    assert "4 calls of the function" in p.stdout
    v = json.loads(report.read_text())["validation"]
    assert v["baseline"] == 10 and v["final"] == 7.5 and v["calls"] == 4 and v["max_drop"] == "25%"
    assert "## Your validation function" in md.read_text() and "| 3 | 2 | " in md.read_text()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxprune",
            "prune",
            str(model),
            "-o",
            str(tmp_path / "o2.onnx"),
            "--calibration",
            _calib(tmp_path),
            "--max-drop",
            "lots",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "--max-drop 'lots'" in bad.stderr and bad.stderr.count("\n") == 1


def test_int8_accuracy_control_is_judged_by_the_function(tmp_path: Path) -> None:
    """NNCF's accuracy control gets the user's function as its validation_fn: a function that
    is indifferent to int8 leaves every layer in int8; one that scores any int8 layer 0 makes
    the drop impossible to meet (fidelity alone would have passed both)."""
    from onnxprune.errors import UnsupportedModel

    seen: list[str | None] = []

    def indifferent(candidate: Candidate) -> float:
        seen.append(candidate.path)
        return 0.8

    calib = _calib_digits()
    r = onnxprune.quantize(FIXTURES / "digits_cnn.onnx", calibration=calib, validate=indifferent, max_drop="1%")
    a = r.report.accuracy_control
    assert not r.report.float_layers and a.float_value == a.int8_value == 0.8
    assert a.calls == len(seen) >= 3 and a.drop_type == "relative" and a.max_drop == pytest.approx(0.01)
    assert "your function" in a.metric and all(p is None or not os.path.exists(p) for p in seen[1:])

    def no_int8(candidate: Candidate) -> float:
        return 0.0 if any(n.op_type == "DequantizeLinear" for n in onnx.load(candidate.path).graph.node) else 1.0

    with pytest.raises(UnsupportedModel, match="cannot be met with any layer in int8"):
        onnxprune.quantize(FIXTURES / "digits_cnn.onnx", calibration=calib, validate=no_int8, max_drop=0.5)


def test_cli_quantize_validate(tmp_path: Path) -> None:
    (tmp_path / "const.py").write_text(
        "def score(candidate):\n    candidate.run({'input': __import__('numpy').zeros((1, 1, 8, 8), 'float32')})\n    return 2.0\n"
    )
    report = tmp_path / "q.json"
    code = cli.main(
        [
            "quantize",
            str(FIXTURES / "digits_cnn.onnx"),
            "-o",
            str(tmp_path / "q.onnx"),
            "--calibration",
            _calib_digits(),
            "--validate",
            f"{tmp_path / 'const.py'}:score",
            "--max-drop",
            "0.1",
            "--report",
            str(report),
            "-q",
        ]
    )
    assert code == 0
    a = json.loads(report.read_text())["accuracy_control"]
    assert a["float_value"] == a["int8_value"] == 2.0 and a["drop_type"] == "absolute" and a["max_drop"] == 0.1
    assert a["calls"] >= 3


def test_progress_over_the_search_and_the_reconstruction(tmp_path: Path) -> None:
    """Run.progress hears the bisection (3 steps over 6 prefixes) and the refit (one reader)."""
    heard: list[tuple[str, int, int]] = []
    onnxprune.prune(
        _one_unit_model(),
        calibration=_calib(tmp_path),
        validate=KeptFraction(),
        max_drop=0.3,
        reconstruct=True,
        progress=lambda stage, done, total: heard.append((stage, done, total)),
    )
    assert [h for h in heard if h[0] == "search"] == [("search", 1, 3), ("search", 2, 3), ("search", 3, 3)]
    assert [h for h in heard if h[0] == "reconstruction"] == [("reconstruction", 0, 1), ("reconstruction", 1, 1)]
    assert {h[0] for h in heard} >= {"calibration", "sensitivity", "verification"}
