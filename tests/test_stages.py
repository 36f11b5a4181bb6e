"""The pipeline's stages one by one: each returns typed, frozen data, and composed by hand they
give the file and report that ``prune`` gives; the report's typed fields are its JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import onnxprune
from onnxprune import api, stages
from onnxprune.budget import finish_plan, pinned_reasons
from onnxprune.errors import UsageError
from onnxprune.planning import enforce_constraints
from onnxprune.reconstruction import ReconstructedLayer
from onnxprune.saving import DeferredModel
from onnxprune.sensitivity_analysis import SensitivityResult

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DIGITS = str(FIXTURES / "digits_cnn.onnx")
CALIBRATION = str(FIXTURES / "digits_calibration.npz")  # 64 samples

REPORT_KEYS = [
    "format",  # "onnxprune-report/1": what the JSON is, its layout's version
    "model",
    "criterion",
    "criterion_reason",
    "channels_total",
    "channels_removed",
    "groups_total",
    "groups_removed",
    "params_before",
    "params_after",
    "macs_before",
    "macs_after",
    "macs_complete",
    "size_before",
    "size_after",
    "layers",
    "kept_groups",
    "verification",
    "notes",
    "fidelity",
    "fidelity_on_random_inputs",
    "compensation",
    "verified_against",
    "budget",
    "fidelity_score",
    "fidelity_metrics",
    "evaluation",
    "data_note",
    "reconstructed_layers",
    "sensitivity",
    "macs_unknown",
    "validation",  # the user's validation function (None without one), added last
    "generalisation",  # calibration vs held-out fidelity (None without held-out samples)
    "recalibrated_layers",  # re-calibration after pruning (empty without --recalibrate)
    "latency",
]


def _run(**options: object) -> stages.Run:
    return stages.Run(onnxprune.PruneConfig(**options), onnxprune.default_registry(), onnxprune.default_criteria())


def test_stages_by_hand_give_what_prune_gives(tmp_path: Path) -> None:
    run = _run(criterion="l2", ratio=0.2, calibration=CALIBRATION)
    loaded = stages.load(DIGITS)
    assert (loaded.source, loaded.size, loaded.runnable) == (DIGITS, os.path.getsize(DIGITS), DIGITS)
    assert loaded.initializers is not None
    analysis = stages.analyse(loaded, run)
    data = stages.calibrate(loaded, analysis, run, lossy=True)
    assert (len(data.calibration), len(data.evaluation)) == (48, 16)  # every 4th sample held out
    assert "split 3:1" in data.note and data.stats is not None  # auto compensation reads the statistics
    scores = stages.score(loaded, analysis, data, run)
    assert set(scores) == {s.node for s in analysis.sources}
    planned = stages.plan(loaded, analysis, scores, data, run)
    assert planned.sensitivity is None and planned.plan.removed_groups and not planned.plan.exact
    comp = stages.compensate(loaded, analysis, planned.plan, data, run)
    assert comp.mode == "calibration" and comp.estimates
    original = stages.measure_original(loaded, analysis)
    assert original.size == loaded.size and original.cost.macs > 0
    assert not stages.may_consume(planned.plan, run.config)
    pruned = api.apply(loaded, analysis, planned.plan, registry=run.registry, estimates=comp.estimates, deferred=True)
    assert isinstance(pruned, DeferredModel)
    loaded = loaded.after_surgery()
    assert loaded.initializers is None and loaded.proto is not None
    stages.check(pruned, loaded.source)
    out = tmp_path / "by_hand.onnx"
    with stages.staging(pruned, out, None, run.config) as staged:
        assert staged is not None and os.path.dirname(staged.path) != str(tmp_path)  # verified where it is staged
        verified = stages.verify(loaded, analysis, planned.plan, comp, pruned, staged, data, run)
        assert verified.result is not None and verified.result.passed
        assert verified.reference == "original with removed channels replaced where read"
        assert verified.inputs.startswith("16 evaluation samples") and len(verified.feeds) == 16
        recovered = stages.recover(loaded, analysis, planned.plan, pruned, data, run)
        assert recovered.model is pruned and recovered.layers == ()  # no reconstruction asked for
        measured = stages.measure(loaded, planned.plan, pruned, staged, verified, run)
        assert measured.score == min(m.value for m in measured.metrics) and 0.0 < measured.score <= 1.0
        assert not out.exists()  # written once measured
        size = stages.write(pruned, staged, out, None)
    assert size == out.stat().st_size and not list(tmp_path.glob(".onnxprune-*"))
    report = stages.report(loaded, analysis, planned, data, comp, original, recovered, verified, measured, size, run)

    result = onnxprune.prune(DIGITS, "l2", ratio=0.2, calibration=CALIBRATION, output=tmp_path / "prune.onnx")
    assert out.read_bytes() == (tmp_path / "prune.onnx").read_bytes()
    assert json.dumps(report.to_dict()) == json.dumps(result.report.to_dict())
    for value in (loaded, data, planned, comp, original, verified, recovered, measured, run):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.__setattr__(dataclasses.fields(value)[0].name, None)


def test_exact_runs_need_no_scores_and_no_compensation() -> None:
    run = _run()
    loaded = stages.load(FIXTURES / "residual.onnx")
    analysis = stages.analyse(loaded, run)
    data = stages.calibrate(loaded, analysis, run, lossy=False)
    assert data == stages.CalibrationData()
    assert stages.score(loaded, analysis, data, run) is None
    given = onnxprune.plan(analysis)
    assert (
        stages.score(loaded, analysis, data, _run(criterion="l2", ratio=0.5), given=given) is None
    )  # a given plan: no scoring
    planned = stages.plan(loaded, analysis, None, data, run)
    assert planned.plan == given and planned.plan.exact
    assert stages.compensate(loaded, analysis, planned.plan, data, run) == stages.Compensation("none")
    assert stages.compensate(loaded, analysis, planned.plan, data, _run(compensation="data-free")).estimates is None
    assert stages.may_consume(planned.plan, _run(verify=False).config)
    assert not stages.may_consume(planned.plan, run.config)


def test_lossy_without_calibration_compensates_data_free() -> None:
    run = _run(criterion="l2", ratio=0.3)
    loaded = stages.load(FIXTURES / "yolo_like.onnx")
    analysis = stages.analyse(loaded, run)
    data = stages.calibrate(loaded, analysis, run, lossy=True)
    planned = stages.plan(loaded, analysis, stages.score(loaded, analysis, data, run), data, run)
    comp = stages.compensate(loaded, analysis, planned.plan, data, run)
    assert comp.mode == "data-free" and comp.estimates


def test_score_refuses_before_scoring() -> None:
    loaded = stages.load(FIXTURES / "residual.onnx")
    analysis = stages.analyse(loaded, _run())
    data = stages.CalibrationData()
    with pytest.raises(onnxprune.UsageError, match="needs a budget"):
        stages.score(loaded, analysis, data, _run(criterion="apoz"))  # no budget comes before no calibration
    with pytest.raises(onnxprune.UsageError, match="unknown criterion 'nope'"):
        stages.score(loaded, analysis, data, _run(criterion="nope", ratio=0.5))


def test_prune_applies_through_the_public_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = api.apply

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "apply", counting)
    result = onnxprune.prune(str(FIXTURES / "residual.onnx"))
    assert len(calls) == 1 and calls[0]["deferred"] is True
    model = onnxprune.load(FIXTURES / "residual.onnx")
    again = real(model, result.analysis, result.plan)
    assert again.SerializeToString() == result.model.SerializeToString()


def test_report_fields_are_typed_and_are_the_json() -> None:
    result = onnxprune.prune(DIGITS, "l2", min_fidelity=0.97, calibration=CALIBRATION, fidelity_metrics={"*": "cosine"})
    report = result.report
    d = report.to_dict()
    assert list(d) == REPORT_KEYS  # pipelines read this JSON: same keys, same order
    assert isinstance(report.sensitivity, SensitivityResult) and d["sensitivity"] == report.sensitivity.to_dict()
    assert report.fidelity_score == d["fidelity_score"] == min(o.value for o in report.fidelity_metrics) >= 0.97
    assert d["fidelity_metrics"] == {o.name: {"metric": "cosine", "value": o.value} for o in report.fidelity_metrics}
    assert report.evaluation == d["evaluation"] and report.evaluation.startswith("16 evaluation samples")
    assert report.data_note == d["data_note"] and "split 3:1" in report.data_note
    assert report.reconstructed_layers == () and d["reconstructed_layers"] == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.fidelity_score = 1.0  # type: ignore[misc]


def test_reconstructed_layers_are_typed() -> None:
    result = onnxprune.prune(DIGITS, "l2", ratio=0.3, calibration=CALIBRATION, reconstruct=True)
    layers = result.report.reconstructed_layers
    assert layers and all(isinstance(r, ReconstructedLayer) for r in layers)
    assert result.report.to_dict()["reconstructed_layers"] == [
        {"node": r.node, "positions": r.positions, "error_before": r.error_before, "error_after": r.error_after}
        for r in layers
    ]
    assert all(r.error_after <= r.error_before for r in layers)


def test_exact_report_has_empty_lossy_fields() -> None:
    d = onnxprune.prune(str(FIXTURES / "residual.onnx")).report.to_dict()
    assert list(d) == REPORT_KEYS
    assert (
        d["fidelity_score"],
        d["fidelity_metrics"],
        d["data_note"],
        d["reconstructed_layers"],
        d["sensitivity"],
    ) == (None, None, "", [], None)
    assert d["evaluation"] == "seeded random inputs (seed 0), batch 1 and 2"


def test_finish_plan_gives_every_kept_group_a_reason() -> None:
    analysis = onnxprune.analyze(FIXTURES / "yolo_like.onnx")
    config = onnxprune.PruneConfig(criterion="l2", ratio=0.5)
    pinned = {g.id for g in analysis.groups if g.pinned}
    nothing = finish_plan(analysis, config, [], {}, pinned_reasons(analysis), lambda gid: f"default {gid}")
    assert nothing.removed_groups == ()
    for g in analysis.groups:
        expected = g.pinned_by if g.id in pinned else (f"default {g.id}",)
        assert nothing.kept_reasons[g.id] == tuple(expected)
    free = [g.id for g in analysis.groups if g.id not in pinned]
    everything = finish_plan(analysis, config, free, {}, pinned_reasons(analysis), lambda gid: "never used")
    put_back = set(free) - set(everything.removed_groups)
    assert put_back and everything.removed_groups  # at least one channel of every tensor stays
    expected_reasons: dict[int, list[str]] = {}
    assert set(everything.removed_groups) == enforce_constraints(analysis, free, expected_reasons)
    assert {g: everything.kept_reasons[g] for g in put_back} == {g: tuple(r) for g, r in expected_reasons.items()}


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
