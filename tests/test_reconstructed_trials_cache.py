"""ReconstructedTrials keeps each plan's cross-fitted judgement: the fidelity of a plan it has
judged (the latency planner's floor after its order, or the other way round) runs no second
recovery, and is the judgement's pooled figure exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.reconstruction_trials import ReconstructedTrials
from onnxprune.testing import GraphBuilder

COSINE = {"*": "cosine"}


def _model() -> onnx.ModelProto:
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [None, 4, 3, 3])
    y = b.op("Relu", b.conv(x, 8, k=3, pads=1))
    b.output(b.conv(y, 4, k=3, pads=1))
    return b.build()


def _counted(trials: ReconstructedTrials) -> list[frozenset[int]]:
    calls: list[frozenset[int]] = []
    inner = trials._cross_fitted

    def counted(groups, estimates, levels):  # type: ignore[no-untyped-def]
        calls.append(frozenset(groups))
        return inner(groups, estimates, levels)

    trials._cross_fitted = counted  # type: ignore[method-assign]
    return calls


def test_fidelity_of_a_judged_plan_runs_no_second_trial() -> None:
    model = _model()
    x = np.random.default_rng(3).standard_normal((12, 1, 4, 3, 3)).astype(np.float32)
    feeds = [{"x": v} for v in x]
    trials = ReconstructedTrials(model, onnxprune.analyze(model), feeds)
    calls = _counted(trials)
    judged = trials.judged([0, 1], None, COSINE)
    assert trials.fidelity([1, 0], None, COSINE) == judged.pooled  # exactly: the same outputs
    assert trials.fidelity([0, 1], None, COSINE, search=True) == judged.value
    assert len(calls) == 1
    # the other way round: the fidelity first, then the judgement, still one trial per plan
    alone = trials.fidelity([2], None, COSINE)
    assert trials.judged([2], None, COSINE).pooled == alone and len(calls) == 2
    # and the figure is the cross-fitted one of a fresh runner (nothing cached differs)
    fresh = ReconstructedTrials(model, onnxprune.analyze(model), feeds)
    assert fresh.judged([2], None, COSINE).pooled == alone
    assert 0.5 < alone < 1.0


def test_one_calibration_sample_cannot_be_cross_fitted() -> None:
    model = _model()
    feeds = [{"x": np.zeros((1, 4, 3, 3), np.float32)}]
    with pytest.raises(ValueError, match="at least 2 calibration samples"):
        ReconstructedTrials(model, onnxprune.analyze(model), feeds)


def test_recovery_kept_across_trials_judges_every_plan_as_a_fresh_runner() -> None:
    """--reconstruct --recalibrate trials share each fold's RecoveryCache (the readers' rows, the
    original's statistics, the pruned models' statistics by cone digest): every plan, in any
    order, is judged exactly as by a runner that saw no other plan."""
    from test_recalibration_memo import _feeds as chain_feeds
    from test_recalibration_memo import _model as chain

    model, feeds = chain(), chain_feeds(12)
    analysis = onnxprune.analyze(model)
    shared = ReconstructedTrials(model, analysis, feeds, reconstruct=True, recalibrate=True)
    for plan in [(1, 13), (1, 14), (2, 13), (1, 13, 7), ()]:
        fresh = ReconstructedTrials(model, analysis, feeds, reconstruct=True, recalibrate=True)
        want, got = fresh.judged(plan, None, COSINE), shared.judged(plan, None, COSINE)
        assert (got.value, got.pooled, got.worst_half) == (want.value, want.pooled, want.worst_half), plan
    assert all(len(c.measured) > 0 for c in shared.caches)  # the statistics were kept and reused


def test_sequential_trials_refit_the_capped_levels_and_the_final_judgement_every_level() -> None:
    """With --reconstruct-from pruned the trials refit the ``sequential_levels`` shallowest levels
    in sequence: capped at 1 a trial is judged exactly as the independent refit's trial; the
    chosen plan's ``final_judged`` is exactly an uncapped runner's judgement (every level in
    sequence, the refit the run delivers), and differs from the capped one on a 3-level plan.
    Without a cap (or with the independent refit) there is no second judgement."""
    from test_reconstruction_sequential import _deep_chain

    model, plan, feeds, _ = _deep_chain()
    analysis = onnxprune.analyze(model)
    groups = plan.removed_groups

    def trials(**kw):  # type: ignore[no-untyped-def]
        return ReconstructedTrials(model, analysis, feeds, **kw)

    capped = trials(reconstruct_from="pruned", sequential_levels=1)
    independent = trials(reconstruct_from="original")
    full = trials(reconstruct_from="pruned", sequential_levels=None)
    got, want = capped.judged(groups, None, COSINE), independent.judged(groups, None, COSINE)
    assert (got.value, got.pooled, got.worst_half) == (want.value, want.pooled, want.worst_half)
    final, whole = capped.final_judged(groups, None, COSINE), full.judged(groups, None, COSINE)
    assert final is not None and (final.value, final.pooled) == (whole.value, whole.pooled)
    assert abs(final.pooled - got.pooled) > 1e-4  # the sequential refit is another model here
    assert capped.judged(groups, None, COSINE) is got  # the trial's judgement is kept beside the final one
    assert full.final_judged(groups, None, COSINE) is None and independent.final_judged(groups, None, COSINE) is None
    assert ReconstructedTrials.SEQUENTIAL_LEVELS == trials(reconstruct_from="pruned").sequential_levels == 8
