"""Moves ranked by what they save in context: a unit whose partner (a unit it shares a layer
with) has shrunk saves less than it would alone, the corner of the layer they share being gone
already. Latency in proportion to MACs (bilinear in two units' widths), so the table's
shared-layer correction is exact and the true latency known. Nothing is timed."""

from __future__ import annotations

import pytest
from latency_helpers import three_unit_chain

import onnxprune
from onnxprune.config import PruneConfig
from onnxprune.latency.moves import isolated_order, move_space
from onnxprune.latency.planner import plan_for_latency
from onnxprune.latency.table import LatencyTable, UnitLatency
from onnxprune.sensitivity_analysis import find_units

N, BASE = 32, 1e-3
# seconds per MAC-unit of conv1 (3 -> a), conv2 (a -> b), conv3 (b -> c), conv4 (c -> 4): conv2,
# between a and b, is most of a's and b's cost
W = {1: 1e-6, 2: 4e-6, 3: 1e-7, 4: 1.75e-5}


def true(ka: int, kb: int, kc: int) -> float:
    return BASE + W[1] * 3 * ka + W[2] * ka * kb + W[3] * kb * kc + W[4] * kc * 4


def _setup():
    analysis = onnxprune.analyze(three_unit_chain())
    first = find_units(analysis, {g.id: 1.0 + 0.01 * g.id for g in analysis.groups})
    a, b, c = (u.name for u in first)
    per = {a: 0.5, b: 1.0, c: 1.0}  # importance per channel group: a's channels matter least
    scores = {g: per[u.name] for u in first for g in u.groups}
    units = find_units(analysis, scores)
    s1, s2, s3, s4 = W[1] * 3 * N, W[2] * N * N, W[3] * N * N, W[4] * N * 4  # each layer's full cost
    ks = (8, 16, 24, 32)
    ua = UnitLatency(a, ("conv1",), N, tuple((k, true(k, N, N)) for k in ks), 8, partners=((b, s2 / (s1 + s2)),))
    ub = UnitLatency(
        b, ("conv2",), N, tuple((k, true(N, k, N)) for k in ks), 8, partners=((a, s2 / (s2 + s3)), (c, s3 / (s2 + s3)))
    )
    uc = UnitLatency(c, ("conv3",), N, tuple((k, true(N, N, k)) for k in ks), 8, partners=((b, s3 / (s3 + s4)),))
    table = LatencyTable({"model_sha256": "0"}, true(N, N, N), {a: ua, b: ub, c: uc})
    return analysis, scores, units, table, (a, b, c)


def test_saving_with_is_the_tables_prediction_before_minus_after() -> None:
    _, _, _, table, (a, b, c) = _setup()
    for unit, kept, others in [
        (b, 8, {a: 8}),
        (a, 16, {b: 24, c: 8}),
        (a, 8, {a: 24, b: 16}),
        (c, 16, {b: 8, c: 24}),
        (b, 16, {}),
    ]:
        after = {**others, unit: kept}
        want = table.predicted_latency(others) - table.predicted_latency(after)
        assert table.saving_with(unit, kept, others) == pytest.approx(want, rel=1e-12, abs=1e-15)
        # exact here (latency bilinear): the true latency's difference
        k = {u: others.get(u, N) for u in (a, b, c)}
        k2 = {**k, unit: kept}
        assert table.saving_with(unit, kept, others) == pytest.approx(
            true(k[a], k[b], k[c]) - true(k2[a], k2[b], k2[c]), rel=1e-12
        )


def test_moves_rank_by_what_they_save_once_their_partners_shrink() -> None:
    analysis, scores, units, table, (a, b, c) = _setup()
    space = move_space(analysis, PruneConfig(ratio=0.1), units, table, scores)
    order = isolated_order(space)
    # a first (its channels matter least). Then, alone (a full), b's channels
    # would save 131 us each (conv2 is a x b), c's 73: an order by the savings alone takes b next.
    # But conv2 has lost three quarters of a already: in context b's save 35 us each, so c comes
    # first, and b last.
    assert [(m.unit, m.kept) for m in order] == [(a, 8), (c, 8), (b, 16), (b, 8)]
    b_alone = table.saving(b, 16)
    assert order[2].saved == pytest.approx(true(8, 32, 8) - true(8, 16, 8), rel=1e-12)
    assert order[2].saved < 0.3 * b_alone
    assert order[1].saved == pytest.approx(true(8, 32, 32) - true(8, 32, 8), rel=1e-12)
    assert b_alone / 16 > order[1].saved / 24  # per group: what made the order by savings alone take b before c


def test_the_plan_in_context_reaches_the_aim_losing_less() -> None:
    """Ranked by each move's saving with the others full (before), b's moves came before c's: the
    plan at this aim lowered a and b to 8 and c to 16, 12 + 24 + 16 = 52 of importance lost (and
    past the aim: 0.320 for 0.350), where the order in context reaches it with 36 (a and c at 8,
    b full)."""
    analysis, scores, units, table, (a, b, c) = _setup()
    full = true(N, N, N)
    aim = true(8, N, 8) / full
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=aim + 1e-12)
    kept = {ch.unit: ch.kept for ch in lp.units}
    assert kept == {a: 8, b: N, c: 8}
    assert true(kept[a], kept[b], kept[c]) / full <= aim + 1e-12
    assert lp.predicted_ratio == pytest.approx(aim, rel=1e-12)
    assert sum(scores[g] for g in lp.plan.removed_groups) == pytest.approx(24 * 0.5 + 24 * 1.0)
    # each unit's saving in the plan is with the others at their kept counts
    saving = {ch.unit: ch.predicted_saving for ch in lp.units}
    assert saving[a] == pytest.approx(true(N, N, 8) - true(8, N, 8), rel=1e-12)
    assert saving[c] == pytest.approx(true(8, N, N) - true(8, N, 8), rel=1e-12)
    assert saving[b] == 0.0
