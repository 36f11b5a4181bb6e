"""Per-unit sensitivity and fidelity-budgeted allocation (the trials: trial_runner).

A *unit* is a set of source layers whose channels are tied (a residual stage, a Conv with its
BatchNormalization and depthwise followers...): its channel groups are ranked by a criterion
and removed lowest first. Trials never rebuild the model: the original is instrumented once
with ``x * keep + fill`` before every reader of a channel (the masked reference that pruned
models are proven equal to), keep/fill are fed as inputs, and one onnxruntime session runs
every trial on all calibration samples at once.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .analysis import ChannelAnalysis
from .budget import MacsTracker
from .fidelity import OutputMetric
from .planning import enforce_constraints
from .trial_runner import Screen, TrialRunner
from .validated_search import search_order

# The first key of the result as JSON (sensitivity --json): what it is, its layout's version.
SENSITIVITY_FORMAT = "onnxprune-sensitivity/1"

__all__ = [
    "SENSITIVITY_FORMAT",
    "Screen",
    "SensitivityResult",
    "TrialRunner",
    "Unit",
    "UnitSensitivity",
    "allocate",
    "find_units",
    "measure_sensitivity",
]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Unit:
    """Source layers tied by shared channel groups, and its removable groups, lowest score first."""

    name: str
    layers: tuple[str, ...]
    groups: tuple[int, ...]
    channels: int


@dataclass(frozen=True)
class UnitSensitivity:
    unit: Unit
    fidelity: Mapping[float, float]  # ratio -> fidelity with that much of this unit removed alone
    macs_saved: Mapping[float, float]  # ratio -> fraction of the model's MACs saved
    # Ratios not run: a smaller ratio already fell below the search's floor, so these cannot
    # be kept either; their fidelity is that smaller ratio's (an upper bound).
    skipped: tuple[float, ...] = ()
    # ratio -> the estimated agreement on unseen inputs of the discrete outputs (top1, ctc;
    # fidelity_metrics.unseen), empty without them: smooth where their fidelity moves in
    # steps of 1/samples, so the search orders its moves by it.
    estimate: Mapping[float, float] = field(default_factory=dict)
    # Ratios whose trial ended on the first samples, far below the floor (trial_runner.Screen):
    # their fidelity is those samples'.
    screened: tuple[float, ...] = ()
    # ratio -> the lowest output cosine in the trial: continuous where a task metric is coarse
    # (the latency planner orders moves by it when their task scores tie); empty when not run
    cosine: Mapping[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "unit": self.unit.name,
            "layers": list(self.unit.layers),
            "channels": self.unit.channels,
            "removable_groups": len(self.unit.groups),
            "fidelity": {str(k): v for k, v in self.fidelity.items()},
            "macs_saved": {str(k): v for k, v in self.macs_saved.items()},
            "skipped": [str(r) for r in self.skipped],
            "estimate": {str(k): v for k, v in self.estimate.items()},
            "screened": [str(r) for r in self.screened],
            "cosine": {str(k): v for k, v in self.cosine.items()},
        }


@dataclass(frozen=True)
class SensitivityResult:
    units: tuple[UnitSensitivity, ...]
    ratios: tuple[float, ...]
    criterion: str
    samples: int
    seconds: float
    trials: int
    metrics: tuple[OutputMetric, ...] = ()  # what the fidelity is, per output, and why
    screened: int = 0  # trials that ended on the screened samples (trial_runner.Screen)

    def to_json(self, **options: Any) -> str:
        """``to_dict()`` as strict JSON text, as ``sensitivity --json`` writes it (a NaN
        fidelity is null); ``options`` go to ``json.dumps``."""
        from .render import json_text

        return json_text(self.to_dict(), **options)

    def to_dict(self) -> dict:
        return {
            "format": SENSITIVITY_FORMAT,
            "criterion": self.criterion,
            "ratios": list(self.ratios),
            "samples": self.samples,
            "seconds": self.seconds,
            "trials": self.trials,
            "screened": self.screened,
            "units": [u.to_dict() for u in self.units],
            "metrics": {m.name: {"metric": m.metric, "reason": m.reason} for m in self.metrics},
        }


def find_units(analysis: ChannelAnalysis, scores: Mapping[int, float]) -> list[Unit]:
    """Clusters of source layers joined by groups; each with its unpinned, scored groups."""
    parent: dict[str, str] = {s.node: s.node for s in analysis.sources}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    layers_of: dict[int, list[str]] = defaultdict(list)
    for s in analysis.sources:
        for r in set(int(r) for r in analysis.roots(s.ids)):
            layers_of[r].append(s.node)
    for layers in layers_of.values():
        for a, b in zip(layers, layers[1:]):
            parent[find(a)] = find(b)
    members: dict[str, list[str]] = defaultdict(list)
    for s in analysis.sources:
        members[find(s.node)].append(s.node)
    groups: dict[str, list[int]] = defaultdict(list)
    channels: dict[str, int] = defaultdict(int)
    for g in analysis.groups:
        root = find(g.members[0][0])
        channels[root] += len(g.members)
        if not g.pinned and np.isfinite(scores.get(g.id, np.nan)):
            groups[root].append(g.id)
    units = []
    for root, layers in members.items():
        ranked = tuple(sorted(groups[root], key=lambda gid: (scores[gid], gid)))
        if ranked:
            units.append(Unit(layers[0], tuple(layers), ranked, channels[root]))
    return units


def _take(unit: Unit, ratio: float, analysis: ChannelAnalysis) -> list[int]:
    """The lowest-score groups making up ``ratio`` of the unit's channels (at least one stays)."""
    want = int(ratio * unit.channels)
    out, n = [], 0
    for gid in unit.groups:
        size = len(analysis.group(gid).members)
        if n + size > want:
            break
        out.append(gid)
        n += size
    return out


def measure_sensitivity(
    runner: TrialRunner,
    analysis: ChannelAnalysis,
    units: Sequence[Unit],
    tracker: MacsTracker,
    ratios: Sequence[float],
    estimates: Mapping[str, np.ndarray] | None,
    criterion: str,
    choices: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    floor: float | None = None,
) -> SensitivityResult:
    """Fidelity of the model with ``ratio`` of one unit removed, for every unit and ratio.
    With ``floor`` (the search's fidelity floor) a unit's larger ratios are not run once one
    falls below it: removing more of the unit, with other units on top, keeps no more (those
    ratios are ``skipped``, and the search leaves them out). A runner with a ``Screen`` ends a
    trial that fails by a wide margin on its first samples there (the ratio is ``screened``,
    its fidelity those samples'), and the unit's larger ratios are skipped, with or without
    ``floor`` (a search with recovery runs without it). ``trials`` counts the runs, screened
    ones included."""
    start = time.perf_counter()
    base = tracker.original
    takes = [[enforce_constraints(analysis, _take(unit, r, analysis), {}) for r in ratios] for unit in units]
    # Units run in graph order of their first changed reader (at their largest ratio), so the
    # runner carries the original's activations forward instead of recomputing them per trial
    # (TrialRunner.advance); the result keeps the units' own order.
    order = list(range(len(units)))
    first_change = getattr(runner, "first_change", None)
    screened_trial = getattr(runner, "screened_trial", None) or (lambda *a: (runner.judged(*a), False))
    starts = {i: first_change(set().union(*map(set, takes[i])), estimates) if first_change else 0 for i in order}
    order.sort(key=lambda i: starts[i])
    results: list[UnitSensitivity | None] = [None] * len(units)
    total = len(units) * len(ratios)
    done = trials = 0
    for ui in order:
        unit = units[ui]
        if first_change is not None:
            runner.advance(starts[ui])
            runner.focus(set().union(*map(set, takes[ui])), estimates)
        fid: dict[float, float] = {}
        saved: dict[float, float] = {}
        est: dict[float, float] = {}
        cos: dict[float, float] = {}
        skipped: list[float] = []
        screened: list[float] = []
        for ratio, groups in zip(ratios, takes[ui]):
            saved[ratio] = (base - tracker.evaluate(groups)) / base if base else 0.0
            # Past a ratio below the floor, or one screened (far below the search's floor on its
            # first samples: with recovery too, which would have to win back more than the
            # screen's margin at a larger ratio), larger ratios are not offered.
            if screened or (floor is not None and fid and min(fid.values()) < floor):
                fid[ratio] = min(fid.values())
                if est:
                    est[ratio] = min(est.values())
                if cos:
                    cos[ratio] = min(cos.values())
                skipped.append(ratio)
            elif groups:
                judged, cut_short = screened_trial(groups, estimates, choices)
                if cut_short:
                    screened.append(ratio)
                fid[ratio] = judged.pooled
                if judged.estimate is not None:
                    est[ratio] = judged.estimate
                if judged.cosine is not None:
                    cos[ratio] = judged.cosine
                elif cut_short:  # ended on its first samples, far below the floor: no cosine run
                    cos[ratio] = min([judged.value, *cos.values()])
                trials += 1
            else:
                fid[ratio] = 1.0
                trials += 1
            done += 1
            if progress:
                progress(done, total)
        if est and len(est) < len(fid):  # a ratio removing nothing is identical: 1
            est = {r: est.get(r, 1.0) for r in fid}
        if cos and len(cos) < len(fid):
            cos = {r: cos.get(r, 1.0) for r in fid}
        results[ui] = UnitSensitivity(unit, fid, saved, tuple(skipped), est, tuple(screened), cos)
    if first_change is not None:
        runner.release()
    return SensitivityResult(
        tuple(r for r in results if r is not None),
        tuple(ratios),
        criterion,
        runner.samples,
        time.perf_counter() - start,
        trials,
        runner.metrics(choices),
        sum(len(r.screened) for r in results if r is not None),
    )


@dataclass
class _Move:
    unit: int
    level: int
    groups: list[int]
    cost: float
    gain: float


def allocate(
    sens: SensitivityResult,
    analysis: ChannelAnalysis,
    runner: TrialRunner,
    tracker: MacsTracker,
    estimates: Mapping[str, np.ndarray] | None,
    *,
    min_fidelity: float | None = None,
    macs_target: float | None = None,
    choices: Mapping[str, str] | None = None,
    judge: Callable[[set[int]], bool] | None = None,
    progress: Progress | None = None,
) -> tuple[list[int], float, float]:
    """Per-unit ratios from the sensitivity curves: moves (raise one unit to its next ratio)
    are ordered greedily by fidelity lost per MAC saved (each unit alone; with min_fidelity
    the estimate on unseen inputs where it is lower, see ``search_judgement.search_score``); then the longest
    prefix of that order whose *measured* fidelity (all units together, on the calibration
    inputs, the worse of its two halves) stays >= min_fidelity is found by bisection; with
    macs_target, the shortest prefix that reaches it. ``judge`` (a plan's groups -> kept or not) replaces the fidelity test:
    the user's validation function, searched group by group past the groups it refuses
    (validated_search). ``progress`` counts bisection steps. Returns (groups to
    remove, fidelity (nan when a judge decided), MACs after)."""
    ratios = sens.ratios
    by_estimate = judge is None and macs_target is None
    moves: list[_Move] = []
    for ui, us in enumerate(sens.units):
        prev_f, prev_s = 1.0, 0.0
        for level, r in enumerate(ratios):
            if r in us.skipped:  # below the floor at a smaller ratio already: never kept
                break
            groups = _take(us.unit, r, analysis)
            # Ordered by what judges: with a fidelity floor, by the estimate on unseen inputs
            # where there is one (a discrete fidelity, k of n samples, costs nothing until a
            # sample flips, and then a lot); the measured fidelity for a MACs target or the
            # user's function.
            f, s = min(us.fidelity[r], us.estimate.get(r, 1.0) if by_estimate else 1.0), us.macs_saved[r]
            gain = max(s - prev_s, 1e-12)
            moves.append(_Move(ui, level, groups, max(prev_f - f, 0.0), gain))
            prev_f, prev_s = f, s
    # A unit's moves must be taken in order: sort by cost/gain but keep per-unit order.
    moves.sort(key=lambda m: (m.cost / m.gain, m.level))
    order: list[_Move] = []
    next_level: dict[int, int] = defaultdict(int)
    pending = list(moves)
    while pending:
        for i, m in enumerate(pending):
            if next_level[m.unit] == m.level:
                order.append(m)
                next_level[m.unit] += 1
                del pending[i]
                break
        else:  # pragma: no cover - every unit's levels are present
            break

    def plan_for(n: int) -> set[int]:
        chosen: dict[int, list[int]] = {}
        for m in order[:n]:
            chosen[m.unit] = m.groups
        return enforce_constraints(analysis, [g for gs in chosen.values() for g in gs], {})

    size = len(order)
    if judge is not None:
        # The user's function judges plans one channel group at a time: the move order, each
        # move's new groups lowest score first, so the bisection can stop inside a move (a
        # move is up to a quarter of a unit) for about one call more per doubling.
        flat: list[int] = []
        taken: dict[int, int] = defaultdict(int)
        for m in order:
            flat.extend(m.groups[taken[m.unit] :])
            taken[m.unit] = len(m.groups)
        size = len(flat)

        def plan_for(n: int) -> set[int]:
            return enforce_constraints(analysis, flat[:n], {})

    base = tracker.original
    if macs_target is not None:
        lo, hi = 0, len(order)
        while lo < hi:  # shortest prefix reaching the MACs target
            mid = (lo + hi) // 2
            if tracker.evaluate(plan_for(mid)) <= macs_target * base:
                hi = mid
            else:
                lo = mid + 1
        groups = plan_for(lo)
        return sorted(groups), runner.fidelity(groups, estimates, choices), tracker.evaluate(groups)
    if judge is not None:  # the user's function: past the groups it refuses (validated_search)
        unit_of = {g: m.unit for m in order for g in m.groups}
        found = search_order(
            flat, lambda gs: enforce_constraints(analysis, gs, {}), judge, unit_of=unit_of, progress=progress
        )
        return sorted(found.groups), float("nan") if found.groups else 1.0, tracker.evaluate(found.groups)
    measured: list[float] = []  # the fidelity of each plan judged (when fidelity judges)
    if judge is None:
        assert min_fidelity is not None
        floor = min_fidelity

        def judge(groups: set[int]) -> bool:
            # The plan is chosen on the samples it is judged on, so the judge looks beyond
            # them (search_judgement.search_score): a continuous metric must keep the floor on each
            # half of the samples on its own (the pooled figure can pass on one lucky half
            # hiding one that fails), a discrete one (top-1, CTC) by its estimated agreement
            # on unseen inputs from the margins, as well as on the samples: on 16 samples a
            # half's k/16 cannot tell 0.99 from 0.95, and near-ties of other inputs flip
            # before any of these does. No extra trial (the halves are split from the one
            # batch). With reconstruction the outputs are the cross-fitted ones
            # (reconstruction_trials.ReconstructedTrials).
            measured.append(runner.fidelity(groups, estimates, choices, search=True))
            return measured[-1] >= floor

    lo, hi = 0, size
    steps = max(1, math.ceil(math.log2(size + 1)))  # a bisection over size + 1 prefixes
    done = 0
    if progress:
        progress(0, steps)  # the bar shows from the start: a recovered step can take a minute
    best: set[int] = set()
    best_f = 1.0
    while lo < hi:  # longest prefix whose plan the judge keeps
        mid = (lo + hi + 1) // 2
        groups = plan_for(mid)
        if judge(groups):
            lo, best = mid, groups
            best_f = measured[-1] if measured else float("nan")
        else:
            hi = mid - 1
        done += 1
        if progress:
            progress(min(done, steps), steps)
    if progress and done < steps:
        progress(steps, steps)  # the bar closes when the bisection ends early
    groups, f = (best, best_f) if lo else (set(), 1.0)
    return sorted(groups), f, tracker.evaluate(groups)
