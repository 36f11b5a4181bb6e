"""Cheaper sensitivity trials, same decisions: a trial runs from its unit's first reader on
(trial_segments), and a trial far below the floor on its first samples ends there
(trial_runner.Screen). Tiny graphs, samples run one by one (static batch 1) or in batches,
exact checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from judge_helpers import identity_classifier

import onnxprune
from onnxprune import trial_runner, trial_segments
from onnxprune.budget import MacsTracker, group_scores
from onnxprune.config import PruneConfig
from onnxprune.criteria import default_criteria
from onnxprune.rules import default_registry
from onnxprune.sensitivity_analysis import Screen, TrialRunner, _take, allocate, find_units, measure_sensitivity
from onnxprune.stages.decide import known_macs, layer_scores
from onnxprune.testing import GraphBuilder

RATIOS = (0.25, 0.5, 0.75)


def _chain() -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> four Conv+Relu of 8 channels -> GlobalAveragePool -> Gemm: four units
    one after the other."""
    b = GraphBuilder(opset=17, seed=3)
    h = b.input("x", [1, 3, 8, 8])
    for _ in range(4):
        h = b.op("Relu", b.conv(h, 8))
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", h), axis=1), 8, 4))
    return b.build()


def _feeds(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _setup(model: onnx.ModelProto):
    analysis = onnxprune.analyze(model)
    registry = default_registry()
    scores = layer_scores(analysis, model, PruneConfig(criterion="l2"), default_criteria(), registry=registry)
    units = find_units(analysis, group_scores(analysis, scores))
    tracker = MacsTracker(analysis, known_macs(model, analysis, registry, "test", "chain"), model, registry)
    return analysis, units, tracker


def _count_samples(runner: TrialRunner) -> list[int]:
    """Counts the samples run through onnxruntime (whole model or a part) from now on."""
    ran = [0]
    parts = runner._parts

    def counted(masks, which=None):  # type: ignore[no-untyped-def]
        out = parts(masks, which)
        ran[0] += len(out)
        return out

    runner._parts = counted  # type: ignore[method-assign]
    return ran


def test_trials_run_from_the_units_first_reader_and_measure_the_same() -> None:
    model = _chain()
    analysis, units, tracker = _setup(model)
    assert len(units) == 4
    feeds = _feeds(6)
    # confidence 0.5: plans judged by the mean (on 6 samples the batch-mean rule's bound keeps
    # no cut at 0.99, and the two runners' allocations below must have something to compare)
    whole = TrialRunner(model, analysis, feeds, confidence=0.5)
    whole.segments = None  # every trial runs the whole model (as before trial_segments)
    parted = TrialRunner(model, analysis, feeds, confidence=0.5)
    assert parted.segments is not None and parted.segments.usable
    frontiers: list[int] = []
    run = trial_segments.Segments.run

    def spy(self, masks, extra, which):  # type: ignore[no-untyped-def]
        out = run(self, masks, extra, which)
        frontiers.append(self.at if out is not None and self._focus is not None else -1)
        return out

    trial_segments.Segments.run = spy  # type: ignore[method-assign]
    try:
        a = measure_sensitivity(parted, analysis, units, tracker, RATIOS, None, "l2", {"*": "cosine"})
    finally:
        trial_segments.Segments.run = run  # type: ignore[method-assign]
    b = measure_sensitivity(whole, analysis, units, tracker, RATIOS, None, "l2", {"*": "cosine"})
    assert a.trials == b.trials == 12 and len(frontiers) == 12
    # Every trial ran from a frontier, the nodes downstream of its unit's readers only; the
    # later units from further in (units in graph order).
    assert -1 not in frontiers and frontiers[0] > 0 and frontiers == sorted(frontiers)
    assert len(set(frontiers)) == 4
    for ua, ub in zip(a.units, b.units):
        assert ua.unit == ub.unit  # the units' own order is kept
        for r in RATIOS:
            assert ua.fidelity[r] == pytest.approx(ub.fidelity[r], abs=1e-6)
    assert min(u.fidelity[0.75] for u in a.units) < 0.999  # the trials do change something
    assert parted.segments is None  # the carried activations are dropped after the analysis
    ga, fa, _ = allocate(a, analysis, parted, tracker, None, min_fidelity=0.99, choices={"*": "cosine"})
    gb, fb, _ = allocate(b, analysis, whole, tracker, None, min_fidelity=0.99, choices={"*": "cosine"})
    assert ga == gb and ga and fa == pytest.approx(fb, abs=1e-6)


def _sample(c0: float, c1: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[[[c0]], [[c1]]]], np.float32)}


def test_screen_ends_a_trial_failing_on_its_first_samples_and_keeps_one_that_does_not() -> None:
    model = identity_classifier(1)
    analysis = onnxprune.analyze(model)
    conv = next(s for s in analysis.sources if s.op == "Conv")
    channel0 = [int(analysis.roots(conv.ids)[0])]
    assert Screen.for_floor(0.95, 32) == Screen(8, pytest.approx(0.90))
    assert Screen.for_floor(0.95, 23) is None and Screen.for_floor(None, 32) is None
    # Removing channel 0 flips every sample where channel 0 wins (2 > 1) and keeps the others.
    wins0, wins1 = _sample(2.0, 1.0), _sample(0.5, 1.0)
    failing_first = [wins0] * 8 + [wins1] * 24  # top-1 0.75 on all, 0 on the first 8
    runner = TrialRunner(model, analysis, failing_first, screen=Screen.for_floor(0.95, 32))
    ran = _count_samples(runner)
    judged, cut_short = runner.screened_trial(channel0, None)
    assert cut_short and judged.pooled == 0.0 and judged.value == 0.0 and ran[0] == 8
    assert runner.screened == 1 and runner.runs == 0
    assert runner.screened_trial(channel0, None) == (judged, True) and ran[0] == 8  # remembered
    # The search's judgement of the same plan is never a screened one: all 32 samples.
    full = runner.judged(channel0, None)
    assert full.pooled == pytest.approx(0.75) and ran[0] == 8 + 32
    # Passing on the first 8: the trial goes on with the other 24 (none run twice) and is
    # exactly the unscreened trial.
    passing_first = [wins1] * 8 + [wins0] * 4 + [wins1] * 20  # 1.0 on the first 8, 0.875 on all
    runner = TrialRunner(model, analysis, passing_first, screen=Screen.for_floor(0.95, 32))
    plain = TrialRunner(model, analysis, passing_first)
    ran = _count_samples(runner)
    judged, cut_short = runner.screened_trial(channel0, None)
    assert not cut_short and ran[0] == 32 and runner.screened == 0 and runner.runs == 1
    full = plain.judged(channel0, None)
    assert (judged.pooled, judged.estimate) == (full.pooled, full.estimate) and judged.pooled == pytest.approx(0.875)
    # A sensitivity trial is not scored by halves (the sensitivity reads the pooled fidelity and
    # the estimate); the search asking for the same plan gets the whole judgement.
    assert judged.worst_half is None and full.worst_half == pytest.approx(0.75)
    assert runner.judged(channel0, None) == full and runner.runs == 2
    # A model with a dynamic batch runs in one batch; with a screen, in two (tested below).
    batched = TrialRunner(identity_classifier(batch=None), analysis, passing_first)
    assert len(batched.batches) == 1 and batched.screen is None


def test_a_batched_model_is_screened_on_its_first_quarter_run_as_a_batch() -> None:
    """A dynamic batch: the screened samples are the first batch, the rest the second; a trial
    failing there runs that batch only, one passing runs both and is exactly the one-batch trial."""
    model = identity_classifier(batch=None)
    analysis = onnxprune.analyze(model)
    conv = next(s for s in analysis.sources if s.op == "Conv")
    channel0 = [int(analysis.roots(conv.ids)[0])]
    wins0, wins1 = _sample(2.0, 1.0), _sample(0.5, 1.0)
    screen = Screen.for_floor(0.95, 32)
    runner = TrialRunner(model, analysis, [wins0] * 8 + [wins1] * 24, screen=screen)
    assert [len(b["x"]) for b in runner.batches] == [8, 24] and runner.screen == screen
    ran = _count_samples(runner)  # batches here
    judged, cut_short = runner.screened_trial(channel0, None)
    assert cut_short and judged.pooled == 0.0 and ran[0] == 1 and runner.screened == 1
    assert runner.judged(channel0, None).pooled == pytest.approx(0.75) and ran[0] == 1 + 2
    passing_first = [wins1] * 8 + [wins0] * 4 + [wins1] * 20
    runner = TrialRunner(model, analysis, passing_first, screen=screen)
    one_batch = TrialRunner(model, analysis, passing_first)
    assert len(one_batch.batches) == 1
    ran = _count_samples(runner)
    judged, cut_short = runner.screened_trial(channel0, None)
    full = one_batch.judged(channel0, None)
    assert not cut_short and ran[0] == 2 and runner.screened == 0
    assert (judged.pooled, judged.estimate) == (full.pooled, full.estimate) and judged.pooled == pytest.approx(0.875)
    assert runner.judged(channel0, None) == full
    assert [np.array_equal(a, b) for a, b in zip(runner.reference, one_batch.reference)] == [True]


def test_screened_sensitivity_runs_fewer_samples_and_allocates_the_same_plan() -> None:
    model = _chain()
    analysis, units, tracker = _setup(model)
    feeds = _feeds(32)
    cosine = {"*": "cosine"}
    floor = 0.95
    plain = TrialRunner(model, analysis, feeds)
    screened = TrialRunner(model, analysis, feeds, screen=Screen.for_floor(floor, 32))
    ran_plain, ran_screened = _count_samples(plain), _count_samples(screened)
    a = measure_sensitivity(plain, analysis, units, tracker, RATIOS, None, "l2", cosine, floor=floor)
    b = measure_sensitivity(screened, analysis, units, tracker, RATIOS, None, "l2", cosine, floor=floor)
    assert b.screened == screened.screened >= 1 and a.screened == 0
    assert ran_screened[0] == ran_plain[0] - 24 * b.screened  # a screened trial ran 8 of 32 samples
    for ua, ub in zip(a.units, b.units):
        assert ua.skipped == ub.skipped  # the same ratios fall below the floor
        for r in RATIOS:
            if r in ub.screened:
                assert ub.fidelity[r] < floor - 0.05 and ua.fidelity[r] < floor
            elif r in ub.skipped:  # the smaller ratios' lowest (an upper bound)
                assert ub.fidelity[r] == min(ub.fidelity[s] for s in RATIOS if s < r)
            else:
                assert ub.fidelity[r] == ua.fidelity[r]  # unscreened trials are the same trials
    assert b.to_dict()["screened"] == b.screened
    ga, fa, _ = allocate(a, analysis, plain, tracker, None, min_fidelity=floor, choices=cosine)
    gb, fb, _ = allocate(b, analysis, screened, tracker, None, min_fidelity=floor, choices=cosine)
    assert ga == gb and ga and fa == fb


def test_prune_decides_the_same_with_and_without_the_cheaper_trials(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _chain()
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.concatenate([f["x"] for f in _feeds(64)]))
    options = dict(criterion="l2", min_fidelity=0.995, calibration=str(calib), fidelity_metrics={"*": "cosine"})
    fast = onnxprune.prune(model, **options)
    sens = fast.report.to_dict()["sensitivity"]
    assert sens["samples"] == 48 and sens["screened"] >= 1
    monkeypatch.setattr(trial_runner.Screen, "for_floor", staticmethod(lambda floor, samples: None))
    monkeypatch.setattr(trial_segments.Segments, "run", lambda self, masks, extra, which: None)
    slow = onnxprune.prune(model, **options)
    assert slow.report.to_dict()["sensitivity"]["screened"] == 0
    assert fast.plan.removed_groups == slow.plan.removed_groups and fast.plan.removed_groups


def test_with_recovery_a_screened_ratio_ends_the_units_ladder() -> None:
    """A search with recovery measures sensitivity without a floor (recovery may win back what
    masking loses) but with the screen: past a screened ratio the unit's larger ratios are not
    run, and the search is not offered them."""
    model = _chain()
    analysis, units, tracker = _setup(model)
    feeds = _feeds(32)
    cosine = {"*": "cosine"}
    everything = TrialRunner(model, analysis, feeds)
    screened = TrialRunner(model, analysis, feeds, screen=Screen.for_floor(0.99, 32))
    a = measure_sensitivity(everything, analysis, units, tracker, RATIOS, None, "l2", cosine)
    b = measure_sensitivity(screened, analysis, units, tracker, RATIOS, None, "l2", cosine)
    assert not any(u.skipped for u in a.units) and a.trials == 12
    cut = [u for u in b.units if u.screened]
    assert cut and b.trials == 12 - sum(len(u.skipped) for u in b.units) < 12
    for u in cut:
        first = min(u.screened)
        assert u.screened == (first,) and u.skipped == tuple(r for r in RATIOS if r > first)
        assert u.fidelity[first] < 0.94
    ga, _, _ = allocate(b, analysis, screened, tracker, None, min_fidelity=0.9, choices=cosine)
    for u in cut:  # no group beyond the screened ratio's is removed
        beyond = set(u.unit.groups) - set(_take(u.unit, max(u.screened), analysis))
        assert not beyond & set(ga)


def _branched() -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> Conv+Relu (8) -> two branches, each Conv+Relu -> Conv+Relu -> pool ->
    Gemm to an output of its own; five units, the second branch's beside the first's."""
    b = GraphBuilder(opset=17, seed=7)
    h = b.op("Relu", b.conv(b.input("x", [1, 3, 8, 8]), 8))
    for _ in range(2):
        t = b.op("Relu", b.conv(b.op("Relu", b.conv(h, 8)), 8))
        b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", t), axis=1), 8, 4))
    return b.build()


def test_parts_leave_out_the_masking_of_ports_their_trials_never_mask_and_measure_the_same() -> None:
    """The carried, side and unit parts drop x * keep + fill where keep is 1 and fill 0: the
    same sensitivity, bit for bit, as the parts with every port's masking in (STRIP off), and
    within float32 rounding of the whole instrumented model."""
    model = _branched()
    analysis, units, tracker = _setup(model)
    assert len(units) == 5
    feeds = _feeds(6)
    cosine = {"*": "cosine"}
    built: list[list[str]] = []
    make = trial_segments.Segments._session

    def spy(self, nodes, inputs, outputs, what):  # type: ignore[no-untyped-def]
        built.append([n.name for n in nodes if n.name.startswith("__masked_")])
        return make(self, nodes, inputs, outputs, what)

    results = {}
    trial_segments.Segments._session = spy  # type: ignore[method-assign]
    try:
        for strip in (False, True):
            trial_segments.STRIP = strip
            built.clear()
            runner = TrialRunner(model, analysis, feeds)
            results[strip] = measure_sensitivity(runner, analysis, units, tracker, RATIOS, None, "l2", cosine)
            masking = [len(b) for b in built]  # per part built, its masking Mul and Add nodes
            if strip:
                # Carried part, unit part, in turn: a unit's part keeps its own readers' masking
                # only (the first unit is read by both branches: two ports), a carried part none.
                assert masking == [0, 4, 0, 2, 0, 2, 0, 2, 0, 2]
            else:
                assert masking == [0, 12, 2, 4, 2, 2, 4, 4, 2, 2]
    finally:
        trial_segments.STRIP = True
        trial_segments.Segments._session = make  # type: ignore[method-assign]
    whole = TrialRunner(model, analysis, feeds)
    whole.segments = None
    w = measure_sensitivity(whole, analysis, units, tracker, RATIOS, None, "l2", cosine)
    assert results[True].trials == results[False].trials == w.trials == 15
    for ua, ub, uw in zip(results[True].units, results[False].units, w.units):
        assert ua.fidelity == ub.fidelity and ua.cosine == ub.cosine  # bit for bit
        for r in RATIOS:
            assert ua.fidelity[r] == pytest.approx(uw.fidelity[r], abs=1e-6)
    assert min(u.fidelity[0.75] for u in results[True].units) < 0.999  # the trials do change something
