"""Defects left by session 7 (review7): each test failed before its fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import onnxprune
from onnxprune.errors import UsageError
from onnxprune.planning import PruningPlan

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


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


# -- an original that computes NaN verified 'exact' with no word that nothing was proved there --


def _sqrt_model(shift_channel: int | None = None, shift: float = -1e9, scale_channel: int | None = None):
    """Conv -> |.| + shift -> Sqrt (4 channels, 8x8): a shift of -1e9 makes one channel NaN;
    ``scale_channel`` doubles one channel (a surgery that changed a finite value)."""
    import numpy as np

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=0)
    x = b.input("input", (1, 3, 8, 8))
    b.channels[x] = 3
    add = np.zeros((1, 4, 1, 1), np.float32)
    if shift_channel is not None:
        add[0, shift_channel] = shift
    mul = np.ones((1, 4, 1, 1), np.float32)
    if scale_channel is not None:
        mul[0, scale_channel] = 2.0
    y = b.op("Sqrt", b.op("Add", b.op("Abs", b.conv(x, 4)), b.const(add)))
    b.output(b.op("Mul", y, b.const(mul)))
    return b.build()


def test_an_original_that_computes_nan_is_reported_as_unproved_where_it_does() -> None:
    from onnxprune.cli_text import format_report, verification_lines
    from onnxprune.render import to_markdown

    nan_original = _sqrt_model(shift_channel=2)
    same = onnxprune.verify(nan_original, _sqrt_model(shift_channel=2))
    out = same.outputs[0]
    assert same.passed and out.max_abs_diff == 0.0  # the same NaN at the same places agrees
    assert (out.reference_non_finite, out.values) == (64, 256)  # one channel of 4, 8x8, batch 1
    assert same.non_finite_outputs == (out,)
    d = same.to_dict()
    assert (d["outputs"][0]["reference_non_finite"], d["outputs"][0]["values"]) == (64, 256)
    line = (
        f"  note: the original computes NaN or inf in 64 of 256 values of output {out.name!r} (batch 1): "
        "there verification only proves that the pruned model computes the same non-finite value at the same place"
    )
    assert line in verification_lines(d)
    report = onnxprune.prune(nan_original).report.to_dict()  # the zero criterion: verified against the original
    assert line in format_report(report).splitlines()
    assert (
        f"Note: the original computes NaN or inf in 64 of 256 values of output `{out.name}` (batch 1): "
        "there verification only proves that the pruned model computes the same non-finite value at the same place."
    ) in to_markdown(report).splitlines()
    # a finite original says nothing of the kind
    clean = onnxprune.verify(_sqrt_model(), _sqrt_model())
    assert clean.non_finite_outputs == () and clean.outputs[0].reference_non_finite == 0
    assert not any("non-finite" in line for line in verification_lines(clean.to_dict()))
    # the tolerance stays tight around the NaN: a finite value moved elsewhere still fails,
    # a NaN where the original is finite fails, a finite value where it is NaN fails
    assert not onnxprune.verify(nan_original, _sqrt_model(shift_channel=2, scale_channel=0)).passed
    assert not onnxprune.verify(nan_original, _sqrt_model(shift_channel=1)).passed
    assert not onnxprune.verify(nan_original, _sqrt_model()).passed


# -- latency-table wrote --json, then failed in --plot: a half-written output -----------------


def test_latency_table_writes_json_and_plot_together_or_neither(tmp_path, monkeypatch, capsys) -> None:
    import errno

    import onnxprune.latency.plot
    from onnxprune.cli import main
    from test_latency_measure import chain_model

    model = chain_model(str(tmp_path / "chain.onnx"))

    def full_disk(table, path: str, title: str = "") -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(onnxprune.latency.plot, "plot_latency_table", full_disk)
    args = ["latency-table", model, "--timer", "onnxprune.testing:step_timer", "--no-cache", "-q"]
    code = main([*args, "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"onnxprune: error: {tmp_path / 't.png'}: No space left on device; nothing written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.onnx"]  # no JSON, no staged file
    monkeypatch.undo()
    assert main([*args, "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.onnx", "t.json", "t.png"]
    assert json.loads((tmp_path / "t.json").read_text())["model"] == model


# -- verify() of two models of different interfaces showed onnxruntime's raw message ----------


def _renamed(path: Path, tmp_path: Path, *, output: str | None = None, input_shape: list | None = None) -> str:
    import onnx

    m = onnx.load(path)
    if output is not None:
        old = m.graph.output[0].name
        for node in m.graph.node:
            node.output[:] = [output if o == old else o for o in node.output]
        m.graph.output[0].name = output
    if input_shape is not None:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims, input_shape):
            d.Clear()
            if isinstance(v, int):
                d.dim_value = v
            else:
                d.dim_param = v
    out = str(tmp_path / f"changed_{output or 'shape'}.onnx")
    onnx.save(m, out)
    return out


def test_verify_of_models_with_other_outputs_or_inputs_names_both_files(tmp_path) -> None:
    from onnxprune.errors import VerificationFailed

    shuffle = str(FIXTURES / "shuffle.onnx")
    other = _renamed(FIXTURES / "shuffle.onnx", tmp_path, output="scores")
    with pytest.raises(VerificationFailed) as info:
        onnxprune.verify(shuffle, other)
    assert str(info.value) == (
        f"{other}: no output 'Gemm_115', which {shuffle} computes (its outputs: 'scores'): "
        "verify compares two models with the same inputs and outputs"
    )
    digits = str(FIXTURES / "digits_cnn.onnx")
    with pytest.raises(VerificationFailed) as info:
        onnxprune.verify(shuffle, digits)
    assert str(info.value) == (
        f"{digits}: input 'input' is float [N, 1, 8, 8], in {shuffle} float [1, 3, 16, 16]: "
        "verify compares two models with the same inputs and outputs"
    )
    # a dynamic dimension against a static one is no mismatch: the feeds fit both
    dynamic = _renamed(FIXTURES / "shuffle.onnx", tmp_path, input_shape=["N", 3, 16, 16])
    assert onnxprune.verify(shuffle, dynamic).passed
    # in memory, the models are named as what they are
    import onnx

    with pytest.raises(VerificationFailed, match=r"^the pruned model: no output 'Gemm_115', which the original computes"):
        onnxprune.verify(onnx.load(shuffle), onnx.load(other))


# -- an OSError while saving stayed a raw OSError in the API; a failed move left the data file --


def test_api_save_failures_are_typed_errors_naming_the_destination(tmp_path, monkeypatch) -> None:
    import errno
    import os

    import onnx

    from onnxprune import saving
    from onnxprune.errors import OnnxPruneError, WriteError

    model = onnx.load(FIXTURES / "digits_cnn.onnx")
    before = model.SerializeToString()
    destination = tmp_path / "m.onnx"

    def full_disk(self, path, external_data):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with monkeypatch.context() as m:
        m.setattr(saving.DeferredModel, "write_files", full_disk)
        with pytest.raises(WriteError) as caught:
            onnxprune.save(model, destination)
    assert isinstance(caught.value, OnnxPruneError) and isinstance(caught.value, OSError)
    assert str(caught.value) == f"{destination}: No space left on device; nothing written"
    assert (caught.value.filename, caught.value.errno) == (str(destination), errno.ENOSPC)
    assert list(tmp_path.iterdir()) == []

    # the data file is moved into place first: the model's move failing must not leave it there
    real_replace = os.replace

    def refuse_model(src, dst):
        if str(dst).endswith("m.onnx"):
            raise PermissionError(errno.EACCES, "Permission denied", src)
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(saving.os, "replace", refuse_model)
        with pytest.raises(WriteError, match=rf"^{destination}: Permission denied; nothing written$"):
            onnxprune.save(model, destination, external_data=True)
    assert list(tmp_path.iterdir()) == []

    # a folder it may not create its staging folder in
    def no_folder(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    import tempfile

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkdtemp", no_folder)
        with pytest.raises(WriteError, match=rf"^{destination}: Permission denied; nothing written$"):
            onnxprune.save(model, destination)
    assert list(tmp_path.iterdir()) == [] and model.SerializeToString() == before
    onnxprune.save(model, destination)  # and a write that works still works
    assert onnx.load(str(destination)).SerializeToString() == before


# -- a metric that cannot read its output ('logits=ctc' on [N, 10]) named no model file -------

_CTC = "fidelity metric 'ctc' cannot read 'logits' (shape [{n}, 10]): ctc reads [N, steps, classes] (samples first)"


def test_a_metric_that_cannot_read_its_output_names_the_model(tmp_path, capsys) -> None:
    from onnxprune.cli import main

    digits = str(FIXTURES / "digits_cnn.onnx")
    calibration = str(FIXTURES / "digits_calibration.npz")
    with pytest.raises(UsageError) as info:
        onnxprune.prune(digits, "l2", ratio=0.2, fidelity_metrics={"logits": "ctc"})
    assert str(info.value) == f"{digits}: " + _CTC.format(n=3)
    with pytest.raises(UsageError) as info:
        onnxprune.sensitivity(digits, calibration, fidelity_metrics={"logits": "ctc"}, calibration_limit=8)
    assert str(info.value) == f"{digits}: " + _CTC.format(n=8)
    import onnx

    with pytest.raises(UsageError) as info:  # in memory: named as the other errors name it
        onnxprune.prune(onnx.load(digits), "l2", ratio=0.2, fidelity_metrics={"logits": "ctc"})
    assert str(info.value) == "<model>: " + _CTC.format(n=3)
    out = tmp_path / "o.onnx"
    args = ["prune", digits, "-o", str(out), "--ratio", "0.2", "--fidelity-metric", "logits=ctc", "-q"]
    assert main([*args, "--calibration", calibration, "--calibration-limit", "8"]) == 2
    assert capsys.readouterr().err == f"onnxprune: error: {digits}: " + _CTC.format(n=2) + "\n"
    assert list(tmp_path.iterdir()) == []


# -- stages/decide.py split (trials.py): the benchmark tool's patch of decide.sensitivity_trials --


def test_a_patch_of_decide_sensitivity_trials_still_reaches_the_fidelity_search(monkeypatch) -> None:
    import onnxprune.stages.decide as decide
    from onnxprune.stages import trials

    assert decide.sensitivity_trials is trials.sensitivity_trials  # re-exported: imports unchanged
    assert decide.known_macs is trials.known_macs and decide.estimates is trials.estimates
    calls = []
    real = decide.sensitivity_trials

    def counted(*args, **kwargs):  # as tools/fidelity_real_cells.SharedSensitivity wraps it
        calls.append(kwargs.get("floor"))
        return real(*args, **kwargs)

    monkeypatch.setattr(decide, "sensitivity_trials", counted)
    r = onnxprune.prune(
        FIXTURES / "digits_cnn.onnx",
        calibration=str(FIXTURES / "digits_calibration.npz"),
        min_fidelity=0.9,
        calibration_limit=16,
    )
    assert calls == [0.9] and r.report.sensitivity is not None


# -- --recalibrate ignored layers reading a changed tensor only inside an If/Loop subgraph -----


def _if_model(branches_read: bool = True):
    """x -> Conv a (8) -> Relu -> Conv b (8) -> Relu = t; If (constant true) whose branches read t
    from the outer graph (Identity / Neg) -> u; Conv c (6) reads u; Conv d (4) reads c's output.
    Removing channels of a drifts b directly, and c and d only through the If's subgraph."""
    import numpy as np
    from onnx import TensorProto, helper

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=3)
    x = b.input("input", (None, 3, 8, 8))
    b.channels[x] = 3
    t = b.op("Relu", b.conv(b.op("Relu", b.conv(x, 8)), 8))
    branches = {}
    for kind, op in (("then", "Identity"), ("else", "Neg")):
        out = helper.make_tensor_value_info(f"{kind}_out", TensorProto.FLOAT, None)
        branches[kind] = helper.make_graph([helper.make_node(op, [t], [f"{kind}_out"])], kind, [], [out])
    cond = b.const(np.array(True), "cond")  # in both: the same names for the same nodes
    if branches_read:
        b.nodes.append(
            helper.make_node("If", [cond], ["u"], then_branch=branches["then"], else_branch=branches["else"], name="if")
        )
    else:  # what the If computes, read as an input: the plain model's corrections are the reference
        b.nodes.append(helper.make_node("Identity", [t], ["u"], name="if"))
    b.channels["u"] = 8
    c = b.op("Relu", b.conv("u", 6))
    b.output(b.conv(c, 4))
    return b.build()


def test_recalibration_follows_tensors_read_inside_subgraphs() -> None:
    import numpy as np

    import onnx
    import onnx.numpy_helper

    from onnxprune.recalibration import recalibrate

    model = _if_model()
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    analysis = onnxprune.analyze(model)
    first = analysis.sources[0].node
    full = onnxprune.plan(analysis, "l2", model=model, ratio=0.5)
    ours = tuple(g for g in full.removed_groups if {n for n, _ in analysis.group(g).members} == {first})
    assert len(ours) == 4
    the_plan = PruningPlan("l2", ours)  # channels of a alone
    pruned = onnxprune.apply(model, analysis, the_plan)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    fixed, layers = recalibrate(model, pruned, analysis, the_plan, feeds, max_passes=32)
    # b reads a's output directly; c and d are downstream of the If, which reads b's output in
    # its branches only: before, neither was corrected (nor said so)
    assert [layer.node for layer in layers] == convs[1:]
    # ... and they are corrected as in the same model with the If's value read directly
    plain = _if_model(branches_read=False)
    plain_analysis = onnxprune.analyze(plain)
    plain_plan = PruningPlan("l2", ours)
    assert [g.members for g in plain_analysis.groups] == [g.members for g in analysis.groups]
    plain_fixed, plain_layers = recalibrate(
        plain, onnxprune.apply(plain, plain_analysis, plain_plan), plain_analysis, plain_plan, feeds, max_passes=32
    )
    assert layers == plain_layers
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in fixed.graph.initializer}
    for t in plain_fixed.graph.initializer:
        assert np.array_equal(weights[t.name], onnx.numpy_helper.to_array(t)), t.name


@pytest.mark.parametrize("command", ["prune", "sensitivity"])
def test_a_plot_failing_to_write_names_the_plot_not_a_staging_file(tmp_path, monkeypatch, capsys, command) -> None:
    import errno

    import onnxprune.render
    from onnxprune.cli import main

    def full_disk(data, path: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(onnxprune.render, "plot_report" if command == "prune" else "plot_sensitivity", full_disk)
    digits, plot = str(FIXTURES / "digits_cnn.onnx"), tmp_path / "p.png"
    calibration = ["--calibration", str(FIXTURES / "digits_calibration.npz"), "--ratios", "0.5"]
    args = {
        "prune": ["prune", digits, "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.json")],
        "sensitivity": ["sensitivity", digits, *calibration, "--json", str(tmp_path / "s.json")],
    }[command]
    assert main([*args, "--plot", str(plot), "-q"]) == 2
    assert capsys.readouterr().err == f"onnxprune: error: {plot}: No space left on device; nothing written\n"
    assert list(tmp_path.iterdir()) == []
