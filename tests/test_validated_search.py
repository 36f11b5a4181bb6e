"""The search your validation function judges (onnxprune.validated_search): it goes on past a
group the function refuses, instead of stopping at the first one (on the digits CNN without
--reconstruct the bisection alone stopped at 2 groups, 3.5% of the MACs, at an accuracy above
the original's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.testing import GraphBuilder
from onnxprune.user_validation import Candidate
from onnxprune.validated_search import search_order


def _recording(judge):  # type: ignore[no-untyped-def]
    seen: list[set[int]] = []

    def wrapped(plan: set[int]) -> bool:
        seen.append(set(plan))
        return judge(plan)

    return wrapped, seen


def test_goes_on_past_a_refused_group_with_exact_calls() -> None:
    # Group 2 alone breaks the function; otherwise at most 6 groups may go.
    judge, seen = _recording(lambda p: 2 not in p and len(p) <= 6)
    out = search_order(list(range(10)), set, judge)
    # A bisection over prefixes alone ends at {0, 1}: prefixes 5 (no), 2 (yes), 3 (no).
    assert seen[:3] == [{0, 1, 2, 3, 4}, {0, 1}, {0, 1, 2}]
    # Then 2 is put back and the rest galloped from {0, 1}: +1, +2, +4 kept, +7 and +5
    # refused; 7 put back, then 8 and 9 refused one call each: the order is used up.
    assert seen[3:] == [
        {0, 1, 3},
        {0, 1, 3, 4},
        {0, 1, 3, 4, 5, 6},
        {0, 1, 3, 4, 5, 6, 7, 8, 9},
        {0, 1, 3, 4, 5, 6, 7},
        {0, 1, 3, 4, 5, 6, 8},
        {0, 1, 3, 4, 5, 6, 9},
    ]
    assert out.groups == {0, 1, 3, 4, 5, 6} and out.refused == (2, 7, 8, 9) and out.judged == len(seen) == 10


def test_a_refused_group_puts_back_the_rest_of_its_unit() -> None:
    # Units: groups 0-4 (lowest score first) and 5-9; removing 2 or more of unit 0 is refused.
    unit_of = {g: g // 5 for g in range(10)}
    judge, seen = _recording(lambda p: len(p & {0, 1, 2, 3, 4}) <= 2)
    out = search_order(list(range(10)), set, judge, unit_of=unit_of)
    assert out.groups == {0, 1, 5, 6, 7, 8, 9} and out.refused == (2,)
    assert not any(p & {3, 4} for p in seen[3:])  # past the bisection, never the rest of unit 0
    assert out.judged == len(seen) == 3 + 4  # bisection 3; galloping +1, +2, +4 (capped at 5), +5


def test_stops_after_patience_refusals_in_a_row_and_keeps_nothing_unjudged() -> None:
    judge, seen = _recording(lambda p: p <= {0, 1})
    out = search_order(list(range(10)), set, judge, patience=3)
    # Bisection 3 calls (refusing 2), then 3 and 4 refused one call each: 3 refusals in a row.
    assert out.groups == {0, 1} and out.refused == (2, 3, 4) and out.judged == 5
    assert out.groups in [frozenset(p) for p in seen]
    nothing = search_order(list(range(4)), set, lambda p: False)
    assert nothing.groups == frozenset() and nothing.judged == 3  # prefixes 2, 1 and then 1 group past 0


def test_every_plan_the_order_allows_is_kept() -> None:
    judge, seen = _recording(lambda p: True)
    out = search_order(list(range(7)), set, judge)
    assert seen == [set(range(4)), set(range(6)), set(range(7))]  # the bisection alone
    assert out.groups == set(range(7)) and out.refused == () and out.judged == 3


def _two_branch_model() -> tuple[onnx.ModelProto, str, str]:
    """Conv A and conv B (8 channels each, Relu, GlobalAveragePool) side by side into one Gemm;
    A's features reach the output through weights 1e-4 times B's, so on the calibration
    samples removing A's channels costs no fidelity and the sensitivity order takes A first."""
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [None, 3, 6, 6])
    feats, names = [], []
    for _ in range(2):
        y = b.conv(x, 8)
        names.append(b.nodes[-1].name)
        feats.append(b.op("Flatten", b.op("GlobalAveragePool", b.op("Relu", y)), axis=1))
    cat = b.op("Concat", *feats, axis=1, channels=16)
    w = b.weights([3, 16])
    w[:, :8] *= 1e-4
    fc_b = np.zeros(3, np.float32)
    b.output(b.op("Gemm", cat, b.const(w, "fcW"), b.const(fc_b, "fcB"), channels=3, transB=1))
    return b.build(), names[0], names[1]


def test_validated_prune_goes_past_a_channel_the_calibration_order_wrongly_takes_first(tmp_path: Path) -> None:
    model, conv_a, conv_b = _two_branch_model()

    def channels(candidate: Candidate) -> dict[str, int]:
        m = onnx.load(candidate.path)
        inits = {i.name: i for i in m.graph.initializer}
        return {n.name: int(inits[n.input[1]].dims[0]) for n in m.graph.node if n.op_type == "Conv"}

    values: list[float] = []

    def validate(candidate: Candidate) -> float:
        # Your data disagrees with the calibration samples: A is vital (any cut of it scores 0);
        # B's channels count one eighth each.
        kept = channels(candidate)
        values.append(0.0 if kept[conv_a] < 8 else kept[conv_b] / 8)
        return values[-1]

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 6, 6)).astype(np.float32))
    r = onnxprune.prune(model, calibration=str(calib), validate=validate, max_drop=0.3)
    v = r.report.validation
    # The sensitivity order puts A's cuts first (they cost no fidelity on calibration).
    assert v.steps[0].value == 0.0
    # B may lose 2 of 8 channels (0.75 >= 0.7); a bisection alone stops before A's first cut.
    assert {c.node: c.channels_after for c in r.report.layers} == {conv_b: 6}  # A untouched
    assert v.final == 0.75 and v.threshold == pytest.approx(0.7) and v.calls == len(values) <= 12


def test_progress_counts_plans_judged_and_closes() -> None:
    heard: list[tuple[int, int]] = []
    # 11 prefixes: at most 4 bisection steps; 3 taken, then one refused step past group 2.
    search_order(list(range(10)), set, lambda p: p <= {0, 1}, progress=lambda d, t: heard.append((d, t)))
    assert heard == [(1, 4), (2, 4), (3, 4), (4, 4)]
    heard.clear()
    search_order([], set, lambda p: True, progress=lambda d, t: heard.append((d, t)))
    assert heard == [(1, 1)]  # nothing to judge: the bar still closes
