"""First contact with the Python API: options refused with typed errors, public names exported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import onnxprune
from onnxprune.errors import UsageError

DIGITS = "fixtures/digits_cnn.onnx"


def test_ratio_and_macs_target_together_are_refused():
    # The MACs target decided the cut and the ratio was silently ignored.
    with pytest.raises(
        UsageError, match=r"^ratio 0.25 and macs_target 0.5 are two budgets for the same cut: give one$"
    ):
        onnxprune.prune(DIGITS, "l2", ratio=0.25, macs_target=0.5)
    with pytest.raises(UsageError, match="two budgets"):
        onnxprune.PruneConfig(ratio=0.25, macs_target=0.5)
    # with a fidelity floor the ratio was ignored too (digits CNN: 20 channels with ratio 0.5, 0.05 or none)
    with pytest.raises(
        UsageError, match=r"^ratio 0.5 and min_fidelity 0.9 are two budgets for the same cut: give one$"
    ):
        onnxprune.PruneConfig(ratio=0.5, min_fidelity=0.9, calibration="fixtures/digits_calibration.npz")


def test_unknown_prune_option_is_a_usage_error_with_a_hint():
    # Was Python's TypeError from PruneConfig.__init__.
    with pytest.raises(
        UsageError,
        match=r"^unknown option 'ratioo' \(did you mean 'ratio'\?\): the options are the fields of PruneConfig$",
    ):
        onnxprune.prune(DIGITS, "l2", ratioo=0.25)
    with pytest.raises(UsageError, match=r"^unknown options 'bogus', 'ratioo'"):
        onnxprune.PruneConfig().with_options("l2", ratioo=0.25, bogus=1)


def test_unknown_quantize_option_is_a_usage_error():
    with pytest.raises(
        UsageError,
        match=r"^unknown option 'presett' \(did you mean 'preset'\?\): the options are the fields of QuantizeConfig$",
    ):
        onnxprune.quantize(DIGITS, calibration="fixtures/digits_calibration.npz", presett="mixed")


def _python_api_section() -> str:
    text = open("README.md", encoding="utf-8").read()
    start = text.index("## Python API")
    return text[start : text.index("\n## ", start + 1)]


def test_every_public_name_is_exported_and_in_the_readme_api_section():
    import inspect
    import re

    from onnxprune import errors

    section = _python_api_section()
    # Every error class a pipeline may catch is reachable as onnxprune.<Name> (ValidationFunctionFailed was not).
    error_classes = [n for n in errors.__all__ if inspect.isclass(getattr(errors, n))]
    assert [n for n in error_classes if n not in onnxprune.__all__] == []
    undocumented = [n for n in onnxprune.__all__ if n != "__version__" and not re.search(rf"`[^`]*\b{n}\b", section)]
    assert undocumented == []
    assert onnxprune.ValidationFunctionFailed is errors.ValidationFunctionFailed
    from onnxprune.sensitivity_analysis import SensitivityResult

    assert onnxprune.SensitivityResult is SensitivityResult


def test_public_functions_are_fully_annotated():
    import inspect

    for name in onnxprune.__all__:
        obj = getattr(onnxprune, name)
        if not inspect.isfunction(obj):
            continue
        sig = inspect.signature(obj)
        missing = [p.name for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty]
        assert missing == [], (name, missing)
        assert sig.return_annotation is not inspect.Signature.empty, name


def test_apply_refuses_a_plan_made_for_another_model():
    # apply(residual, residual's analysis, digits' plan) returned a model: the plan's group ids
    # were taken as residual's groups and other channels were removed.
    digits = onnxprune.load(DIGITS)
    the_plan = onnxprune.plan(onnxprune.analyze(digits), "l2", model=digits, ratio=0.3)
    residual = onnxprune.load("fixtures/residual.onnx")
    before = residual.SerializeToString()
    with pytest.raises(
        UsageError,
        match=r"^the plan does not fit the model: its layer '/stem/stem.0/Conv' is not in the model "
        r"\(was it made for another model\?\)$",
    ):
        onnxprune.apply(residual, onnxprune.analyze(residual), the_plan)
    assert residual.SerializeToString() == before
    # on its own model the plan's channels go: each layer loses as many filters as it lists
    pruned = onnxprune.apply(digits, onnxprune.analyze(digits), the_plan)
    lost: dict[str, int] = {}
    for g in the_plan.to_dict()["removed"]:
        for node, _ in g["members"]:
            lost[node] = lost.get(node, 0) + 1
    assert lost

    def filters(model):
        weights = {i.name: i.dims[0] for i in model.graph.initializer}
        return {n.name: weights[n.input[1]] for n in model.graph.node if n.op_type == "Conv"}

    before_f, after_f = filters(digits), filters(pruned)
    assert {n: before_f[n] - after_f[n] for n in lost} == lost


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ratio": "0.5"}, r"^ratio must be a number, got str '0.5'$"),
        ({"macs_target": True}, r"^macs_target must be a number, got bool True$"),
        ({"min_fidelity": "0.9", "calibration": "c.npz"}, r"^min_fidelity must be a number, got str '0.9'$"),
        ({"seed": "a"}, r"^seed must be an integer, got str 'a'$"),
        ({"round_to": 2.0, "ratio": 0.5}, r"^round_to must be an integer, got float 2.0$"),
    ],
)
def test_a_non_number_for_a_numeric_option_is_a_usage_error(options, message):
    # ratio="0.5" was "TypeError: '<=' not supported between instances of 'float' and 'str'".
    with pytest.raises(UsageError, match=message):
        onnxprune.PruneConfig(criterion="l2", **options)


@pytest.mark.parametrize("dims", ["1,1,8,8", 8, (1, 1, 8.5, 8)])
def test_input_shapes_must_be_sequences_of_integers(dims):
    # "1,1,8,8" was ValueError: invalid literal for int() with base 10: ','; 8: TypeError.
    with pytest.raises(UsageError, match=r"^input shape of 'input' must be a sequence of integers"):
        onnxprune.analyze(DIGITS, input_shapes={"input": dims})


def test_exclude_given_as_one_string_is_one_pattern():
    import numpy as np

    assert onnxprune.PruneConfig(exclude="/stem/.*").exclude == ("/stem/.*",)
    # Before: a string was split into one-character patterns; '.' excluded every layer.
    result = onnxprune.prune(DIGITS, "l2", ratio=0.5, exclude="/stem/.*")
    assert result.report.channels_removed > 0
    removed_layers = {n for g in result.plan.to_dict()["removed"] for n, _ in g["members"]}
    assert removed_layers and not any(n.startswith("/stem/") for n in removed_layers)
    assert any(n.startswith("/stem/") for n in {n for g in result.analysis.groups for n, _ in g.members})
    # numpy scalars are numbers
    assert onnxprune.PruneConfig(ratio=np.float32(0.25), criterion="l2").ratio == np.float32(0.25)


def test_save_failing_midway_leaves_nothing_and_names_the_destination(tmp_path, monkeypatch):
    import errno

    from onnxprune import saving

    result = onnxprune.prune(DIGITS, "l2", ratio=0.25)

    def full_disk(self, path, external_data):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(saving.DeferredModel, "write_files", full_disk)
    destination = tmp_path / "m.onnx"
    with pytest.raises(OSError) as caught:
        result.save(destination)
    # was the staging folder's '.onnxprune-XXXX/m.onnx', which the CLI printed and which no longer exists
    assert caught.value.filename == str(destination)
    assert list(tmp_path.iterdir()) == []


def test_steps_given_the_wrong_kind_of_argument_raise_usage_errors(tmp_path):
    # Each was an AttributeError ("'str' object has no attribute 'graph'" / "... 'groups'").
    with pytest.raises(UsageError, match=r"^plan: expected the ChannelAnalysis of onnxprune.analyze, got str$"):
        onnxprune.plan(DIGITS, "zero")
    with pytest.raises(UsageError, match=r"^save: expected an onnx.ModelProto, got str$"):
        onnxprune.save(DIGITS, tmp_path / "m.onnx")
    with pytest.raises(UsageError, match=r"^verify: expected a path or onnx.ModelProto, got int$"):
        onnxprune.verify(onnxprune.load(DIGITS), 3)
    assert list(tmp_path.iterdir()) == []


def test_verify_takes_paths_as_the_other_steps_do():
    result = onnxprune.verify("fixtures/shuffle.onnx", "fixtures/shuffle.onnx")
    assert result.passed and all(o.max_abs_diff == 0.0 for o in result.outputs)


def test_report_to_json_is_strict_json_when_outputs_are_nan():
    import json

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=0)
    x = b.input("input", (None, 3, 8, 8))
    b.channels[x] = 3
    y = b.op("Log", b.conv(b.op("Relu", b.conv(x, 8)), 8))  # log of negative values: NaN
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", y), channels=8), 8, 4))
    report = onnxprune.prune(b.build(), "l2", ratio=0.25).report

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    with pytest.raises(ValueError, match="not JSON: NaN"):  # why to_json exists: to_dict keeps Python's nan
        json.loads(json.dumps(report.to_dict()), parse_constant=refuse)
    data = json.loads(report.to_json(indent=2), parse_constant=refuse)
    assert data["fidelity"][0]["max_abs_error"] is None
    assert data["channels_removed"] == report.channels_removed > 0


def test_quantize_report_to_json_is_strict_json():
    from types import SimpleNamespace

    duck = SimpleNamespace(to_dict=lambda words="api": {"max_abs_error": float("nan"), "cosine": 0.5})
    assert onnxprune.QuantizeReport.to_json(duck) == '{"max_abs_error": null, "cosine": 0.5}'


def test_global_and_round_to_without_a_budget_are_refused():
    # Both shape a budget's cut; without one the zero criterion ran and they were silently ignored.
    with pytest.raises(UsageError, match=r"^round_to 8 shapes a budget's cut, and no budget is given: give one \("):
        onnxprune.prune("fixtures/shuffle.onnx", round_to=8)
    with pytest.raises(
        UsageError, match=r"^global_ranking and round_to 4 shape a budget's cut, and no budget is given"
    ):
        onnxprune.PruneConfig(global_ranking=True, round_to=4)
    assert onnxprune.PruneConfig(ratio=0.2, global_ranking=True, round_to=4).criterion == "l2"


def test_sensitivity_result_to_json_is_strict_json():
    import json

    result = onnxprune.SensitivityResult(
        units=(), ratios=(0.5,), criterion="l2", samples=4, seconds=float("nan"), trials=0
    )
    assert json.loads(result.to_json())["seconds"] is None
    assert json.loads(result.to_json()) == {**result.to_dict(), "seconds": None}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # each was Python's TypeError / AttributeError / ValueError from deep inside, or silently accepted
        ({"exclude": 5}, r"^exclude must be a regular expression or a list of them, got int 5$"),
        (
            {"input_shapes": "input:1,1,8,8"},
            r"^input_shapes must be a mapping, e.g. \{'input': \(1, 3, 224, 224\)\}; got str",
        ),
        ({"input_shapes": {"input": (1, 1, -1, 8)}}, r"^input shape of 'input': dimensions must be positive"),
        ({"fidelity_metrics": "*=cosine"}, r"^fidelity_metrics must be a mapping, e.g. \{'\*': 'cosine'\}; got str"),
        ({"sensitivity_ratios": "0.1,0.2"}, r"^sensitivity_ratios must be a sequence of numbers"),
        ({"layer_rules": [3]}, r"^layer_rules entry 0 must be a LayerRule or a mapping, got int$"),
        ({"latency": {"thread": 1}}, r"^unknown option 'thread' \(did you mean 'threads'\?\)"),
        ({"latency": 1}, r"^latency must be a latency.LatencySettings, got int$"),
        (
            {"latency_target": 0.5, "latency_evaluations": 2.5},
            r"^latency_evaluations must be an integer, got float 2.5$",
        ),
        ({"verify": "no"}, r"^verify must be True or False, got str 'no'$"),  # 'no' is true: it verified
        ({"ratio": 0.5, "global_ranking": "yes"}, r"^global_ranking must be True or False, got str 'yes'$"),
        ({"calibration": 5, "ratio": 0.5}, r"^calibration must be a path \(str or os.PathLike\), got int 5$"),
        ({"criterion_reason": "mine"}, r"^criterion_reason is not an option"),
    ],
)
def test_an_option_of_the_wrong_kind_is_a_usage_error_naming_it(options, message):
    with pytest.raises(UsageError, match=message):
        onnxprune.prune(DIGITS, **{"verify": False, **options})


def test_option_mappings_are_read_as_their_objects():
    config = onnxprune.PruneConfig(latency={"threads": 1}, layer_rules=[{"op_names": "head", "exclude": True}])
    assert config.latency == onnxprune.latency.LatencySettings(threads=1)
    assert config.layer_rules == (onnxprune.LayerRule(op_names=("head",), exclude=True),)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"ignored_scope": 5},
            r"^ignored_scope must be a node name or regular expression or a list of them, got int 5$",
        ),
        ({"fast_bias_correction": "no"}, r"^fast_bias_correction must be True or False, got str 'no'$"),
        ({"evaluation_inputs": 3}, r"^evaluation_inputs must be a path \(str or os.PathLike\), got int 3$"),
    ],
)
def test_a_quantize_option_of_the_wrong_kind_is_a_usage_error_naming_it(options, message):
    with pytest.raises(UsageError, match=message):
        onnxprune.QuantizeConfig(calibration="c.npz", **options)


def test_steps_refuse_arguments_of_the_wrong_kind_and_take_paths():
    analysis = onnxprune.analyze(DIGITS)
    # registry={} was taken for no registry (the default rules); the others were raw errors
    with pytest.raises(UsageError, match=r"^registry must be a RuleRegistry, got dict$"):
        onnxprune.analyze(DIGITS, registry={})
    with pytest.raises(UsageError, match=r"^criteria must be a CriterionRegistry, got dict$"):
        onnxprune.prune(DIGITS, criteria={})
    with pytest.raises(UsageError, match=r"^pruning_plan must be a PruningPlan, got dict \(PruningPlan.from_dict"):
        onnxprune.prune(DIGITS, pruning_plan={"format": "onnxprune-plan/1"})
    with pytest.raises(UsageError, match=r"^progress must be a function \(stage, done, total\), got int$"):
        onnxprune.prune(DIGITS, progress=5)
    with pytest.raises(UsageError, match=r"^sensitivity: calibration must be the path of an .npz"):
        onnxprune.sensitivity(DIGITS, None)
    # plan(model=path) and apply(path) were "'str' object has no attribute 'opset_import'"
    the_plan = onnxprune.plan(analysis, "l2", ratio=0.25, model=DIGITS)
    with pytest.raises(UsageError, match=r"^pruning_plan must be a PruningPlan, got dict"):
        onnxprune.apply(DIGITS, analysis, the_plan.to_dict())
    pruned = onnxprune.apply(DIGITS, analysis, the_plan)
    expected = onnxprune.apply(onnxprune.load(DIGITS), analysis, the_plan)
    assert pruned.SerializeToString() == expected.SerializeToString()
    assert the_plan == onnxprune.plan(analysis, "l2", ratio=0.25, model=onnxprune.load(DIGITS))


def test_report_to_dict_is_a_copy_the_caller_may_edit():
    # to_dict() handed out the frozen report's own budget dict: a pipeline that annotated the
    # dict it got (before writing its own JSON) changed the report and every later to_dict()
    report = onnxprune.prune(DIGITS, "l2", ratio=0.25, verify=False).report
    first = report.to_dict()
    assert first["budget"]
    first["budget"]["ratio"] = "edited"
    first["budget"]["mine"] = 1
    again = report.to_dict()
    assert again["budget"]["ratio"] == 0.25 and "mine" not in again["budget"]
    assert report.budget is not None and report.budget.to_dict() == again["budget"]


def test_library_errors_name_the_api_options_and_the_cli_its_flags(tmp_path: Path) -> None:
    """prune(..., input_shapes=...) said "--input-shape names 'nope'", a flag the caller never
    gave (and ratio= with macs_target= "--ratio 0.25 and --macs-target 0.5"). A message is
    written once, in the command line's words: str(error) names the API's options, the CLI
    prints error.cli_text with its flags; a flag of the command line alone stays, and a path
    holding '--' is left as it is."""
    from cli_helpers import one_line_error, run_cli

    digits = str(Path(__file__).resolve().parent.parent / "fixtures" / "digits_cnn.onnx")
    with pytest.raises(UsageError) as caught:
        onnxprune.prune(digits, input_shapes={"nope": (1, 1, 28, 28)})
    assert str(caught.value) == f"{digits}: input_shapes names 'nope', but the model's inputs are ['input']"
    from onnxprune.errors import API_NAMES, api_words

    assert caught.value.cli_text == f"{digits}: --input-shape names 'nope', but the model's inputs are ['input']"
    line = one_line_error(run_cli("prune", digits, "-o", tmp_path / "o.onnx", "--input-shape", "nope:1,1,28,28"))
    assert line == f"onnxprune: error: {caught.value.cli_text}"
    with pytest.raises(UsageError, match=r"^ratio 0.25 and macs_target 0.5 are two budgets"):
        onnxprune.PruneConfig(ratio=0.25, macs_target=0.5)
    assert api_words("give --input-shape x:1,3,8,d3 or --ir m.xml; /tmp/--ratio/m.onnx") == (
        "give input_shapes={'x': (1, 3, 8, d3)} or --ir m.xml; /tmp/--ratio/m.onnx"
    )
    # every flag named in the library's messages is an API option or a command line's own
    package = Path(onnxprune.__file__).parent
    cli_only = {
        "--bench", "--cache-dir", "--compare-openvino", "--fp16", "--fp32", "--help", "--ir", "--json", "--layers",
        "--markdown", "--no-cache", "--node", "--output", "--plot", "--quantize", "--quiet", "--report", "--rounds",
        "--runs", "--save-plan", "--seconds-per-unit", "--static", "--throughput-seconds", "--time", "--timer",
        "--warmup",
    }  # fmt: skip
    raised = set()
    for file in package.rglob("*.py"):
        if file.name.startswith("cli"):
            continue
        for block in re.findall(r"raise \w+\((.*?)\)\s*(?:from|\n\n|$)", file.read_text(), flags=re.S):
            raised |= set(re.findall(r"(?<![\w/.-])--[a-z][a-z0-9-]*[a-z0-9]", block))
    assert raised - set(API_NAMES) - cli_only == set()
