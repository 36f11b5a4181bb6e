"""With --reconstruct, the latency planner judges combined plans as the user gets them: the
order's scores and the --min-fidelity floor on the recovered (cross-fitted) model, not the
masked one. A fake timer: nothing is timed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_sensitivity import _calib, _redundant_channel_model

import onnxprune
from onnxprune.reconstruction_trials import ReconstructedTrials
from onnxprune.testing import StepTimer


def test_reconstructed_trials_judged_is_what_fidelity_says() -> None:
    model = _redundant_channel_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 6, 6)).astype(np.float32)} for i in range(8)]
    analysis = onnxprune.analyze(model)
    trials = ReconstructedTrials(model, analysis, feeds)
    lossy = {g.id for g in analysis.groups if not g.pinned}  # every channel of the first conv
    for groups in (set(), {max(lossy)}, lossy):
        j = trials.judged(groups, None)
        assert j.value == trials.fidelity(groups, None, search=True)
        assert j.pooled == pytest.approx(trials.fidelity(groups, None), abs=1e-12)
        assert j.cosine is not None and -1.0 <= j.cosine <= 1.0
    assert trials.judged(set(), None).cosine == pytest.approx(1.0, abs=1e-6)
    assert trials.judged(lossy, None).cosine < 0.99


def _prune(calib: str, criterion: str = "l2", **options):
    return onnxprune.prune(
        _redundant_channel_model(),
        criterion,
        latency_target=0.9,
        min_fidelity=0.9999,
        timer=StepTimer(step=1, base=1e-4, per_block=1e-5),
        calibration=calib,
        compensation="none",
        **options,
    ).report


def _count_judged(monkeypatch) -> list[frozenset[int]]:
    """The groups of every recovered evaluation (ReconstructedTrials.judged call), in order."""
    calls: list[frozenset[int]] = []
    judged = ReconstructedTrials.judged

    def counted(self, groups, *args, **kwargs):
        calls.append(frozenset(groups))
        return judged(self, groups, *args, **kwargs)

    monkeypatch.setattr(ReconstructedTrials, "judged", counted)
    return calls


def test_the_fidelity_floor_is_judged_on_the_recovered_model(tmp_path: Path, monkeypatch) -> None:
    # channel 3 is half of channel 1: removing it loses fidelity masked, none once its reader
    # is refitted; so with --reconstruct it goes, and only it (the others are not redundant)
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    plain = _prune(calib)
    assert plain.channels_removed == 0 and plain.latency.limited
    calls = _count_judged(monkeypatch)
    rec = _prune(calib, reconstruct=True)
    assert rec.channels_removed == 1 and rec.layers[0].channels_after == 3
    assert rec.latency.constraint_value >= 0.9999 and rec.latency.limited
    # the order's evaluations and the floor's were the recovered model's
    assert rec.latency.evaluations > 0 and len(calls) >= rec.latency.evaluations
    calls.clear()
    _prune(calib)
    assert calls == []


def test_recovered_evaluations_are_bounded_by_their_count_unless_a_time_budget_is_given(
    tmp_path: Path, monkeypatch
) -> None:
    # every recovered evaluation takes 30 fake seconds (StepTimer's clock, read before and after
    # each). By default the count alone bounds them (19: 2 per unit, at least 16, and one per unit
    # for measuring each unit's first move on the recovered model): the same plan however long an
    # evaluation takes (until 2026-12-01 a default 120 s held 4 of them at 30 s, all 9 at 0 s: the
    # plan depended on the machine's speed and load). A time budget given holds what it holds.
    from latency_helpers import three_unit_chain

    from onnxprune.latency.report import latency_lines

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    calls = _count_judged(monkeypatch)

    def run(tick: float, **options):
        return onnxprune.prune(
            three_unit_chain(),
            latency_target=0.5,
            timer=StepTimer(step=4, base=1e-4, per_block=1e-5, tick=tick),
            calibration=str(calib),
            fidelity_metrics={"*": "cosine"},
            reconstruct=True,
            **options,
        )

    # the count alone: the plan without moves, each of the 3 units' first move, then the order: 9
    slow = run(30.0)
    order = slow.report.latency.to_dict()["order"]
    assert order["budget"] == 19 and order["evaluations"] == len(calls) == 9
    assert order["recovered"] is True and order["seconds"] == pytest.approx(270.0)
    assert order["seconds_budget"] is None and order["bound"] is None
    assert (
        f"  moves ordered by their fidelity cost on the plan they join: {order['measured_moves']} measured so, "
        "9 of 19 recovered evaluations in 270 s (--latency-evaluations, no time budget)"
    ) in latency_lines(slow.report.to_dict())
    calls.clear()
    fast = run(0.0)
    assert fast.report.latency.to_dict()["order"]["evaluations"] == len(calls) == 9
    assert fast.plan.removed_groups == slow.plan.removed_groups
    # a time budget given (latency_evaluation_seconds / --latency-evaluation-seconds): 120 s hold 4
    calls.clear()
    report = run(30.0, latency_evaluation_seconds=120.0).report
    timed = report.latency.to_dict()["order"]
    assert timed["evaluations"] == len(calls) == 4 and timed["seconds"] == pytest.approx(120.0)
    assert timed["seconds_budget"] == 120.0 and timed["bound"] == "time"
    assert (
        f"  moves ordered by their fidelity cost on the plan they join: {timed['measured_moves']} measured so, "
        "4 of 19 recovered evaluations in 120 s (bounded by its time budget, 120 s: --latency-evaluation-seconds)"
    ) in latency_lines(report.to_dict())
    # --latency-evaluations N: N evaluations at most (5: too few to measure every unit first)
    calls.clear()
    given = run(30.0, latency_evaluations=5).report.latency.to_dict()["order"]
    assert given["evaluations"] == len(calls) == 4 and given["budget"] == 5 and given["seconds_budget"] is None
    for bad in (0, -1.0, True, "60"):
        with pytest.raises(onnxprune.UsageError, match="latency_evaluation_seconds must be a positive number"):
            onnxprune.PruneConfig(latency_target=0.5, latency_evaluation_seconds=bad)


def test_the_fidelity_floors_recovered_evaluations_share_the_time_budget(tmp_path: Path, monkeypatch) -> None:
    # every refit (ReconstructedTrials._cross_fitted) takes 30 fake seconds; the order spends the
    # 120 s given; the floor's own evaluations are charged to the same budget: its check of the
    # plan still runs (past the budget, counted), the move past the limit is bisected no further
    from latency_helpers import three_unit_chain

    from onnxprune.latency.report import latency_lines

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    refits: list[frozenset[int]] = []
    fitted = ReconstructedTrials._cross_fitted

    def counted(self, groups, *args, **kwargs):
        refits.append(frozenset(groups))
        return fitted(self, groups, *args, **kwargs)

    monkeypatch.setattr(ReconstructedTrials, "_cross_fitted", counted)

    def run(tick: float):
        refits.clear()
        return onnxprune.prune(
            three_unit_chain(),
            latency_target=0.5,
            min_fidelity=0.995,
            timer=StepTimer(step=4, base=1e-4, per_block=1e-5, tick=tick),
            calibration=str(calib),
            fidelity_metrics={"*": "cosine"},
            reconstruct=True,
            latency_evaluation_seconds=120.0,
        ).report

    report = run(30.0)
    order, limit = report.latency.to_dict()["order"], report.latency.to_dict()["limit"]
    assert order["evaluations"] == 4 and order["seconds"] == pytest.approx(120.0) and order["bound"] == "time"
    # every refit charged once, to one of the two (the floor reuses plans the order judged)
    assert len(refits) == len(set(refits)) == order["evaluations"] + limit["evaluations"] == 5
    assert limit["seconds"] == pytest.approx(30.0) and limit["past_budget"] == 1 and limit["bound"] == "time"
    assert limit["seconds_budget"] == 120.0 and limit["budget"] == 19
    assert report.latency.limited and report.latency.constraint_value >= 0.995
    assert report.channels_removed == 0  # the whole move checked, broke the floor; not bisected: nothing goes
    assert (
        "  the limit: 1 recovered evaluations in 30 s, on the budget shared with the order (120 s and 19 "
        "evaluations): spent (time): the move past the limit bisected no further; 1 checks of the plan past it "
        "(never skipped)"
    ) in latency_lines(report.to_dict())
    # no time passing: every unit's first move measured on the recovered model, the order's prefix
    # holds further (two convs keep 16 of 32; measured alone first, one conv kept 28), within the budget
    free = run(0.0)
    limit = free.latency.to_dict()["limit"]
    assert limit["evaluations"] == 3 and limit["bound"] is None and limit["past_budget"] == 0
    assert len(refits) == len(set(refits)) == free.latency.evaluations + 3
    assert sorted(c.channels_after for c in free.layers) == [16, 16]
    assert free.latency.constraint_value >= 0.995
    assert any(
        line.endswith("within it") and line.startswith("  the limit: 3 recovered evaluations in 0 s")
        for line in latency_lines(free.to_dict())
    )
