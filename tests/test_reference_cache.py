"""The reference's side of every score is derived once per set of samples
(fidelity.prepare_reference), not once per candidate: the same figures bit for bit, and the
search's trials convert the reference and detect its metrics a fixed number of times,
however many trials they run. Tiny graphs and synthetic outputs, exact checks."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune import fidelity as fidelity_module
from onnxprune import fidelity_metrics as metrics_module
from onnxprune.budget import MacsTracker, group_scores
from onnxprune.compensation import reader_masks
from onnxprune.config import PruneConfig
from onnxprune.criteria import default_criteria
from onnxprune.fidelity import fidelity_from_outputs, prepare_reference
from onnxprune.reconstruction_trials import ReconstructedTrials
from onnxprune.rules import default_registry
from onnxprune.search_judgement import search_score
from onnxprune.sensitivity_analysis import Screen, TrialRunner, allocate, find_units, measure_sensitivity
from onnxprune.stages.decide import known_macs, layer_scores
from onnxprune.testing import GraphBuilder

RATIOS = (0.25, 0.5, 0.75)
# the module (the package's name ``dense`` is the function)
dense_module = importlib.import_module("onnxprune.fidelity_metrics.dense")


def _outputs(seed: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Reference and candidate arrays (8 samples) of one output per metric the detection picks:
    a probability map (dense), CTC scores, class scores (top1), a raw detection head and an
    embedding (cosine); the candidate is the reference with noise."""
    rng = np.random.default_rng(seed)
    n = 8
    prob = 1 / (1 + np.exp(-3 * rng.standard_normal((n, 1, 16, 16))))
    steps = rng.standard_normal((n, 12, 11))
    steps[:, ::2, 0] += 6.0  # the blank on top of half the steps
    classes = rng.standard_normal((n, 5))
    boxes = np.concatenate(
        [rng.uniform(10, 600, (n, 4, 400)), 1 / (1 + np.exp(-4 * rng.standard_normal((n, 3, 400))))], axis=1
    )
    embedding = rng.standard_normal((n, 2, 3, 3))
    refs = [a.astype(np.float32) for a in (prob, steps, classes, boxes, embedding)]
    gots = [(r + 0.05 * rng.standard_normal(r.shape) * np.abs(r).max()).astype(np.float32) for r in refs]
    gots[0] = np.clip(gots[0], 0, 1)
    gots[3][:, 4:] = np.clip(gots[3][:, 4:], 0, 1)
    return ["map", "ctc", "cls", "head", "emb"], refs, gots


def test_a_prepared_reference_scores_every_metric_exactly_as_the_arrays_do() -> None:
    names, refs, gots = _outputs(1)
    per_feed = [[r[:3], r[3:]] for r in refs]  # two feeds per output, joined on the batch axis
    prepared = prepare_reference(names, per_feed)
    assert [c.metric for c in prepared.detected] == ["dense", "ctc", "top1", "detection", "cosine"]
    got_feeds = [[g[:3], g[3:]] for g in gots]
    for estimate in (False, True):
        plain = fidelity_from_outputs(names, per_feed, got_feeds, estimate=estimate)
        cached = fidelity_from_outputs(names, prepared, got_feeds, estimate=estimate)
        assert cached == plain  # every figure, detail and estimate, bit for bit
        assert plain[3].estimate is not None if estimate else plain[3].estimate is None
    chosen = {"emb": "top1"}
    assert fidelity_from_outputs(names, prepared, got_feeds, chosen) == fidelity_from_outputs(
        names, per_feed, got_feeds, chosen
    )
    halves = [([r[:4] for r in refs], [g[:4] for g in gots]), ([r[4:] for r in refs], [g[4:] for g in gots])]
    prepared_halves = [(prepare_reference(names, [[r] for r in ref]), got) for ref, got in halves]
    whole = prepare_reference(names, [[r] for r in refs])
    assert search_score(names, whole, gots, prepared_halves) == search_score(names, refs, gots, halves)
    # The prepared arrays are shared by every candidate: no score may write into them.
    assert not any(s.flags.writeable for s in prepared.samples)
    with pytest.raises(ValueError, match="other outputs or batch axes"):
        fidelity_from_outputs(names, prepared, got_feeds, batch_axes={"ctc": 1})


def test_the_metrics_reference_side_is_made_once_for_many_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense metric's threshold, cells above it and range, and every output's sample norms
    (cosine), are made once per prepared reference and threshold, whatever the candidates."""
    names, refs, _ = _outputs(2)
    candidates = [_outputs(seed)[2] for seed in (3, 4, 5, 6)]
    made: list[str] = []
    make, norms = dense_module.dense_reference, fidelity_module.sample_norms

    def counted_make(r, threshold=None):  # type: ignore[no-untyped-def]
        made.append(f"dense {threshold}")
        return make(r, threshold)

    def counted_norms(r):  # type: ignore[no-untyped-def]
        made.append("norms")
        return norms(r)

    monkeypatch.setitem(metrics_module._PREPARE, "dense", counted_make)
    monkeypatch.setattr(dense_module, "dense_reference", counted_make)
    monkeypatch.setattr(fidelity_module, "sample_norms", counted_norms)
    per_feed = [[r] for r in refs]
    prepared = prepare_reference(names, per_feed)
    assert made == ["norms"] * len(names)
    made.clear()
    for chosen, expected in (({}, "dense None"), ({"map": "dense:threshold=0.3"}, "dense 0.3")):
        cached = [fidelity_from_outputs(names, prepared, [[g] for g in got], chosen) for got in candidates]
        assert made == [expected]  # on first use, once for all the candidates; no norms
        made.clear()
        plain = [fidelity_from_outputs(names, per_feed, [[g] for g in got], chosen) for got in candidates]
        assert cached == plain
        # from the arrays: the reference prepared again for every candidate
        assert made.count(expected) == len(candidates) and made.count("norms") == len(candidates) * len(names)
        made.clear()
    assert cached[0][0].details["threshold"] == "0.3 (given)" and cached[0][0].metric == "dense"


def _chain() -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> three Conv+Relu of 8 channels -> GlobalAveragePool -> Gemm (4 classes)."""
    b = GraphBuilder(opset=17, seed=3)
    h = b.input("x", [1, 3, 8, 8])
    for _ in range(3):
        h = b.op("Relu", b.conv(h, 8))
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", h), axis=1), 8, 4))
    return b.build()


def _feeds(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _count_detections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reference metric detections (one per reference conversion) from now on."""
    calls = [0]
    detect = fidelity_module.detect_metrics

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return detect(*args, **kwargs)

    monkeypatch.setattr(fidelity_module, "detect_metrics", counted)
    return calls


@pytest.mark.parametrize("metric", ["cosine", "top1"])
def test_the_search_derives_the_reference_once_per_sample_set_and_judges_as_before(
    monkeypatch: pytest.MonkeyPatch, metric: str
) -> None:
    model = _chain()
    analysis = onnxprune.analyze(model)
    registry = default_registry()
    scores = layer_scores(analysis, model, PruneConfig(criterion="l2"), default_criteria(), registry=registry)
    units = find_units(analysis, group_scores(analysis, scores))
    tracker = MacsTracker(analysis, known_macs(model, analysis, registry, "test", "chain"), model, registry)
    choices = {"*": metric}
    runner = TrialRunner(model, analysis, _feeds(32), screen=Screen.for_floor(0.8, 32))
    calls = _count_detections(monkeypatch)
    sens = measure_sensitivity(runner, analysis, units, tracker, RATIOS, None, "l2", choices, floor=0.8)
    plan, _, _ = allocate(sens, analysis, runner, tracker, None, min_fidelity=0.8, choices=choices)
    trials = runner.runs + runner.screened
    assert trials >= 8 and len(runner._cache) >= 2
    # all the samples, the screened ones, each half: once each, whatever the number of trials
    assert calls[0] == len(runner._prepared) <= 4 and set(runner._prepared) <= {"all", "screened", "0", "1"}
    assert "0" in runner._prepared and "1" in runner._prepared
    # Every plan the search judged, judged again from the plain arrays as before the cache.
    for key, (judged, estimates) in runner._cache.items():
        outs = runner._run(reader_masks(runner.analysis, runner._removed_ids(key[0]), estimates))
        halves = list(zip(runner._halves(runner.reference), runner._halves(outs)))
        plain = search_score(runner.names, runner.reference, outs, halves, choices, batch_axes=runner.batch_axes)
        assert plain == judged
    assert plan


def test_recovered_trials_derive_their_references_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _chain()
    analysis = onnxprune.analyze(model)
    trials = ReconstructedTrials(model, analysis, _feeds(8), registry=default_registry())
    calls = _count_detections(monkeypatch)
    conv = [s for s in analysis.sources if s.op == "Conv"]
    plans = [[int(r) for r in analysis.roots(conv[0].ids)[:2]], [int(r) for r in analysis.roots(conv[1].ids)[:3]]]
    choices = {"*": "cosine"}
    judged = [trials.judged(p, None, choices) for p in plans]
    assert calls[0] == 3  # all the samples and each fold's judged half, for both plans
    for p, j in zip(plans, judged):
        outs, parts = trials._cross_fitted(p, None)
        pairs = list(zip(trials.references, parts))
        assert search_score(trials.names, trials.reference, outs, pairs, choices, batch_axes=trials.batch_axes) == j
        assert j.pooled < 1.0
