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

    def counted(groups, estimates):  # type: ignore[no-untyped-def]
        calls.append(frozenset(groups))
        return inner(groups, estimates)

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
