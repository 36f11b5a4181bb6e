"""An output a candidate leaves bit for bit as the reference's is scored once per metric
(fidelity.Reference keeps the figures of the reference against itself): a sensitivity trial of
a unit leaves every output its part does not reach as the original's. The reused figures must
be the recomputed ones exactly. Tiny graphs and synthetic outputs, exact checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune import fidelity as fidelity_module
from onnxprune.budget import MacsTracker, group_scores
from onnxprune.config import PruneConfig
from onnxprune.criteria import default_criteria
from onnxprune.fidelity import Reference, fidelity_from_outputs, prepare_reference
from onnxprune.rules import default_registry
from onnxprune.search_judgement import search_score
from onnxprune.sensitivity_analysis import Screen, TrialRunner, allocate, find_units, measure_sensitivity
from onnxprune.stages.decide import known_macs, layer_scores
from onnxprune.testing import GraphBuilder


def _outputs() -> tuple[list[str], list[np.ndarray]]:
    """Reference arrays (8 samples) of a probability map, class scores and an embedding."""
    rng = np.random.default_rng(7)
    prob = 1 / (1 + np.exp(-3 * rng.standard_normal((8, 1, 6, 6))))
    classes = rng.standard_normal((8, 5))
    embedding = rng.standard_normal((8, 2, 3, 3))
    embedding[0, 0, 0, 0] = 0.0  # a zero whose sign a candidate may flip
    return ["map", "cls", "emb"], [a.astype(np.float32) for a in (prob, classes, embedding)]


def test_an_unchanged_output_reuses_its_self_score_and_it_equals_the_recomputed_one() -> None:
    names, refs = _outputs()
    rng = np.random.default_rng(8)
    noisy = (refs[1] + 0.3 * rng.standard_normal(refs[1].shape)).astype(np.float32)
    # map and emb: copies of the reference (other arrays, the same bytes); cls changed
    got = [refs[0].copy(), noisy, refs[2].copy()]
    prepared = prepare_reference(names, [[r] for r in refs])
    for estimate in (False, True, True):  # the second True reads the kept figures
        kept = fidelity_from_outputs(names, prepared, [[g] for g in got], estimate=estimate)
        fresh = fidelity_from_outputs(names, [[r] for r in refs], [[g] for g in got], estimate=estimate)
        assert kept == fresh  # every figure, bit for bit
    assert {key[0] for key in prepared._same} == {0, 2}  # the unchanged outputs only
    assert kept[0].score == 1.0 and kept[1].score < 1.0
    # A metric chosen for the output is kept apart from the detected one.
    chosen = {"emb": "top1"}
    for _ in range(2):
        assert fidelity_from_outputs(names, prepared, [[g] for g in got], chosen) == fidelity_from_outputs(
            names, [[r] for r in refs], [[g] for g in got], chosen
        )
    # A -0.0 where the reference has 0.0 is another array: scored, not reused.
    flipped = refs[2].copy()
    flipped[0, 0, 0, 0] = -0.0
    assert np.array_equal(flipped, refs[2]) and not prepared.unchanged(2, [flipped])
    assert prepared.unchanged(2, [refs[2].copy()]) and not prepared.unchanged(1, [noisy])
    assert fidelity_from_outputs(names, prepared, [[refs[0]], [noisy], [flipped]]) == fidelity_from_outputs(
        names, [[r] for r in refs], [[refs[0]], [noisy], [flipped]]
    )
    # The search's judgement with halves: the same with and without the kept figures.
    halves = [([r[:4] for r in refs], [g[:4] for g in got]), ([r[4:] for r in refs], [g[4:] for g in got])]
    ready = [(prepare_reference(names, [[r] for r in ref]), g) for ref, g in halves]
    whole = prepare_reference(names, [[r] for r in refs])
    for _ in range(2):
        assert search_score(names, whole, got, ready) == search_score(names, refs, got, halves)


def _two_heads() -> onnx.ModelProto:
    """x -> Conv(8)+Relu -> two heads, each Conv(8)+Relu -> Conv(4) -> its own output: the
    trunk's unit reaches both outputs, each head's unit its own only."""
    b = GraphBuilder(opset=17, seed=4)
    trunk = b.op("Relu", b.conv(b.input("x", [1, 3, 6, 6]), 8))
    for name in ("left", "right"):
        head = b.conv(b.op("Relu", b.conv(trunk, 8)), 4)
        b.nodes.append(onnx.helper.make_node("Identity", [head], [name], name=b.name("out")))
        b.channels[name] = 4
        b.output(name)
    return b.build()


@pytest.mark.parametrize("choices", [{"*": "cosine"}, None])
def test_sensitivity_and_search_with_kept_self_scores_equal_those_without(
    monkeypatch: pytest.MonkeyPatch, choices: dict | None
) -> None:
    model = _two_heads()
    analysis = onnxprune.analyze(model)
    registry = default_registry()
    scores = layer_scores(analysis, model, PruneConfig(criterion="l2"), default_criteria(), registry=registry)
    units = find_units(analysis, group_scores(analysis, scores))
    assert len(units) == 3
    tracker = MacsTracker(analysis, known_macs(model, analysis, registry, "test", "heads"), model, registry)
    rng = np.random.default_rng(9)
    feeds = [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(32)]
    ratios = (0.25, 0.5)

    def measured() -> tuple[dict, list[int], float, int]:
        runner = TrialRunner(model, analysis, feeds, screen=Screen.for_floor(0.9, len(feeds)))
        sens = measure_sensitivity(runner, analysis, units, tracker, ratios, None, "l2", choices, floor=0.9)
        groups, f, _ = allocate(sens, analysis, runner, tracker, None, min_fidelity=0.95, choices=choices)
        reused = sum(len(p._same) for p in runner._prepared.values())
        return {**sens.to_dict(), "seconds": 0}, groups, f, reused

    with_kept = measured()
    monkeypatch.setattr(Reference, "unchanged", lambda self, index, arrays: False)
    without = measured()
    assert with_kept[:3] == without[:3]  # every trial's figures, the plan and its fidelity
    assert with_kept[3] > 0 and without[3] == 0  # the heads' trials left the other output as it was
    assert fidelity_module._identical(np.float32(1.0), np.float32(1.0))
