"""The latency planner and its confirmation loop, on a tiny graph with a fake latency table
and a fake measurement: deterministic, nothing is timed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from latency_helpers import three_unit_chain

import onnxprune
from onnxprune.config import PruneConfig
from onnxprune.latency.confirm import BAND, confirm
from onnxprune.latency.planner import Constraint, plan_for_latency
from onnxprune.sensitivity_analysis import UnitSensitivity, find_units


@dataclass(frozen=True)
class UnitStep:
    step: int | None


class FakeTable:
    """Seconds saved per unit: ``per_block`` seconds for every ``step`` channels removed
    (whole blocks only, as a blocked kernel computes); baseline 10 ms."""

    def __init__(self, per_block: dict[str, float], steps: dict[str, int], channels: int = 32) -> None:
        self.baseline = 10e-3
        self.per_block, self.steps, self.channels = per_block, steps, channels
        self.names = sorted({*per_block, *steps})
        self.curves: dict = {}

    def saving(self, unit: str, kept: int) -> float:
        if unit in self.curves:
            return self.curves[unit](kept)
        step = self.steps.get(unit, 1)
        computed = min(math.ceil(kept / step) * step, self.channels)
        return self.per_block.get(unit, 0.0) * (self.channels - computed) / step

    @property
    def units(self) -> dict[str, UnitStep]:
        return {u: UnitStep(self.steps.get(u, 1)) for u in self.names}

    def saving_with(self, unit: str, kept: int, others: dict[str, int]) -> float:
        """No shared layers: a move saves what it saves alone."""
        return self.saving(unit, kept) - self.saving(unit, others.get(unit, self.channels))

    def predicted_latency(self, kept: dict[str, int]) -> float:
        """No shared layers: the baseline minus the units' savings."""
        return max(self.baseline - sum(self.saving(u, k) for u, k in kept.items()), 0.0)


@dataclass(frozen=True)
class FakeMeasurement:
    ratio: float
    ratio_p10: float
    ratio_p90: float
    precision: str = "f32"


def _setup(scale: dict[int, float] | None = None):
    model = three_unit_chain()
    analysis = onnxprune.analyze(model)
    scores = {g.id: 1.0 + 0.01 * g.id for g in analysis.groups}  # lowest ids go first
    units = find_units(analysis, scores)
    assert [len(u.groups) for u in units] == [32, 32, 32]
    return analysis, scores, units


def _removed_per_unit(lp, units) -> dict[str, int]:
    removed = set(lp.plan.removed_groups)
    return {u.name: sum(1 for g in u.groups if g in removed) for u in units}


def test_prefers_the_unit_whose_channels_cost_latency() -> None:
    analysis, scores, units = _setup()
    a, b, c = (u.name for u in units)
    # a saves nothing (its channels are flat in latency, whatever their MACs), b saves 0.5 ms
    # per 8 channels, c 0.1 ms per 8.
    table = FakeTable({a: 0.0, b: 0.5e-3, c: 0.1e-3}, {a: 1, b: 8, c: 8})
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.9)
    removed = _removed_per_unit(lp, units)
    assert removed == {a: 0, b: 16, c: 0}
    assert lp.predicted_ratio == pytest.approx(0.9, abs=1e-9)
    assert lp.plan.removed_groups == tuple(sorted(units[1].groups[:16]))  # lowest scores first


def test_rounds_kept_counts_to_the_units_step() -> None:
    analysis, scores, units = _setup()
    a, b, c = (u.name for u in units)
    table = FakeTable({a: 0.0, b: 0.4e-3, c: 0.0}, {b: 16})
    # 0.3 ms needed: b's first block of 16 gives 0.4 ms; removing 1..15 of b saves nothing
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.97)
    assert _removed_per_unit(lp, units) == {a: 0, b: 16, c: 0}
    choice = next(ch for ch in lp.units if ch.unit == b)
    assert (choice.kept, choice.step) == (16, 16)
    assert choice.predicted_saving == pytest.approx(0.4e-3)
    # every kept group has a reason; b's name the step
    kept_b = [g for g in units[1].groups if g not in lp.plan.removed_groups]
    assert all("multiple of 16" in lp.plan.kept_reasons[g][0] for g in kept_b)
    assert all(lp.plan.kept_reasons.get(g.id) for g in analysis.groups if g.id not in lp.plan.removed_groups)


def test_a_move_past_the_aim_stops_at_the_first_count_that_reaches_it() -> None:
    analysis, scores, units = _setup()
    b = units[1].name
    table = FakeTable({}, {b: 8})
    # b's latency barely moves until 8 channels are left, then drops: the best rate is the
    # jump to 8, but 0.1 ms is needed and keeping 24 already saves it
    table.curves[b] = lambda k: {32: 0.0, 24: 0.1e-3, 16: 0.2e-3, 8: 2e-3}[k]
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.99)
    assert _removed_per_unit(lp, units)[b] == 8
    assert lp.predicted_ratio == pytest.approx(0.99)
    far = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.9)
    assert _removed_per_unit(far, units)[b] == 24 and far.predicted_ratio == pytest.approx(0.8)


def test_round_to_combines_with_the_step() -> None:
    analysis, scores, units = _setup()
    b = units[1].name
    table = FakeTable({b: 0.1e-3}, {b: 4})
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1, round_to=8), units, table, scores, aim=0.985)
    choice = next(ch for ch in lp.units if ch.unit == b)
    assert choice.step == 8 and choice.kept % 8 == 0 and choice.kept == 24


def test_ranks_by_latency_saved_per_importance_lost() -> None:
    analysis, scores, units = _setup()
    a, b, c = (u.name for u in units)
    table = FakeTable({a: 0.5e-3, b: 0.5e-3, c: 0.5e-3}, {a: 8, b: 8, c: 8})
    cheap = dict(scores)
    for g in units[2].groups:
        cheap[g] = 0.05  # c's channels matter little: the same seconds cost less importance
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, cheap, aim=0.9)
    assert _removed_per_unit(lp, units) == {a: 0, b: 0, c: 16}


def test_measured_sensitivity_outranks_the_scores() -> None:
    analysis, scores, units = _setup()
    a, b, c = (u.name for u in units)
    table = FakeTable({a: 0.5e-3, b: 0.5e-3, c: 0.5e-3}, {a: 8, b: 8, c: 8})
    ratios = (0.1, 0.25, 0.5)
    sens = {
        a: UnitSensitivity(units[0], {0.1: 0.99, 0.25: 0.95, 0.5: 0.8}, {}),
        b: UnitSensitivity(units[1], {r: 1.0 for r in ratios}, {}),  # b costs no fidelity at all
        c: UnitSensitivity(units[2], {0.1: 0.999, 0.25: 0.99, 0.5: 0.9}, {}),
    }
    low_c = dict(scores)
    for g in units[2].groups:
        low_c[g] = 0.01  # the scores alone would pick c
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, low_c, aim=0.9, sensitivity=sens)
    assert _removed_per_unit(lp, units) == {a: 0, b: 16, c: 0}


def test_the_estimate_on_unseen_inputs_orders_discrete_fidelity() -> None:
    # top-1 on a few samples: no unit flips one (fidelity 1.0 everywhere), but the estimated
    # agreement on unseen inputs says a's margins shrink fast and c's barely: c goes first
    analysis, scores, units = _setup()
    a, b, c = (u.name for u in units)
    table = FakeTable({a: 0.5e-3, b: 0.5e-3, c: 0.5e-3}, {a: 8, b: 8, c: 8})
    ratios = (0.1, 0.25, 0.5)
    flat = {r: 1.0 for r in ratios}
    sens = {
        a: UnitSensitivity(units[0], flat, {}, estimate={0.1: 0.97, 0.25: 0.9, 0.5: 0.7}),
        b: UnitSensitivity(units[1], flat, {}, estimate={0.1: 0.98, 0.25: 0.93, 0.5: 0.8}),
        c: UnitSensitivity(units[2], flat, {}, estimate={0.1: 0.999, 0.25: 0.995, 0.5: 0.99}),
    }
    low_a = dict(scores)
    for g in units[0].groups:
        low_a[g] = 0.01  # the scores (the tie-break of equal measured losses) would pick a
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, low_a, aim=0.9, sensitivity=sens)
    assert _removed_per_unit(lp, units) == {a: 0, b: 0, c: 16}
    without = {n: UnitSensitivity(s.unit, s.fidelity, {}) for n, s in sens.items()}
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, low_a, aim=0.9, sensitivity=without)
    assert _removed_per_unit(lp, units) == {a: 16, b: 0, c: 0}


def test_fidelity_floor_wins_over_the_latency_target() -> None:
    analysis, scores, units = _setup()
    a, b, c = (u.name for u in units)
    table = FakeTable({a: 0.5e-3, b: 0.5e-3, c: 0.5e-3}, {a: 8, b: 8, c: 8})
    calls: list[int] = []

    def fidelity(groups: set[int]) -> float:
        calls.append(len(groups))
        return 1.0 - 0.01 * len(groups)  # 0.9 allows 10 groups: one block of 8

    floor = Constraint("fidelity >= 0.9", lambda g: fidelity(g) >= 0.9, fidelity)
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.7, constraint=floor)
    assert lp.limited and lp.constraint == "fidelity >= 0.9"
    assert len(lp.plan.removed_groups) == 8 and lp.constraint_value == pytest.approx(0.92)
    assert lp.predicted_ratio == pytest.approx(0.95)
    assert any(n.startswith("fidelity >= 0.9 reached before the latency target") for n in lp.plan.notes)
    assert len(calls) <= 7  # a bisection, not a scan
    # without the floor the same aim goes much further
    free = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.7)
    assert not free.limited and free.predicted_ratio <= 0.7


def test_the_move_past_the_fidelity_floor_is_taken_in_part() -> None:
    # b's best move is the jump from 32 to 8 channels (its latency drops there); the floor allows
    # 10 groups: the whole move (24) breaks it, so the plan keeps b at the smallest count that holds
    analysis, scores, units = _setup()
    b = units[1].name
    table = FakeTable({}, {b: 8})
    table.curves[b] = lambda k: {32: 0.0, 24: 0.1e-3, 16: 0.2e-3, 8: 2e-3}[k]
    calls: list[int] = []

    def fidelity(groups: set[int]) -> float:
        calls.append(len(groups))
        return 1.0 - 0.01 * len(groups)

    def plan(floor: float):
        calls.clear()
        held = Constraint(f"fidelity >= {floor}", lambda g: fidelity(g) >= floor, fidelity)
        return plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.8, constraint=held)

    lp = plan(0.9)
    assert lp.limited and _removed_per_unit(lp, units)[b] == 8  # 24 kept: 8 groups, 0.92; 16 groups is 0.84
    assert lp.predicted_ratio == pytest.approx(0.99) and lp.constraint_value == pytest.approx(0.92)
    assert lp.moves_taken == 1 and len(calls) <= 5  # the whole move, the partial counts bisected, the value
    assert plan(0.8).predicted_ratio == pytest.approx(0.98)  # 16 kept: 0.84 holds
    assert _removed_per_unit(plan(0.8), units)[b] == 16
    # a count where the latency does not drop is never kept for the floor: nothing goes
    table.curves[b] = lambda k: {32: 0.0, 24: 0.0, 16: 0.2e-3, 8: 2e-3}[k]
    none = plan(0.9)
    assert _removed_per_unit(none, units)[b] == 0 and none.predicted_ratio == pytest.approx(1.0)
    assert none.moves_taken == 0


def test_the_move_past_the_floor_is_bisected_only_while_refine_allows() -> None:
    # as above, floor 0.8 (16 kept holds): an evaluation budget (Constraint.refine) that refuses
    # after k bisection steps stops at the smallest count measured to hold so far; the prefix's
    # own check is never refused (the answers are measured, not assumed)
    analysis, scores, units = _setup()
    b = units[1].name
    table = FakeTable({}, {b: 8})
    table.curves[b] = lambda k: {32: 0.0, 24: 0.1e-3, 16: 0.2e-3, 8: 2e-3}[k]
    asked: list[int] = []
    held: list[int] = []

    def fidelity(groups: set[int]) -> float:
        return 1.0 - 0.01 * len(groups)

    def plan(steps: int):
        asked.clear()
        held.clear()

        def holds(g: set[int]) -> bool:
            held.append(len(g))
            return fidelity(g) >= 0.8

        def refine(g: set[int]) -> bool:
            asked.append(len(g))
            return len(asked) <= steps

        c = Constraint("fidelity >= 0.8", holds, fidelity, refine)
        return plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.8, constraint=c)

    assert _removed_per_unit(plan(9), units)[b] == 16 and asked == [8, 16]  # 24 kept holds, then 16 kept
    one = plan(1)
    assert _removed_per_unit(one, units)[b] == 8 and one.predicted_ratio == pytest.approx(0.99)
    assert asked == [8, 16] and held == [24, 8]  # the whole move, 24 kept; refused at 16 kept: not measured
    none = plan(0)
    assert _removed_per_unit(none, units)[b] == 0 and none.predicted_ratio == pytest.approx(1.0)
    assert held == [24] and none.limited  # the whole move checked (and broke the floor), nothing bisected


def test_unreachable_aim_says_so() -> None:
    analysis, scores, units = _setup()
    a = units[0].name
    table = FakeTable({a: 0.5e-3}, {a: 8})  # only a is in the table: at most 3 blocks, 1.5 ms of 10
    lp = plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim=0.5)
    assert lp.predicted_ratio == pytest.approx(0.85)
    assert any("predicts 0.850x at best" in n for n in lp.plan.notes)
    assert _removed_per_unit(lp, units) == {a: 24, units[1].name: 0, units[2].name: 0}
    for g in units[1].groups:
        assert lp.plan.kept_reasons[g] == (f"the latency table has no measurement of unit {units[1].name}",)


def test_confirmation_corrects_an_optimistic_prediction() -> None:
    analysis, scores, units = _setup()
    table = FakeTable({u.name: 0.2e-3 for u in units}, {u.name: 4 for u in units})
    measured: list[float] = []

    def measure(lp):  # the real model saves only 0.6x of the predicted seconds, a steady bias
        r = 1.0 - 0.6 * (1.0 - lp.predicted_ratio)
        measured.append(r)
        return FakeMeasurement(r, r - 0.01, r + 0.01)

    def plan_at(aim: float):
        return plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim)

    out = confirm(0.9, plan_at, measure)
    assert measured[0] > 0.9  # first plan misses
    assert out.met and len(out.attempts) == 2
    assert 0.9 - BAND <= out.measurement.ratio <= 0.9
    first = out.attempts[0]  # saved 0.6x of the prediction: the next plan is predicted to save 1/0.6 x more
    goal = 0.9 - BAND / 2
    assert out.attempts[1].aim == pytest.approx(1.0 - (1.0 - first.predicted_ratio) * (1 - goal) / (1.0 - measured[0]))
    assert out.chosen.plan.removed_groups and not out.notes


def test_confirmation_stops_at_its_bound_and_says_so() -> None:
    analysis, scores, units = _setup()
    table = FakeTable({u.name: 0.2e-3 for u in units}, {u.name: 4 for u in units})
    count = 0

    def measure(lp):  # the machine never gets faster than 0.95x, whatever is removed
        nonlocal count
        count += 1
        return FakeMeasurement(0.95 - 0.001 * count, 0.93, 0.97)

    def plan_at(aim: float):
        return plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim)

    out = confirm(0.8, plan_at, measure, max_measurements=3)
    assert count == len(out.attempts) <= 3
    assert not out.met
    assert out.measurement.ratio == pytest.approx(min(a.measured_ratio for a in out.attempts))
    assert out.notes and out.notes[0].startswith("latency target 0.8 not reached: measured")


@dataclass(frozen=True)
class TimedMeasurement(FakeMeasurement):
    original: float = 1e-3  # seconds, as ABResult has them
    candidate: float = 1e-3


def test_confirmation_notes_a_change_of_the_machines_load() -> None:
    analysis, scores, units = _setup()
    table = FakeTable({u.name: 0.2e-3 for u in units}, {u.name: 4 for u in units})
    originals = iter([1.7e-3, 2.4e-3, 2.4e-3, 2.4e-3, 2.4e-3])

    def measure(lp):  # the second run under load: the original 2.4 ms instead of 1.7
        r = 1.0 - 0.6 * (1.0 - lp.predicted_ratio)
        o = next(originals)
        return TimedMeasurement(r, r - 0.01, r + 0.01, original=o, candidate=o * r)

    def plan_at(aim: float):
        return plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim)

    out = confirm(0.9, plan_at, measure)
    assert [a.original_ms for a in out.attempts] == pytest.approx([1.7, 2.4])  # first misses, second hits
    assert out.attempts[0].candidate_ms == pytest.approx(1.7 * out.attempts[0].measured_ratio)
    assert out.notes == (
        "the original measured 1.7-2.4 ms across the A/B runs: the machine's load changed while "
        "measuring, and ratios measured under more load read closer to 1",
    )

    steady = confirm(0.9, plan_at, lambda lp: TimedMeasurement(0.88, 0.87, 0.89, original=1.7e-3, candidate=1.5e-3))
    assert not steady.notes and steady.attempts[0].original_ms == pytest.approx(1.7)


def test_confirmation_relaxes_a_plan_far_below_the_target() -> None:
    analysis, scores, units = _setup()
    table = FakeTable({u.name: 0.2e-3 for u in units}, {u.name: 4 for u in units})

    def measure(lp):  # the real model saves 1.5x the predicted seconds
        r = 1.0 - 1.5 * (1.0 - lp.predicted_ratio)
        return FakeMeasurement(r, r - 0.01, r + 0.01)

    def plan_at(aim: float):
        return plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim)

    out = confirm(0.8, plan_at, measure)
    first = out.attempts[0]
    assert first.measured_ratio < 0.8 - 0.03
    assert out.met and out.measurement.ratio <= 0.8
    assert out.attempts[-1].groups_removed < first.groups_removed  # fewer channels for the same target
    assert np.isclose(out.measurement.ratio, max(a.measured_ratio for a in out.attempts if a.measured_ratio <= 0.8))


def test_confirmation_lands_near_the_target() -> None:
    # the real model saves 1.25x the predicted seconds: the plan at the target measures 0.875 for
    # 0.9, within 0.03 but not within BAND (0.015) of it; it is relaxed to a plan of fewer channels
    # that still measures within the target (a band of 0.03 kept the first)
    analysis, scores, units = _setup()
    table = FakeTable({u.name: 0.1e-3 for u in units}, {u.name: 2 for u in units})  # 1% of 10 ms per 2 channels

    def measure(lp):
        r = 1.0 - 1.25 * (1.0 - lp.predicted_ratio)
        return FakeMeasurement(r, r - 0.01, r + 0.01)

    def plan_at(aim: float):
        return plan_for_latency(analysis, PruneConfig(ratio=0.1), units, table, scores, aim)

    assert BAND == 0.015
    wide = confirm(0.9, plan_at, measure, band=0.03)
    assert len(wide.attempts) == 1 and wide.measurement.ratio == pytest.approx(0.875)
    out = confirm(0.9, plan_at, measure)
    # the second aims at 0.8925 measured (the band's middle): 0.914 predicted, 0.91 on the 2-channel steps
    assert [a.predicted_ratio for a in out.attempts] == pytest.approx([0.9, 0.91])
    assert [a.measured_ratio for a in out.attempts] == pytest.approx([0.875, 0.8875])
    assert out.met and 0.9 - BAND <= out.measurement.ratio <= 0.9
    assert out.attempts[-1].groups_removed < out.attempts[0].groups_removed
    assert out.chosen.plan.removed_groups != wide.chosen.plan.removed_groups


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latency_target": 0.7, "ratio": 0.2}, "cannot go with ratio"),
        ({"latency_target": 0.7, "macs_target": 0.5}, "cannot go with macs_target"),
        ({"latency_target": 0.7, "global_ranking": True}, "drop global_ranking"),
        ({"latency_target": 1.0}, r"^latency_target 1: .*a fraction in \(0, 1\)$"),
        ({"latency_target": 0.0}, r"^latency_target 0: .*a fraction in \(0, 1\)$"),
        ({"latency_target": 0.7, "criterion": "zero"}, "criterion 'zero' removes only provably constant"),
        ({"latency_target": 0.7, "min_fidelity": 0.9}, "need calibration inputs"),
    ],
)
def test_latency_target_usage_errors(options: dict, message: str) -> None:
    with pytest.raises(onnxprune.UsageError, match=message):
        PruneConfig(**options)


def test_latency_target_with_a_given_plan_is_refused() -> None:
    model = three_unit_chain()
    plan = onnxprune.prune(model, "l2", ratio=0.25, verify=False).plan
    with pytest.raises(onnxprune.UsageError, match="cannot go with pruning_plan"):
        onnxprune.prune(model, pruning_plan=plan, latency_target=0.7)


def test_latency_target_means_l2_and_is_a_budget() -> None:
    config = PruneConfig(latency_target=0.7)
    assert config.criterion == "l2" and "--latency-target" in config.criterion_reason
    assert config.budget_options == ("--latency-target",) and not config.allocated
    assert PruneConfig(latency_target=0.7, min_fidelity=0.9, calibration="c.npz").allocated is False


def test_next_aim_interpolates_between_plans_on_both_sides_and_damps_one_sided_corrections() -> None:
    from onnxprune.latency.confirm import MAX_GAIN, MAX_STEP, next_aim

    # one too slow (0.8 measured), one fast enough (0.6): between them, for 0.685 measured
    assert next_aim(0.7, [(0.7, 0.8), (0.5, 0.6)], band=0.03) == pytest.approx(0.585)
    # noise cannot push it outside the bracket
    assert next_aim(0.7, [(0.7, 0.71), (0.5, 0.69)], band=0.03) == pytest.approx(0.5)
    # a plan that saved almost nothing of its predicted 10%: at most MAX_GAIN x the saving next
    assert next_aim(0.7, [(0.9, 0.99)]) == pytest.approx(1.0 - 0.1 * MAX_GAIN)
    # pooled over the plans so far: (0.05 + 0.15) / (0.2 + 0.4) of the predicted saving is real,
    # so 0.315 needs 0.945 predicted; at most 2 x 0.4, and the ratio moves by at most 0.25
    assert next_aim(0.7, [(0.8, 0.95), (0.6, 0.85)]) == pytest.approx(0.6 - MAX_STEP)
    # a plan that saved 8x its prediction: at least 1/MAX_GAIN of the saving next
    assert next_aim(0.9, [(0.95, 0.6)]) == pytest.approx(1.0 - 0.05 / MAX_GAIN)
