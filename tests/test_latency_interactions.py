"""The latency planner's moves ordered by their cost on the combined plan (interactions), and
the continuous score beneath coarse task metrics: a fake latency table and a fake fidelity
with a known interaction, so every order is exact and nothing is timed or run."""

from __future__ import annotations

import pytest
from latency_helpers import three_unit_chain
from test_latency_plan import FakeTable

import onnxprune
from onnxprune.config import PruneConfig
from onnxprune.latency.interactions import MeasuredOrder, default_budget
from onnxprune.latency.moves import CONTINUOUS_WEIGHT, isolated_order, move_space
from onnxprune.latency.planner import plan_for_latency
from onnxprune.sensitivity_analysis import UnitSensitivity, find_units

CONFIG = PruneConfig(ratio=0.1)


def _setup():
    analysis = onnxprune.analyze(three_unit_chain())
    scores = {g.id: 1.0 + 0.01 * g.id for g in analysis.groups}
    units = find_units(analysis, scores)
    a, b, c = (u.name for u in units)
    # every unit saves 0.5 ms per block of 8 of 10 ms: 0.85 needs three blocks
    table = FakeTable({a: 0.5e-3, b: 0.5e-3, c: 0.5e-3}, {a: 8, b: 8, c: 8})
    return analysis, scores, units, table


def _fractions(groups: set[int], units) -> list[float]:
    return [sum(1 for g in u.groups if g in groups) / 32 for u in units]


def _alone(r: float, slopes: tuple[float, ...]) -> float:
    """A loss with slope ``slopes[0]`` up to a quarter of the unit removed, ``slopes[-1]`` beyond:
    what the planner interpolates from a curve measured at 0.1, 0.25 and 0.5."""
    return slopes[0] * min(r, 0.25) + slopes[-1] * max(r - 0.25, 0.0)


PAIR = (0.02, 0.04)  # a and b alone: 0.005 for the first block of 8, 0.01 for each next
SOLO = (0.1,)  # c alone: 0.025 a block


def _redundant_pair(units):
    """a and b are redundant paths: each costs little alone, both together a lot (-2 ra rb);
    c costs more alone and does not interact. Returns the fidelity, the units' curves measured
    alone (at 0.1, 0.25, 0.5 as the sensitivity analysis does) and the fidelity's calls."""
    calls: list[frozenset[int]] = []

    def score(groups: set[int]) -> float:
        calls.append(frozenset(groups))
        ra, rb, rc = _fractions(groups, units)
        return 1.0 - _alone(ra, PAIR) - _alone(rb, PAIR) - _alone(rc, SOLO) - 2.0 * ra * rb

    def alone(i: int, slopes: tuple[float, ...]) -> UnitSensitivity:
        return UnitSensitivity(units[i], {r: 1.0 - _alone(r, slopes) for r in (0.1, 0.25, 0.5)}, {})

    sens = {units[0].name: alone(0, PAIR), units[1].name: alone(1, PAIR), units[2].name: alone(2, SOLO)}
    return score, sens, calls


def _removed(lp, units) -> list[int]:
    removed = set(lp.plan.removed_groups)
    return [sum(1 for g in u.groups if g in removed) for u in units]


def test_costs_measured_on_the_combined_plan_avoid_the_interaction() -> None:
    analysis, scores, units, table = _setup()
    score, sens, calls = _redundant_pair(units)
    alone = plan_for_latency(analysis, CONFIG, units, table, scores, 0.85, sensitivity=sens)
    # alone a and b look 5x cheaper than c: the order alternates between them
    assert sorted(_removed(alone, units)[:2]) == [8, 16] and _removed(alone, units)[2] == 0
    assert score(set(alone.plan.removed_groups)) == pytest.approx(1 - 0.015 - 0.005 - 2 * 0.5 * 0.25)
    space = move_space(analysis, CONFIG, units, table, scores, sensitivity=sens)
    order = MeasuredOrder(space, score, budget=12)
    calls.clear()
    lp = plan_for_latency(analysis, CONFIG, units, table, scores, 0.85, sensitivity=sens, order=order)
    # measured on the plan it joins, the other's first block after one's costs 0.13, not 0.005:
    # the next blocks are the first one's (0.01 each), c's never (0.025)
    assert sorted(_removed(lp, units)) == [0, 0, 24] and _removed(lp, units)[2] == 0
    # chunks of one block (0.375 ms planned): the plan without moves, each move taken, and the
    # other's block measured once (then ranked by that stale cost, no more evaluations)
    assert order.evaluations == len(calls) == lp.evaluations == 5 and order.measured == 3
    assert lp.predicted_ratio == pytest.approx(0.85)
    assert score(set(lp.plan.removed_groups)) == pytest.approx(1 - 0.025)
    # the same calls give the same order; a relaxed aim reuses it without evaluating
    again = MeasuredOrder(space, score, budget=12)
    assert plan_for_latency(analysis, CONFIG, units, table, scores, 0.85, order=again).plan == lp.plan
    before = order.evaluations
    assert _removed(plan_for_latency(analysis, CONFIG, units, table, scores, 0.9, order=order), units) in (
        [16, 0, 0],
        [0, 16, 0],
    )
    assert order.evaluations == before


def test_the_budget_bounds_the_evaluations_and_the_rest_is_ordered_alone() -> None:
    analysis, scores, units, table = _setup()
    score, sens, calls = _redundant_pair(units)
    space = move_space(analysis, CONFIG, units, table, scores, sensitivity=sens)
    order = MeasuredOrder(space, score, budget=3)
    moves = order.moves_to(0.6)  # 8 blocks: more than 3 evaluations can measure
    assert order.evaluations == len(calls) == 3
    assert space.predicted({**space.full(), **{m.unit: m.kept for m in moves}}) == pytest.approx(0.6)
    # budget 0: exactly the order by costs measured alone
    none = MeasuredOrder(space, score, budget=0)
    assert list(none.moves_to(0.0)) == isolated_order(space) and none.evaluations == 0


def test_a_continuous_score_orders_moves_the_task_metric_ties_at_zero() -> None:
    # every unit alone loses every answer already (top-1 0 at each ratio): only the outputs'
    # cosine tells them apart, and c's logits move least
    analysis, scores, units, table = _setup()
    lost = {r: 0.0 for r in (0.1, 0.25, 0.5)}
    cosines = {0: 0.5, 1: 0.6, 2: 0.9}
    sens = {
        u.name: UnitSensitivity(u, lost, {}, cosine={r: 1.0 - (1.0 - cosines[i]) * r / 0.5 for r in lost})
        for i, u in enumerate(units)
    }
    low_a = {**scores, **{g: 0.01 for g in units[0].groups}}  # the score tie-break alone would pick a
    lp = plan_for_latency(analysis, CONFIG, units, table, low_a, 0.85, sensitivity=sens)
    assert _removed(lp, units) == [0, 0, 24]
    # the cost is the task loss plus CONTINUOUS_WEIGHT x the cosine loss: c's first block
    space = move_space(analysis, CONFIG, units, table, low_a, sensitivity=sens)
    assert space.lost(units[2].name, 32, 24) == pytest.approx(1.0 + CONTINUOUS_WEIGHT * 0.1 * 0.25 / 0.5, abs=1e-6)
    flat = {n: UnitSensitivity(s.unit, s.fidelity, {}) for n, s in sens.items()}
    assert _removed(plan_for_latency(analysis, CONFIG, units, table, low_a, 0.85, sensitivity=flat), units)[0] == 24


def test_default_budget() -> None:
    assert [default_budget(n) for n in (1, 8, 30, 100)] == [16, 16, 60, 160]


def test_prune_orders_by_measured_costs_within_the_budget(tmp_path) -> None:
    import numpy as np

    from onnxprune.testing import StepTimer

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))

    def run(**options):
        return onnxprune.prune(
            three_unit_chain(),
            latency_target=0.85,
            timer=StepTimer(step=16, base=1e-4, per_block=1e-5),
            calibration=str(calib),
            fidelity_metrics={"*": "cosine"},
            **options,
        ).report

    report = run()
    order = report.latency.to_dict()["order"]
    assert order["budget"] == 16 and 0 < order["measured_moves"] <= order["evaluations"] <= 16
    from onnxprune.latency.report import latency_lines

    assert (
        f"  moves ordered by their fidelity cost on the plan they join: {order['measured_moves']} measured so, "
        f"{order['evaluations']} of 16 evaluations (--latency-evaluations)"
    ) in latency_lines(report.to_dict())
    # the sensitivity trials keep the outputs' cosine beside the task metric
    for us in report.sensitivity.units:
        assert set(us.cosine) == set(us.fidelity) and all(-1.0 <= c <= 1.0 for c in us.cosine.values())
    measured = run(latency_evaluations=5).latency.to_dict()["order"]
    assert 0 < measured["evaluations"] <= 5 and measured["budget"] == 5
    assert run(latency_evaluations=0).latency.to_dict()["order"] == {"evaluations": 0, "budget": 0, "measured_moves": 0}
    with pytest.raises(onnxprune.UsageError, match="latency_evaluations must be >= 0, got -1"):
        PruneConfig(latency_target=0.7, latency_evaluations=-1)


def _recovered(units, k: tuple[float, ...]):
    """A recovered model's fidelity: unit i costs k[i] x (blocks of 8 removed)^2 (a deeper cut
    recovers worse), a tenth of what the masked trials measured alone (10 k[i] x 4 blocks at
    half the unit: linear in the fraction removed)."""

    def score(groups: set[int]) -> float:
        return 1.0 - sum(ki * (r * 4) ** 2 for ki, r in zip(k, _fractions(groups, units)))

    sens = {
        u.name: UnitSensitivity(u, {r: 1.0 - 10 * k[i] * 4 * r for r in (0.1, 0.25, 0.5)}, {})
        for i, u in enumerate(units)
    }
    return score, sens


def test_costs_on_another_scale_than_the_ones_measured_alone_are_rescaled() -> None:
    # recovered costs (score) are a tenth of the masked ones measured alone (sens): a 1e-3 per
    # block squared, b 1.2e-3, c 1.4e-3; 0.75 needs five blocks
    analysis, scores, units, table = _setup()
    score, sens = _recovered(units, (1e-3, 1.2e-3, 1.4e-3))
    space = move_space(analysis, CONFIG, units, table, scores, sensitivity=sens)

    def plan(rescaled: bool):
        order = MeasuredOrder(space, score, budget=40, rescaled=rescaled)
        lp = plan_for_latency(analysis, CONFIG, units, table, scores, 0.75, sensitivity=sens, order=order)
        return order, _removed(lp, units), score(set(lp.plan.removed_groups))

    # unscaled: a's measured costs (1, 3, 5 x 1e-3) stay below b's and c's costs alone (12e-3
    # and 14e-3 a block), so a is cut to its last block before b is measured at all
    order, removed, value = plan(False)
    assert removed == [24, 16, 0] and order.scale == 1.0
    assert value == pytest.approx(1 - 1e-3 * 9 - 1.2e-3 * 4)
    # rescaled: the costs alone times what measured moves cost against them (0.1 after the
    # first measurement, 1e-3 against 1e-2; more as deeper cuts are measured) compare with
    # measured ones: the blocks go where the recovered model loses least (2 + 2 + 1: a's and
    # b's second blocks, 3e-3 and 3.6e-3, before c's, 4.2e-3)
    order, removed, value = plan(True)
    assert removed == [16, 16, 8] and 0.1 <= order.scale < 0.3
    assert value == pytest.approx(1 - 1e-3 * 4 - 1.2e-3 * 4 - 1.4e-3 * 1)
    assert value > 1 - 1e-3 * 9 - 1.2e-3 * 4


def test_the_scale_stays_within_its_range() -> None:
    analysis, scores, units, table = _setup()
    _, sens = _recovered(units, (1e-3, 1.2e-3, 1.4e-3))
    space = move_space(analysis, CONFIG, units, table, scores, sensitivity=sens)
    lost = MeasuredOrder(space, lambda groups: 0.0 if groups else 1.0, budget=10, rescaled=True)  # every move loses all
    lost.moves_to(0.9)
    assert lost.scale == 1.0  # measured costs above the ones alone: never scaled up
    free = MeasuredOrder(space, lambda groups: 1.0, budget=10, rescaled=True)  # nothing is ever lost
    free.moves_to(0.9)
    assert free.scale == 0.05  # never to zero: an unmeasured move must not look free
    assert MeasuredOrder(space, lambda groups: 1.0, budget=10).scale == 1.0


class _FakeClock:
    """Fake seconds: every reading ``tick`` after the one before (an evaluation between two
    readings takes ``tick``); counts its readings."""

    def __init__(self, tick: float) -> None:
        self.tick, self.now, self.readings = tick, 0.0, 0

    def __call__(self) -> float:
        self.readings += 1
        now = self.now
        self.now += self.tick
        return now


def test_a_time_budget_bounds_the_evaluations_first() -> None:
    analysis, scores, units, table = _setup()
    score, sens, calls = _redundant_pair(units)
    space = move_space(analysis, CONFIG, units, table, scores, sensitivity=sens)
    # each evaluation takes 10 fake seconds: 35 s allow four (the fourth starts at 30 s), not the 40 counted
    clock = _FakeClock(10.0)
    order = MeasuredOrder(space, score, budget=40, seconds=35.0, clock=clock)
    moves = order.moves_to(0.6)
    assert order.evaluations == len(calls) == 4 and order.spent == pytest.approx(40.0)
    assert order.bound == "time" and clock.readings == 2 * 4
    # the rest of the way is ordered by the costs measured alone, as when the count runs out
    assert space.predicted({**space.full(), **{m.unit: m.kept for m in moves}}) == pytest.approx(0.6)
    calls.clear()
    counted = MeasuredOrder(space, score, budget=4)
    assert list(counted.moves_to(0.6)) != [] and counted.evaluations == 4 and counted.bound == "count"
    # a bound far away changes nothing: the same order and evaluations as the count alone
    calls.clear()
    free = MeasuredOrder(space, score, budget=12, seconds=1e6, clock=_FakeClock(10.0))
    alone = MeasuredOrder(space, score, budget=12)
    assert free.moves_to(0.85) == alone.moves_to(0.85) and free.evaluations == alone.evaluations == 5
    assert free.bound is None and free.spent == pytest.approx(50.0) and alone.spent >= 0.0


def test_the_time_budget_sizes_the_chunks_for_the_evaluations_it_holds() -> None:
    # 0.6 needs 8 blocks of 0.5 ms. 10 s per evaluation, 55 s: six may start (at 0, 10, ..., 50 s;
    # the first, the plan without moves, timed to know it), so the chunks are planned for
    # int(6 x 0.7) // 2 = 2 measured moves as with a count of 6 (three-block moves, 5 evaluations
    # in all), not for the 40 counted (one-block moves, until the time runs out)
    analysis, scores, units, table = _setup()
    score, sens, _ = _redundant_pair(units)
    space = move_space(analysis, CONFIG, units, table, scores, sensitivity=sens)
    timed = MeasuredOrder(space, score, budget=40, seconds=55.0, clock=_FakeClock(10.0))
    counted = MeasuredOrder(space, score, budget=6)
    by_time, by_count = timed.moves_to(0.6), counted.moves_to(0.6)
    assert [m.kept for m in by_time] == [m.kept for m in by_count] == [8, 8, 8]
    assert timed.evaluations == counted.evaluations == 5
    assert timed.bound == "time" and counted.bound is None  # sized for the time: never ended
    assert [m.kept for m in MeasuredOrder(space, score, budget=40).moves_to(0.6)][:3] == [24, 16, 8]


def _repaired_unalike(units, masked: tuple[float, ...], recovered: tuple[float, ...]):
    """Recovery that repairs the units unalike: unit i costs ``masked[i]`` a block of 8 measured
    alone (masked, linear), ``recovered[i]`` x blocks^2 on the recovered model (``score``, which
    records the units each call cut)."""
    cut: list[tuple[int, ...]] = []

    def score(groups: set[int]) -> float:
        blocks = [r * 4 for r in _fractions(groups, units)]
        cut.append(tuple(i for i, b in enumerate(blocks) if b > 0))
        return 1.0 - sum(k * b**2 for k, b in zip(recovered, blocks))

    sens = {
        u.name: UnitSensitivity(u, {r: 1.0 - masked[i] * 4 * r for r in (0.1, 0.25, 0.5)}, {})
        for i, u in enumerate(units)
    }
    return score, sens, cut


def test_a_recovered_order_measures_every_units_first_move_before_ranking() -> None:
    # c looks 5x costlier than a masked, alone, but recovery repairs it best (1e-3 against a's
    # 3.2e-3 a block): ranked by masked costs times one shared scale, c is never even measured
    analysis, scores, units, table = _setup()
    score, sens, cut = _repaired_unalike(units, (1e-2, 1.2e-2, 5e-2), (3.2e-3, 3.6e-3, 1e-3))
    space = move_space(analysis, CONFIG, units, table, scores, sensitivity=sens)

    def plan(seed: bool):
        cut.clear()
        order = MeasuredOrder(space, score, budget=40, rescaled=True, seed=seed)
        lp = plan_for_latency(analysis, CONFIG, units, table, scores, 0.85, sensitivity=sens, order=order)
        return order, _removed(lp, units), score(set(lp.plan.removed_groups))

    order, removed, value = plan(False)
    # lazily: a measured (3.2e-3), taken; its second block (9.6e-3) then b's (3.6e-3) measured; c,
    # at 5e-2 x the shared scale, never ranks first: a and b pay 1.64e-2 for the three blocks
    assert all(2 not in units_cut for units_cut in cut) and removed == [16, 8, 0]
    assert value == pytest.approx(1 - 3.2e-3 * 4 - 3.6e-3, abs=1e-9)
    order, removed, value = plan(True)
    # every unit's first block measured on the recovered model first (the plan without moves, then
    # a, b, c each alone): c's first two blocks and a's first go, 7.2e-3 for the same three blocks
    assert cut[:4] == [(), (0,), (1,), (2,)] and removed == [8, 0, 16]
    assert value == pytest.approx(1 - 3.2e-3 - 1e-3 * 4, abs=1e-9)
    # each unit's costs alone scaled by what its own measured moves cost against them: c's three
    # blocks measured (1e-3 + 3e-3 + 5e-3 against 3 x 5e-2), a's and b's first (not one shared scale)
    scales = [order.unit_scale(u.name) for u in units]
    assert scales == pytest.approx([0.32, 0.3, 0.06], abs=1e-6)
