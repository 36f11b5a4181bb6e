"""Budgets, dependency-aware planning, the plan round trip, and compensation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune import cli
from onnxprune.testing import GraphBuilder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _kept(result: onnxprune.PruneResult) -> dict[str, int]:
    removed = set(result.plan.removed_groups)
    return {
        s.node: sum(1 for r in result.analysis.roots(s.ids) if int(r) not in removed) for s in result.analysis.sources
    }


def _residual_pair() -> onnx.ModelProto:
    """conv a (8) -> relu -> conv c (8); a + c -> conv out: a and c share every channel."""
    b = GraphBuilder(opset=17, seed=9)
    x = b.input("x", [None, 3, 8, 8])
    a = b.op("Relu", b.conv(x, 8))
    c = b.conv(a, 8)
    inner = b.op("Relu", b.conv(x, 12))  # a layer of its own
    y = b.op("Add", b.op("Add", a, c), b.conv(inner, 8, k=1, pads=0))
    b.output(b.conv(b.op("Relu", y), 2))
    return b.build()


def test_per_layer_ratio_and_shared_groups() -> None:
    r = onnxprune.prune(_residual_pair(), "l2", ratio=0.25)
    kept = _kept(r)
    names = [s.node for s in r.analysis.sources]
    # the three layers joined by the Adds lose 2 of 8 together; the lone 12-channel layer 3
    assert [kept[n] for n in names[:4]] == [6, 6, 9, 6]


def test_config_file_sparsity_and_exclude(tmp_path: Path) -> None:
    model = _residual_pair()
    names = [s.node for s in onnxprune.analyze(model).sources]
    yaml_cfg = tmp_path / "c.yaml"
    yaml_cfg.write_text(f"- op_types: [Conv]\n  sparsity: 0.5\n- op_names: ['{names[2]}']\n  exclude: true\n")
    r = onnxprune.prune(model, "l2", layer_rules=onnxprune.config.load_layer_rules(yaml_cfg))
    kept = _kept(r)
    assert kept[names[2]] == 12  # excluded
    assert kept[names[0]] == 4  # 50%
    json_cfg = tmp_path / "c.json"
    json_cfg.write_text(json.dumps({"config_list": [{"op_names": [names[2]], "sparsity": 0.5}]}))
    r = onnxprune.prune(model, "l2", layer_rules=onnxprune.config.load_layer_rules(json_cfg))
    assert _kept(r)[names[2]] == 6 and _kept(r)[names[0]] == 8


def test_exclude_pattern_and_minimum_one_channel() -> None:
    model = _residual_pair()
    names = [s.node for s in onnxprune.analyze(model).sources]
    r = onnxprune.prune(model, "l2", ratio=0.99, exclude=(names[2],))
    kept = _kept(r)
    assert kept[names[2]] == 12
    assert all(v >= 1 for v in kept.values())
    assert any("--exclude" in reason for g in r.report.kept_groups for reason in g.reasons)


def test_round_to() -> None:
    r = onnxprune.prune(FIXTURES / "residual.onnx", "l2", ratio=0.3, round_to=4)
    for layer in r.report.layers:
        assert layer.channels_after % 4 == 0, layer


def test_global_ratio() -> None:
    r = onnxprune.prune(FIXTURES / "residual.onnx", "l2", ratio=0.2, global_ranking=True)
    prunable = r.report.channels_total - 10  # the classifier's 10 outputs reach the graph output
    assert r.report.channels_removed >= int(0.2 * r.report.channels_total)
    assert r.report.channels_removed < prunable


def test_macs_target() -> None:
    r = onnxprune.prune(FIXTURES / "residual.onnx", "l2", macs_target=0.6)
    assert r.report.macs_after <= 0.6 * r.report.macs_before
    assert r.report.macs_after >= 0.5 * r.report.macs_before  # it stops near the target


def test_plan_round_trip_and_edit() -> None:
    model = onnx.load(FIXTURES / "residual.onnx")
    first = onnxprune.prune(model, "l2", ratio=0.25)
    data = json.loads(first.plan.to_json())
    again = onnxprune.prune(model, pruning_plan=onnxprune.PruningPlan.from_dict(data))
    assert again.model.SerializeToString() == first.model.SerializeToString()
    data["removed"] = data["removed"][:3]  # a user keeps all but three groups
    edited = onnxprune.prune(model, pruning_plan=onnxprune.PruningPlan.from_dict(data))
    assert edited.report.groups_removed == 3
    assert edited.report.verification.passed


def test_plan_naming_a_pinned_group_is_refused() -> None:
    model = onnx.load(FIXTURES / "residual.onnx")
    analysis = onnxprune.analyze(model)
    pinned = next(g for g in analysis.groups if g.pinned)
    bad = onnxprune.PruningPlan(criterion="hand", removed_groups=(pinned.id,), members={pinned.id: pinned.members})
    with pytest.raises(onnxprune.UsageError, match="cannot be removed"):
        onnxprune.prune(model, pruning_plan=bad)


def test_compensation_helps_constant_like_channels(tmp_path: Path) -> None:
    """Channels with small filters but a large bias are big constants the next layer relies on:
    removing them with compensation keeps the output; without, it does not."""
    b = GraphBuilder(opset=17, seed=12)
    x = b.input("x", [None, 3, 8, 8])
    w = b.weights([8, 3, 1, 1])
    w[[1, 5]] *= 0.01
    bias = np.zeros(8, np.float32)
    bias[[1, 5]] = 3.0
    y = b.op("Relu", b.op("Conv", x, b.const(w, "W"), b.const(bias, "B"), channels=8, kernel_shape=[1, 1]))
    b.output(b.conv(y, 4, k=1, pads=0))
    model = b.build()
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32))
    cos = {}
    for mode in ("none", "data-free", "calibration"):
        r = onnxprune.prune(model, "l2", ratio=0.25, compensation=mode, calibration=str(calib))
        assert sorted(
            c for c, k in enumerate(r.analysis.roots(r.analysis.sources[0].ids)) if int(k) in r.plan.removed_groups
        ) == [1, 5]
        cos[mode] = r.report.fidelity[0].cosine
    assert cos["data-free"] > 0.999 and cos["calibration"] > 0.999
    assert cos["none"] < 0.99


def test_cli_lossy_with_plan_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out1, out2, plan = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "p.json"
    report = tmp_path / "r.json"
    model = str(FIXTURES / "yolo_like.onnx")
    assert (
        cli.main(
            [
                "prune",
                model,
                "-o",
                str(out1),
                "--criterion",
                "fpgm",
                "--ratio",
                "0.25",
                "--save-plan",
                str(plan),
                "--report",
                str(report),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "fidelity vs the original" in text and "cosine" in text
    data = json.loads(report.read_text())
    assert data["fidelity"] and data["verification"]["passed"] and data["budget"]["ratio"] == 0.25
    assert cli.main(["prune", model, "-o", str(out2), "--plan", str(plan), "-q"]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    assert cli.main(["prune", model, "-o", str(out2), "--criterion", "l2", "--ratio", "1.5"]) == 2
    assert (
        cli.main(
            [
                "prune",
                model,
                "-o",
                str(out2),
                "--criterion",
                "l2",
                "--ratio",
                "0.2",
                "--config",
                str(tmp_path / "nope.yaml"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_config_that_is_not_text_is_a_usage_error(tmp_path, suffix: str) -> None:
    from onnxprune.config import load_layer_rules
    from onnxprune.errors import UsageError

    binary = tmp_path / f"config{suffix}"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    # before: a raw UnicodeDecodeError (the CLI: 'internal error', exit 3)
    with pytest.raises(UsageError) as info:
        load_layer_rules(binary)
    assert str(info.value) == f"{binary}: cannot read config (not UTF-8 text)"


def test_config_entries_take_one_string_and_refuse_wrong_types(tmp_path: Path) -> None:
    from onnxprune.config import load_layer_rules
    from onnxprune.errors import UsageError

    model = _residual_pair()
    names = [s.node for s in onnxprune.analyze(model).sources]
    one = tmp_path / "one.yaml"  # `op_types: Conv` was ('C', 'o', 'n', 'v'): no layer matched, nothing pruned
    one.write_text(f"- op_types: Conv\n  sparsity: 0.5\n- op_names: {names[2]}\n  exclude: true\n")
    rules = load_layer_rules(one)
    assert [(r.op_types, r.op_names) for r in rules] == [(("Conv",), ()), ((), (names[2],))]
    kept = _kept(onnxprune.prune(model, "l2", layer_rules=rules))
    assert kept[names[2]] == 12 and kept[names[0]] == 4  # before: every layer kept all its channels
    # the same entries as mappings through the API, read as the file's are
    assert onnxprune.PruneConfig(layer_rules=[{"op_types": "Conv", "sparsity": 0.5}]).layer_rules == rules[:1]
    for text, message in (
        ('[{"op_types": ["Conv"], "sparsity": "abc"}]', "entry 0: config entry sparsity must be a number, got 'abc'"),
        # "false" is a non-empty string: it excluded the layer
        (
            '[{"op_names": ["x"], "exclude": "false"}]',
            "entry 0: config entry exclude must be true or false, got str 'false'",
        ),
        (
            '[{"op_types": null, "sparsity": 0.3}]',
            "entry 0: config entry op_types must be an op type or a list of them, got NoneType None",
        ),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UsageError) as info:  # 'abc' was an internal error (ValueError), exit 3
            load_layer_rules(bad)
        assert str(info.value) == f"{bad}: {message}"


def test_a_config_mapping_with_an_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    """A misspelt key (``config-list``) was ignored: the run pruned without the user's rules."""
    from onnxprune.errors import UsageError

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"config-list": [{"op_names": ["x"], "exclude": True}]}))
    with pytest.raises(
        UsageError, match=r"c\.json: unknown key 'config-list' in the config mapping; it takes config_list"
    ):
        onnxprune.config.load_layer_rules(cfg)
    cfg.write_text(json.dumps({"config_list": [], "rules": None}))
    assert onnxprune.config.load_layer_rules(cfg) == ()
