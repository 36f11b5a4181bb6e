"""PruningPlan: its JSON (--save-plan) is strict and reads back; a malformed plan is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxprune.errors import UsageError
from onnxprune.planning import PruningPlan


def _refuse(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_saved_plan_is_strict_json_and_reads_back() -> None:
    plan = PruningPlan(
        criterion="l2",
        removed_groups=(3, 1, 2),
        scores={1: float("nan"), 2: float("inf"), 3: 0.25},
        members={1: (("a", 0),), 2: (("a", 1),), 3: (("b", 4),)},
        kept_reasons={7: ("pinned by output",)},
    )
    text = plan.to_json()
    data = json.loads(text, parse_constant=_refuse)  # NaN/Infinity are not JSON
    assert [e["score"] for e in data["removed"]] == [None, None, 0.25]
    back = PruningPlan.from_dict(data)
    assert back.removed_groups == (1, 2, 3)
    assert dict(back.scores) == {3: 0.25}  # a non-finite score is no score, as null reads back
    assert dict(back.members) == dict(plan.members)
    assert dict(back.kept_reasons) == dict(plan.kept_reasons)
    assert back.to_json() == PruningPlan.from_dict(json.loads(back.to_json())).to_json()


@pytest.mark.parametrize("score", ["high", [1], {"a": 1}, True])
def test_plan_with_a_score_that_is_no_number_is_refused(score: object) -> None:
    data = json.loads(PruningPlan(criterion="l2", removed_groups=(1,), scores={1: 0.5}).to_json())
    data["removed"][0]["score"] = score
    with pytest.raises(UsageError, match=r"^malformed plan: group 1's score .* is not a number$"):
        PruningPlan.from_dict(data)


@pytest.mark.parametrize(
    ("kept", "why"),
    [
        ({"x": ["pinned"]}, r"kept_reasons names group 'x', not a group number"),
        ([], r"kept_reasons is list, not an object of group -> reasons"),
        ({"1": 5}, r"group 1's kept reasons 5 are not a list of strings"),
        ({"1": "pinned"}, r"group 1's kept reasons 'pinned' are not a list of strings"),
        ({"1": [3]}, r"group 1's kept reasons \[3\] are not a list of strings"),
    ],
)
def test_plan_with_malformed_kept_reasons_is_refused(kept: object, why: str) -> None:
    # before: a raw ValueError / AttributeError / TypeError (the CLI: 'internal error', exit 3),
    # and a bare string was read as one reason per character
    data = json.loads(PruningPlan(criterion="l2", removed_groups=(1,), kept_reasons={2: ("pinned",)}).to_json())
    data["kept_reasons"] = kept
    with pytest.raises(UsageError, match=rf"^malformed plan: {why}$"):
        PruningPlan.from_dict(data)


@pytest.mark.parametrize("key", ["removed"])
def test_plan_missing_a_key_names_it(key: str) -> None:
    # before: "malformed plan: 'removed'" (a KeyError's bare text)
    data = json.loads(PruningPlan(criterion="l2", removed_groups=(1,), kept_reasons={2: ("pinned",)}).to_json())
    del data[key]
    with pytest.raises(UsageError, match=rf"^malformed plan: missing key '{key}'$"):
        PruningPlan.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("channel", 2.5, r"conv's channel 2.5 is not a whole number"),
        ("channel", True, r"conv's channel True is not a whole number"),
        ("group", 1.5, r"group 1.5 is not a whole number"),
    ],
)
def test_plan_with_a_channel_or_group_that_is_no_whole_number_is_refused(field: str, value: object, why: str) -> None:
    # before: int() read channel 2.5 as channel 2, removing another channel than the file names
    data = json.loads(PruningPlan(criterion="l2", removed_groups=(1,), members={1: (("conv", 2),)}).to_json())
    if field == "channel":
        data["removed"][0]["members"][0][1] = value
    else:
        data["removed"][0]["group"] = value
    with pytest.raises(UsageError, match=rf"^malformed plan: {why}$"):
        PruningPlan.from_dict(data)
    data["removed"][0]["members"][0][1], data["removed"][0]["group"] = 2.0, 1.0  # a whole number written as a float
    assert PruningPlan.from_dict(data).members == {1: (("conv", 2),)}


def test_a_plan_for_another_model_names_the_plan_file_the_model_and_the_reason(tmp_path) -> None:
    """--plan made for another model named only the model ('M.onnx: plan: layer ... is not in
    this model'): now the plan's file first, the model, and what does not match (which layer,
    which channel), from the CLI and from PruningPlan.load in the library alike."""
    from pathlib import Path

    from cli_helpers import one_line_error, run_cli

    import onnxprune

    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    saved = tmp_path / "p.json"
    made = run_cli(
        "prune", fixtures / "digits_cnn.onnx", "-o", tmp_path / "y.onnx", "--ratio", "0.2", "--save-plan", saved, "-q"
    )
    assert made.returncode == 0, made.stderr
    other = fixtures / "residual.onnx"
    layer = json.loads(saved.read_text())["removed"][0]["members"][0][0]
    why = f"the plan does not fit {other}: its layer {layer!r} is not in the model (was it made for another model?)"
    line = one_line_error(run_cli("prune", other, "-o", tmp_path / "o.onnx", "--plan", saved))
    assert line == f"onnxprune: error: {saved}: {why}"
    plan = PruningPlan.load(saved)
    assert plan.source == str(saved) and plan == PruningPlan.from_dict(json.loads(saved.read_text()))
    with pytest.raises(UsageError) as caught:
        onnxprune.prune(str(other), pruning_plan=plan)
    assert str(caught.value) == f"{saved}: {why}"

    data = json.loads(saved.read_text())  # edited by hand: a channel the layer does not have
    node = data["removed"][0]["members"][0][0]
    data["removed"][0]["members"][0][1] = 999
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    model = fixtures / "digits_cnn.onnx"
    line = one_line_error(run_cli("prune", model, "-o", tmp_path / "o.onnx", "--plan", edited))
    assert line.startswith(f"onnxprune: error: {edited}: the plan does not fit {model}: its layer {node!r} loses ")
    assert "output channel 999, but has " in line and line.endswith(" in the model (was it made for another model?)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.json", "p.json", "y.onnx"]


def test_a_plan_made_with_rules_applied_without_them_says_so(tmp_path: Path) -> None:
    """A plan saved with --rules (a custom op's rule lets its channels go) applied without them
    asked '(was it made for another model?)' of the very model it was made for."""
    from cli_helpers import one_line_error, run_cli

    root = Path(__file__).resolve().parent.parent / "fixtures"
    model, rules = root / "custom_activation.onnx", f"{root / 'custom_rules.py'}:registry"
    plan = tmp_path / "plan.json"
    p = run_cli("prune", model, "-o", tmp_path / "a.onnx", "--rules", rules, "--save-plan", plan, "-q")
    assert p.returncode == 0, p.stderr
    err = one_line_error(run_cli("prune", model, "-o", tmp_path / "b.onnx", "--plan", plan, "-q"))
    assert err.startswith(f"onnxprune: error: {plan}: the plan does not fit {model}: ") and "has no rule" in err
    assert err.endswith("(was it made with rules for custom ops (--rules)? give the same)"), err
    p = run_cli("prune", model, "-o", tmp_path / "b.onnx", "--plan", plan, "--rules", rules, "-q")
    assert p.returncode == 0, p.stderr


def test_options_a_given_plan_would_drop_are_refused(tmp_path: Path) -> None:
    """prune --plan p.json --ratio 0.5 (or --criterion fpgm, --exclude, --macs-target)
    applied the plan and dropped the option without a word, exit 0; with --ratio the header even
    said 'criterion: l2 (default: a budget (--ratio) without --criterion means l2)'. Now refused
    before any work, from the CLI and the library alike; the plan's own criterion may be given."""
    from cli_helpers import one_line_error, run_cli

    import onnxprune

    model = Path(__file__).resolve().parent.parent / "fixtures" / "residual.onnx"
    saved = tmp_path / "p.json"
    made = run_cli("prune", model, "-o", tmp_path / "y.onnx", "--ratio", "0.3", "--save-plan", saved, "--no-verify")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "o.onnx"
    plan = ("-o", out, "--plan", saved, "--no-verify", "-q")
    assert one_line_error(run_cli("prune", model, *plan, "--ratio", "0.5")) == (
        "onnxprune: error: --ratio cannot go with --plan: a given plan is applied as it is; "
        "drop it, or plan anew without --plan"
    )
    line = one_line_error(run_cli("prune", model, *plan, "--criterion", "fpgm", "--exclude", "Conv_node_4"))
    assert line == (
        "onnxprune: error: --criterion fpgm, --exclude cannot go with --plan: a given plan is applied as "
        "it is (it was made with --criterion l2); drop them, or plan anew without --plan"
    )
    assert not out.exists()
    with pytest.raises(UsageError, match=r"^macs_target cannot go with pruning_plan"):
        onnxprune.prune(str(model), pruning_plan=PruningPlan.load(saved), macs_target=0.5, verify=False)
    p = run_cli("prune", model, *plan, "--criterion", "l2")
    assert p.returncode == 0, p.stderr


def test_exclude_with_the_zero_criterion_is_refused(tmp_path: Path) -> None:
    """prune --exclude Conv_node_4 (no budget: the zero criterion) removed Conv_node_4's zero
    filters all the same (16 -> 14), exit 0, not a word: exact removal never read the
    exclusions. Now refused before any work, CLI and library; with a budget it applies."""
    from cli_helpers import one_line_error, run_cli

    import onnxprune

    model = Path(__file__).resolve().parent.parent / "fixtures" / "residual.onnx"
    out = tmp_path / "o.onnx"
    line = one_line_error(run_cli("prune", model, "-o", out, "--exclude", "Conv_node_4"))
    assert line == (
        "onnxprune: error: --exclude 'Conv_node_4': exclusions protect layers from a budget's cut, and criterion "
        "'zero' has none: it removes only provably constant channels (exact, the outputs unchanged) and would "
        "ignore them; give a budget (e.g. --ratio) or drop the exclusions"
    )
    assert not out.exists()
    with pytest.raises(UsageError, match=r"^exclude 'Conv_node_4': exclusions protect"):
        onnxprune.prune(str(model), exclude="Conv_node_4", verify=False)
    result = onnxprune.prune(str(model), "l2", ratio=0.3, exclude="^Conv_node_4$", verify=False)
    assert all(n != "Conv_node_4" for g in result.plan.to_dict()["removed"] for n, _ in g["members"])


def test_config_file_exclusions_with_the_zero_criterion_are_refused_as_exclude_is(tmp_path: Path) -> None:
    """--config with an 'exclude: true' entry and no budget (the zero criterion) removed the
    excluded layer's zero filters (Conv_node_4 16 -> 14), exit 0, where --exclude of the same
    layer was refused: the two routes now say the same, CLI and library (layer_rules=), naming
    the file's entry; with a budget the entry applies. With --plan, the file is refused as
    --exclude is."""
    from cli_helpers import one_line_error, run_cli

    import onnxprune

    model = Path(__file__).resolve().parent.parent / "fixtures" / "residual.onnx"
    config, out = tmp_path / "keep.yaml", tmp_path / "o.onnx"
    config.write_text("- op_names: ['^Conv_node_4$']\n  exclude: true\n")
    line = one_line_error(run_cli("prune", model, "-o", out, "--config", config))
    assert line == (
        f"onnxprune: error: {config}: entry 0 (exclude: true): exclusions protect layers from a budget's cut, and "
        "criterion 'zero' has none: it removes only provably constant channels (exact, the outputs unchanged) and "
        "would ignore them; give a budget (e.g. --ratio) or drop the exclusions"
    )
    assert not out.exists()
    with pytest.raises(UsageError, match=r"^layer_rules entry 0 \(exclude: true\): exclusions protect"):
        onnxprune.prune(str(model), layer_rules=[{"op_names": "^Conv_node_4$", "exclude": True}], verify=False)
    with pytest.raises(UsageError, match=r"^layer_rules entry 0 \(sparsity 0\): exclusions protect"):
        onnxprune.prune(str(model), layer_rules=[{"op_names": "^Conv_node_4$", "sparsity": 0.0}], verify=False)
    p = run_cli("prune", model, "-o", out, "--config", config, "--ratio", "0.3", "--save-plan", tmp_path / "p.json")
    assert p.returncode == 0, p.stderr
    plan = json.loads((tmp_path / "p.json").read_text())
    assert all(n != "Conv_node_4" for g in plan["removed"] for n, _ in g["members"])
    line = one_line_error(
        run_cli("prune", model, "-o", tmp_path / "o2.onnx", "--plan", tmp_path / "p.json", "--config", config)
    )
    assert line.startswith("onnxprune: error: --config cannot go with --plan: a given plan is applied as it is")


def test_an_exclusion_that_names_no_layer_is_refused(tmp_path: Path) -> None:
    """--exclude Conv_nod_4 (a typo) matched no layer and protected nothing, exit 0: the user
    thought Conv_node_4 safe. Refused before any work, naming the pattern and the closest layer
    names, CLI and library; a --config entry matching no layer too, naming its file."""
    from cli_helpers import one_line_error, run_cli

    import onnxprune

    model = Path(__file__).resolve().parent.parent / "fixtures" / "residual.onnx"
    out = tmp_path / "o.onnx"
    line = one_line_error(run_cli("prune", model, "-o", out, "--ratio", "0.3", "--exclude", "Conv_nod_4$"))
    assert line == (
        f"onnxprune: error: {model}: --exclude 'Conv_nod_4$' matches no layer's node name, so it protects nothing "
        "(its layers are 7 Conv/Gemm nodes; closest: 'Conv_node_4', 'Conv_node_64', 'Conv_node_54')"
    )
    assert not out.exists()
    with pytest.raises(UsageError, match=r"exclude 'nothing' matches no layer's node name"):
        onnxprune.prune(str(model), ratio=0.3, exclude="nothing", verify=False)
    analysis = onnxprune.analyze(str(model))
    with pytest.raises(UsageError, match=r"exclude 'nothing' matches no layer's node name"):
        onnxprune.plan(analysis, "l2", model=str(model), ratio=0.3, exclude="nothing")
    config = tmp_path / "c.yaml"
    config.write_text("- op_types: [Conv]\n  sparsity: 0.3\n- op_names: ['Conv_node_44']\n  exclude: true\n")
    line = one_line_error(run_cli("prune", model, "-o", out, "--config", config))
    assert line == (
        f"onnxprune: error: {config}: entry 1 (op_names ['Conv_node_44']) matches no layer of {model}, so it "
        "protects nothing (its layers are 7 Conv/Gemm nodes; closest: 'Conv_node_4', 'Conv_node_64', 'Conv_node_54')"
    )
    config.write_text("- op_types: [ConvTranspose]\n  sparsity: 0.3\n")
    line = one_line_error(run_cli("prune", model, "-o", out, "--config", config))
    assert "entry 0 (op_types ['ConvTranspose']) matches no layer of" in line and "sets the sparsity of nothing" in line
    assert not out.exists()
