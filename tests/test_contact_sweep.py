"""Session 7's first-contact sweep: defects a new user met in the features of the last sessions.
CLI tests run the command line as a subprocess: the exit code, the one error line and the files
left behind matter."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from cli_helpers import one_line_error, run_cli, small_cnn

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CALIBRATION = FIXTURES / "digits_calibration.npz"


# -- an output naming an input file overwrote it -------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "{m}", "-o", "{d}/o.onnx", "--ratio", "0.1", "--report", "{m}"],
        ["prune", "{m}", "-o", "{d}/o.onnx", "--ratio", "0.1", "--save-plan", "{m}"],
        ["prune", "{m}", "-o", "{d}/o.onnx", "--ratio", "0.1", "--markdown", "{d}/link.onnx"],
        ["analyze", "{m}", "--json", "{m}"],
        ["explain", "{m}", "--json", "{m}"],
        ["sensitivity", "{m}", "--calibration", "{d}/c.npz", "--json", "{m}"],
        ["sensitivity", "{m}", "--calibration", "{d}/c.npz", "--json", "{d}/c.npz"],
        ["quantize", "{m}", "-o", "{d}/q.onnx", "--calibration", "{d}/c.npz", "--report", "{m}"],
        ["bench", "{m}", "--json", "{m}", "--rounds", "1"],
    ],
)
def test_an_output_naming_an_input_is_refused_and_the_input_kept(tmp_path: Path, argv: list[str]) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes((FIXTURES / "digits_cnn.onnx").read_bytes())
    (tmp_path / "c.npz").write_bytes(CALIBRATION.read_bytes())
    (tmp_path / "link.onnx").symlink_to(model)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    p = run_cli(*(a.format(m=model, d=tmp_path) for a in argv))
    line = one_line_error(p)
    assert "output must differ from every input" in line and "would overwrite" in line, line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing changed


def test_a_report_naming_the_models_external_data_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model, save_as_external_data=True, location="weights.bin", size_threshold=0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    p = run_cli("prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.25", "--report", tmp_path / "weights.bin")
    line = one_line_error(p)
    assert f"external data of {model}" in line, line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- --fidelity-metric naming an output the model does not have ------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "{m}", "-o", "{d}/o.onnx", "--min-fidelity", "0.99", "--calibration", "{c}"],
        ["sensitivity", "{m}", "--calibration", "{c}"],
        ["quantize", "{m}", "-o", "{d}/o.onnx", "--calibration", "{c}"],
    ],
)
def test_fidelity_metric_naming_a_missing_output_is_refused(tmp_path: Path, argv: list[str]) -> None:
    model = FIXTURES / "digits_cnn.onnx"
    p = run_cli(*(a.format(m=model, d=tmp_path, c=CALIBRATION) for a in argv), "--fidelity-metric", "logit=top1")
    line = one_line_error(p)
    assert line == f"onnxprune: error: {model}: --fidelity-metric names 'logit', but the model's outputs are ['logits']"
    assert list(tmp_path.iterdir()) == []


def test_fidelity_metric_for_every_output_and_a_real_one_are_taken() -> None:
    import onnxprune

    r = onnxprune.prune(
        FIXTURES / "digits_cnn.onnx",
        ratio=0.1,
        calibration=str(CALIBRATION),
        fidelity_metrics={"*": "cosine", "logits": "top1"},
    )
    (score,) = r.report.fidelity_metrics
    assert score.metric == "top1"


# -- "(what the search judged)" where no fidelity search chose the plan ---------------------


def test_the_bound_is_what_the_search_judged_only_after_a_fidelity_search(tmp_path: Path) -> None:
    model = FIXTURES / "digits_cnn.onnx"
    common = ["prune", model, "--calibration", CALIBRATION]
    ratio = run_cli(*common, "-o", tmp_path / "a.onnx", "--ratio", "0.1", "--markdown", tmp_path / "a.md")
    assert ratio.returncode == 0, ratio.stderr
    line = next(ln for ln in ratio.stdout.splitlines() if ln.startswith("fidelity: "))
    assert "at confidence 0.95" in line and "what the search judged" not in line, line
    md = (tmp_path / "a.md").read_text()
    assert "| lower bound at confidence 0.95 |" in md and "what the search judged" not in md
    # l2: the search judged the calibration samples themselves
    l2 = ["--criterion", "l2", "--min-fidelity", "0.99", "--report", tmp_path / "b.json"]
    search = run_cli(*common, "-o", tmp_path / "b.onnx", *l2)
    assert search.returncode == 0, search.stderr
    line = next(ln for ln in search.stdout.splitlines() if ln.startswith("fidelity: "))
    assert line.endswith("at confidence 0.95 (what the search judged)"), line
    import json

    est = json.loads((tmp_path / "b.json").read_text())["generalisation"]["estimate"]
    assert est["judged_by_search"] is True and est["what"].endswith(": what the search judged")
    # the default data criterion (contribution): the search judged each half by the other's choice
    data = run_cli(*common, "-o", tmp_path / "c.onnx", "--min-fidelity", "0.99", "--report", tmp_path / "c.json")
    assert data.returncode == 0, data.stderr
    assert any(ln.startswith("fidelity cross-fitted (what the search judged): ") for ln in data.stdout.splitlines())
    line = next(ln for ln in data.stdout.splitlines() if ln.startswith("fidelity: "))
    assert "(what the search judged)" not in line and "in-sample: the channels were chosen on them" in line, line
    est = json.loads((tmp_path / "c.json").read_text())["generalisation"]["estimate"]
    assert est["judged_by_search"] is False and est["what"].endswith("the search judged cross_fitted)")


# -- NaN in the data: verification compared NaN with NaN and passed --------------------------


@pytest.mark.parametrize("flag", ["--inputs", "--calibration"])
def test_non_finite_data_is_refused(tmp_path: Path, flag: str) -> None:
    import numpy as np

    data = np.load(CALIBRATION)["input"].copy()
    data[5, 0, 3, 3] = np.nan
    data[9, 0, 0, 0] = np.inf
    np.savez(tmp_path / "d.npz", input=data)
    out = tmp_path / "o.onnx"
    p = run_cli("prune", FIXTURES / "digits_cnn.onnx", "-o", out, "--ratio", "0.1", flag, tmp_path / "d.npz")
    line = one_line_error(p)
    assert line == (
        f"onnxprune: error: {tmp_path / 'd.npz'}: array 'input' holds NaN or infinite values in 2 of its 64 samples "
        "(the first: sample 5); inputs must be finite"
    )
    assert not out.exists()


def test_a_file_that_is_not_an_npz_is_named_so(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_text("input,label\n0.5,1\n")
    out = tmp_path / "o.onnx"
    p = run_cli("prune", FIXTURES / "digits_cnn.onnx", "-o", out, "--ratio", "0.1", "--inputs", tmp_path / "d.npz")
    line = one_line_error(p)
    assert line == (
        f"onnxprune: error: {tmp_path / 'd.npz'}: not an .npz file (a zip of .npy arrays keyed by input name, "
        "as numpy.savez writes)"
    )
    assert not out.exists()


# -- prune --help against behaviour ----------------------------------------------------------


def test_prune_help_states_what_calibration_and_the_default_criterion_do() -> None:
    from onnxprune.config import PruneConfig

    p = run_cli("prune", "--help")
    text = " ".join(p.stdout.split()).replace("- ", "-")  # argparse breaks lines after a hyphen
    assert "--calibration C.npz|FOLDER" in text and "folder of images with --preprocess" in text
    assert "every 4th sample is held out" in text and "--reconstruct, --recalibrate" in text
    assert "l2 with any other budget (--ratio, --macs-target, --latency-target," in text
    assert "detection[:score=S,iou=I,nms=J]" in text  # the parameters the metric takes
    # what the help says, the config does
    cal = str(CALIBRATION)
    assert PruneConfig(latency_target=0.9, min_fidelity=0.99, calibration=cal).criterion == "l2"
    assert PruneConfig(min_fidelity=0.99, calibration=cal).criterion == "contribution"


# -- --plan errors named neither the plan file nor the model --------------------------------


def test_plan_errors_name_the_file_and_the_model(tmp_path: Path) -> None:
    import json

    saved = tmp_path / "p.json"
    made = run_cli(
        "prune", FIXTURES / "digits_cnn.onnx", "-o", tmp_path / "y.onnx", "--ratio", "0.2", "--save-plan", saved
    )
    assert made.returncode == 0, made.stderr
    other = FIXTURES / "residual.onnx"
    layer = json.loads(saved.read_text())["removed"][0]["members"][0][0]
    p = run_cli("prune", other, "-o", tmp_path / "o.onnx", "--plan", saved)
    assert one_line_error(p) == (
        f"onnxprune: error: {saved}: the plan does not fit {other}: its layer {layer!r} is not in the model "
        "(was it made for another model?)"
    )
    (tmp_path / "bad.json").write_text('{"groups": 3}')
    p = run_cli("prune", other, "-o", tmp_path / "o.onnx", "--plan", tmp_path / "bad.json")
    assert one_line_error(p) == (
        f"onnxprune: error: {tmp_path / 'bad.json'}: not an onnxprune plan (expected format 'onnxprune-plan/1')"
    )
    assert not (tmp_path / "o.onnx").exists()


# -- the text report: a cosine-scored output said "cosine" twice; sensitivity's empty table --


def test_a_cosine_scored_output_shows_its_cosine_once(tmp_path: Path) -> None:
    import numpy as np

    model, data = tmp_path / "m.onnx", tmp_path / "c.npz"
    onnx.save(small_cnn(), model)
    np.savez(data, input=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    p = run_cli(
        "prune",
        model,
        "-o",
        tmp_path / "o.onnx",
        "--ratio",
        "0.25",
        "--calibration",
        data,
        "--fidelity-metric",
        "*=cosine",
    )
    assert p.returncode == 0, p.stderr
    (line,) = [ln for ln in p.stdout.splitlines() if "max abs err" in ln]
    assert line.split(":", 1)[1].split().count("cosine") == 1, line
    assert "    metric cosine: chosen for every output" in p.stdout


def test_sensitivity_says_why_there_is_no_unit(tmp_path: Path) -> None:
    import numpy as np

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17)
    x = b.input("input", (None, 3, 8, 8))
    b.channels[x] = 3
    b.output(b.conv(x, 4))  # its channels reach the graph output: pinned
    model, data = tmp_path / "m.onnx", tmp_path / "c.npz"
    onnx.save(b.build(), model)
    np.savez(data, input=np.zeros((4, 3, 8, 8), np.float32) + 1)
    p = run_cli("sensitivity", model, "--calibration", data)
    assert p.returncode == 0, p.stderr
    assert f"{model}: 0 units" in p.stdout
    assert p.stdout.strip().splitlines()[-1] == (
        "note: no unit to prune: every channel is pinned (or its layers are inside subgraphs, which are not analysed); "
        f"'onnxprune explain {model}' says why per layer"
    )


# -- --inputs that are the calibration samples were reported as "held-out" --------------------


def test_evaluation_samples_that_are_calibration_samples_are_not_called_held_out(tmp_path: Path) -> None:
    import json

    model = FIXTURES / "digits_cnn.onnx"
    common = ["prune", model, "--ratio", "0.1", "--calibration", CALIBRATION]
    same = run_cli(*common, "-o", tmp_path / "a.onnx", "--inputs", CALIBRATION, "--report", tmp_path / "a.json")
    assert same.returncode == 0, same.stderr
    held = json.loads((tmp_path / "a.json").read_text())["generalisation"]["held_out"]
    assert held["samples"] == 64 and held["also_calibration"] == 64
    assert (
        "on the 64 evaluation samples (64 of them also calibration samples: not held out) (gap +0.0000)" in same.stdout
    )
    assert "64 of the 64 given evaluation samples are also calibration samples" in same.stdout
    assert "held-out samples" not in same.stdout
    other = run_cli(
        *common, "-o", tmp_path / "b.onnx", "--inputs", FIXTURES / "digits_test.npz", "--report", tmp_path / "b.json"
    )
    assert other.returncode == 0, other.stderr
    held = json.loads((tmp_path / "b.json").read_text())["generalisation"]["held_out"]
    assert held["samples"] == 64 and held["also_calibration"] == 0
    assert "on the 64 held-out samples (gap" in other.stdout


# -- a typo in --validate surfaced only after calibration and the sensitivity runs ------------


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{d}/v.py:acuracy", "{d}/v.py:acuracy: {d}/v.py has no function 'acuracy'"),
        ("{d}/s.py:f", "{d}/s.py:f: importing {d}/s.py raised SyntaxError: '(' was never closed (line 1)"),
        (
            "no_such_module_xyz:f",
            "no_such_module_xyz:f: no module named 'no_such_module_xyz' (give FILE.py:function for a file)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["prune", "quantize"])
def test_a_bad_validate_spec_is_refused_before_any_work(tmp_path: Path, spec: str, message: str, command: str) -> None:
    import numpy as np

    (tmp_path / "v.py").write_text("def accuracy(candidate):\n    return 1.0\n")
    (tmp_path / "s.py").write_text("def f(c:\n    return 1\n")
    # calibration data that does not fit the model: its error would come first if work started
    np.savez(tmp_path / "c.npz", input=np.zeros((8, 3, 8, 8), np.float32))
    out = tmp_path / "o.onnx"
    args = [command, FIXTURES / "digits_cnn.onnx", "-o", out, "--calibration", tmp_path / "c.npz"]
    p = run_cli(*args, "--validate", spec.format(d=tmp_path))
    assert one_line_error(p) == "onnxprune: error: " + message.format(d=tmp_path)
    assert not out.exists()


# -- a standard op without a rule was called "unknown" ----------------------------------------


def test_a_standard_op_without_a_rule_is_not_called_unknown() -> None:
    import onnxprune
    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.op("Softmax", b.conv(x, 6), axis=1)
    b.output(b.conv(y, 3))
    a = onnxprune.analyze(b.build())
    reasons = {r for g in a.groups for r in g.pinned_by if "Softmax" in r}
    assert len(reasons) == 1
    (reason,) = reasons
    assert reason.endswith("(Softmax): op Softmax has no rule; an op without one is never assumed element-wise"), reason


# -- sensitivity --plot in a format matplotlib lacks: internal error, --json left behind -------


def test_sensitivity_plot_format_is_checked_before_any_work(tmp_path: Path) -> None:
    args = ["sensitivity", FIXTURES / "digits_cnn.onnx", "--calibration", CALIBRATION, "--json", tmp_path / "s.json"]
    p = run_cli(*args, "--plot", tmp_path / "s.pdfx")
    line = one_line_error(p)
    assert (
        line
        == f"onnxprune: error: {tmp_path / 's.pdfx'}: --plot must end in .png, .pdf, .svg or .jpg (the image format)"
    )
    assert list(tmp_path.iterdir()) == []
    ok = run_cli(*args, "--plot", tmp_path / "s.PNG")
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.PNG", "s.json"]
    assert (tmp_path / "s.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- --recalibrate without --calibration: the error listed three options, not the one given ---


@pytest.mark.parametrize(
    "flags, named",
    [(["--recalibrate"], "--recalibrate"), (["--reconstruct", "--recalibrate"], "--reconstruct and --recalibrate")],
)
def test_recovery_without_calibration_names_the_option_given(tmp_path: Path, flags: list[str], named: str) -> None:
    p = run_cli("prune", FIXTURES / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.1", *flags)
    assert one_line_error(p).startswith(f"onnxprune: error: {named} given without --calibration: ")
    assert list(tmp_path.iterdir()) == []


# -- verification passed a pruned model that computes NaN -------------------------------------


def _sqrt_model(nan_channel: int | None = None, inf_channel: int | None = None) -> onnx.ModelProto:
    """Conv -> |.| + shift -> Sqrt: a shift of -1e9 makes one channel NaN, +inf makes one infinite."""
    import numpy as np

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=0)
    x = b.input("input", (1, 3, 8, 8))
    b.channels[x] = 3
    shift = np.zeros((1, 4, 1, 1), np.float32)
    if nan_channel is not None:
        shift[0, nan_channel] = -1e9
    if inf_channel is not None:
        shift[0, inf_channel] = np.inf
    b.output(b.op("Sqrt", b.op("Add", b.op("Abs", b.conv(x, 4)), b.const(shift))))
    return b.build()


def test_verification_fails_a_candidate_that_computes_nan_or_inf() -> None:
    import math

    import onnxprune

    for candidate in (_sqrt_model(nan_channel=2), _sqrt_model(inf_channel=1)):
        r = onnxprune.verify(_sqrt_model(), candidate)
        assert not r.passed and math.isinf(r.outputs[0].max_abs_diff)
    # the same non-finite values on both sides agree; the scale comes from the finite ones
    same = onnxprune.verify(_sqrt_model(inf_channel=1), _sqrt_model(inf_channel=1))
    assert same.passed and same.outputs[0].max_abs_diff == 0.0
    assert math.isfinite(same.outputs[0].limit) and same.outputs[0].limit < 1e-3
    # an infinite original no longer sets an infinite limit that anything passes
    assert not onnxprune.verify(_sqrt_model(inf_channel=1), _sqrt_model(inf_channel=0)).passed


def test_abs_diff_is_nan_aware() -> None:
    import numpy as np

    from onnxprune.verification import abs_diff

    r = np.array([1.0, np.nan, np.inf, 2.0, np.nan, -np.inf])
    g = np.array([1.5, np.nan, np.inf, np.nan, 3.0, np.inf])
    assert abs_diff(r, g).tolist() == [0.5, 0.0, 0.0, np.inf, np.inf, np.inf]


# -- a report with NaN in it was not JSON ----------------------------------------------------


def _strict_json(text: str) -> dict:
    import json

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_report_of_a_model_whose_outputs_are_nan_is_strict_json(tmp_path: Path) -> None:
    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=0)
    x = b.input("input", (None, 3, 8, 8))
    b.channels[x] = 3
    y = b.op("Log", b.conv(b.op("Relu", b.conv(x, 8)), 8))  # log of negative values: NaN
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", y), channels=8), 8, 4))
    model, report = tmp_path / "m.onnx", tmp_path / "r.json"
    onnx.save(b.build(), model)
    p = run_cli("prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.25", "--report", report)
    assert p.returncode == 0, p.stderr
    assert "max abs err nan" in p.stdout  # the text says so; the JSON says null
    fid = _strict_json(report.read_text())["fidelity"][0]
    assert fid["max_abs_error"] is None and fid["mean_abs_error"] is None


def test_json_text_maps_non_finite_numbers_to_null() -> None:
    from onnxprune.render import json_text

    data = {"a": float("nan"), "b": [1.5, float("inf"), (float("-inf"), 2)], "c": {"d": 0.25}}
    assert _strict_json(json_text(data)) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": 0.25}}


# -- --seed -1 was an internal error ---------------------------------------------------------


@pytest.mark.parametrize("command", ["prune", "quantize"])
def test_a_negative_seed_is_a_usage_error(tmp_path: Path, command: str) -> None:
    out = tmp_path / "o.onnx"
    p = run_cli(command, FIXTURES / "digits_cnn.onnx", "-o", out, "--calibration", CALIBRATION, "--seed", "-1")
    assert one_line_error(p) == "onnxprune: error: seed must be a non-negative integer, got -1"
    assert not out.exists()


# -- bench: counts of zero and a shape that contradicts the data were internal errors ---------


@pytest.mark.parametrize(
    "options, message",
    [
        (["--rounds", "0"], "--rounds must be an integer >= 1, got 0"),
        (["--runs", "0"], "--runs must be an integer >= 1, got 0"),
        (["--warmup", "-1"], "--warmup must be an integer >= 0, got -1"),
        (["--throughput-seconds", "-1"], "--throughput-seconds must be a positive number of seconds, got -1.0"),
        (
            ["--inputs", str(CALIBRATION), "--input-shape", "input:2,1,8,8"],
            "{m}: --input-shape input:2,1,8,8 contradicts --inputs, whose first sample of 'input' has shape "
            "[1, 1, 8, 8]: give one of them",
        ),
    ],
)
def test_bench_refuses_bad_counts_and_contradicting_shapes(tmp_path: Path, options: list[str], message: str) -> None:
    model = FIXTURES / "digits_cnn.onnx"
    p = run_cli("bench", model, "--json", tmp_path / "b.json", *options)
    assert one_line_error(p) == "onnxprune: error: " + message.format(m=model)
    assert list(tmp_path.iterdir()) == []


# -- an IR's .bin that is a folder failed only after the whole run ---------------------------


def test_a_companion_file_that_is_a_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "ir.bin").mkdir()
    model = FIXTURES / "digits_cnn.onnx"
    p = run_cli(
        "prune",
        model,
        "-o",
        tmp_path / "o.onnx",
        "--ir",
        tmp_path / "ir.xml",
        "--calibration",
        tmp_path / "missing.npz",
    )
    # before any work: the missing calibration file (checked in the run) is not reached
    assert one_line_error(p) == (
        f"onnxprune: error: {tmp_path / 'ir.bin'}: --ir (its .bin) would be written there, but it is a folder; "
        "give another file name"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir.bin"]
