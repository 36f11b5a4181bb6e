"""Runs over many samples several at once (runtime.session(per_sample=True), ModelRunner.run_each):
the same outputs in the same order as one after another, typed errors, and the sensitivity trials
and the sequential refit's judgements unchanged. Tiny graphs, exact checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_trial_speed import _setup  # analysis, units and MACs tracker of a chain model

import onnxprune
from onnxprune import runtime
from onnxprune.errors import UsageError
from onnxprune.reconstruction_trials import ReconstructedTrials
from onnxprune.sensitivity_analysis import Screen, TrialRunner, measure_sensitivity
from onnxprune.testing import GraphBuilder

RATIOS = (0.25, 0.5, 0.75)


def _chain() -> onnx.ModelProto:
    """x [1, 3, 8, 8] (static batch: samples run one by one) -> three Conv+Relu of 8 channels ->
    GlobalAveragePool -> Gemm."""
    b = GraphBuilder(opset=17, seed=11)
    h = b.input("x", [1, 3, 8, 8])
    for _ in range(3):
        h = b.op("Relu", b.conv(h, 8))
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", h), axis=1), 8, 4))
    return b.build()


def _feeds(n: int, seed: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def test_run_each_gives_every_samples_outputs_in_order() -> None:
    model, feeds = _chain(), _feeds(7)
    one = runtime.session(model)
    assert one.workers == 1
    pooled = runtime.session(model, per_sample=True)
    assert pooled.workers == runtime.SAMPLE_WORKERS
    pooled.workers = 3  # several at once even on a one-core machine
    expected = [one.run(f) for f in feeds]
    got = pooled.run_each(feeds)
    assert len(got) == len(feeds)
    for e, g in zip(expected, got):
        assert len(e) == len(g) == 1
        assert np.array_equal(e[0], g[0])
    # the samples differ, so the order is checked too
    assert not np.array_equal(got[0][0], got[1][0])
    joined = pooled.outputs(feeds)
    assert np.array_equal(joined[0], np.concatenate([e[0] for e in expected]))
    assert pooled.run_each([]) == []


def test_run_each_raises_the_typed_error_of_a_bad_sample() -> None:
    pooled = runtime.session(_chain(), source="chain.onnx", per_sample=True)
    pooled.workers = 2
    feeds = _feeds(5)
    feeds[3] = {"x": np.zeros((1, 3, 9, 8), np.float32)}  # not the model's shape
    with pytest.raises(UsageError, match=r"chain\.onnx"):
        pooled.run_each(feeds)


def _sensitivity(model, analysis, units, tracker, feeds):  # type: ignore[no-untyped-def]
    runner = TrialRunner(model, analysis, feeds, screen=Screen.for_floor(0.99, len(feeds)))
    result = measure_sensitivity(runner, analysis, units, tracker, RATIOS, None, "l2", floor=0.99)
    return runner, [(u.unit.name, dict(u.fidelity), dict(u.estimate), dict(u.cosine), u.screened) for u in result.units]


def test_sensitivity_trials_the_same_with_samples_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _chain()
    analysis, units, tracker = _setup(model)
    feeds = _feeds(24)  # 24: the runner screens on the first 6
    monkeypatch.setattr(runtime, "SAMPLE_WORKERS", 1)
    serial_runner, serial = _sensitivity(model, analysis, units, tracker, feeds)
    monkeypatch.setattr(runtime, "SAMPLE_WORKERS", 3)
    pooled_runner, pooled = _sensitivity(model, analysis, units, tracker, feeds)
    assert serial_runner.session.workers == 1 and pooled_runner.session.workers == 3
    assert pooled_runner.screen is not None
    assert serial == pooled  # every fidelity, estimate and cosine bit for bit
    assert any(f < 1.0 for _, fid, _, _, _ in pooled for f in fid.values())  # the trials changed something


def test_a_dynamic_batch_runs_its_batches_on_the_default_threads() -> None:
    """Batched samples (a dynamic batch) are few large runs: they keep onnxruntime's threads."""
    b = GraphBuilder(opset=17, seed=11)
    h = b.input("x", ["n", 3, 8, 8])
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", b.conv(h, 8))), axis=1), 8, 4))
    model = b.build()
    analysis = onnxprune.analyze(model)
    runner = TrialRunner(model, analysis, _feeds(4))
    assert runner.session.workers == 1
    assert runner.segments is not None and not runner.segments.per_sample


def test_recovered_trials_judge_the_same_with_samples_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _chain()
    analysis, units, _ = _setup(model)
    feeds = _feeds(8)
    plan = [units[0].groups[0], units[1].groups[0], units[2].groups[0]]
    judged = []
    for workers in (1, 3):
        monkeypatch.setattr(runtime, "SAMPLE_WORKERS", workers)
        trials = ReconstructedTrials(model, analysis, feeds, reconstruct=True, reconstruct_from="pruned")
        score = trials.judged(plan, None)
        judged.append((score.value, score.pooled, score.estimate, score.cosine))
    assert judged[0] == judged[1]
    assert judged[0][1] < 1.0
