"""A plan for a latency budget, from a per-unit latency table (pure: nothing is timed here).

Moves lower one unit of tied layers (see ``sensitivity_analysis.find_units``) to a smaller
channel count, its lowest-scored groups first. The counts a unit may keep are multiples of its
measured step (where its latency drops; ``--round-to`` as well), so no move pays for channels
that save nothing. Moves are taken greedily by predicted seconds saved per importance lost; a
move may skip over a flat stretch of the unit's curve to the next count that saves time.
Importance is the criterion's group scores, or with a sensitivity analysis the unit's measured
fidelity loss (interpolated between the ratios it was measured at; for top-1/CTC outputs the
estimated agreement on unseen inputs where it is lower, as the --min-fidelity allocation does). With a constraint on the
answers (a fidelity floor, or the user's validation function within its drop) the longest
prefix of the order whose *measured* value holds is the limit: the answers win over the
latency target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..budget import finish_plan, pinned_reasons
from ..planning import PruningPlan, enforce_constraints

if TYPE_CHECKING:
    from ..analysis import ChannelAnalysis
    from ..config import PruneConfig
    from ..sensitivity_analysis import Unit, UnitSensitivity

__all__ = ["Constraint", "LatencyPlan", "LatencySource", "Move", "UnitChoice", "plan_for_latency"]

# Ties between moves that lose no measured fidelity are broken by the criterion's scores, scaled
# far below any fidelity difference the sensitivity analysis can measure.
_SCORE_TIEBREAK = 1e-9
_EPS = 1e-9  # a ratio equal to the aim up to float rounding reaches it


class _UnitStep(Protocol):
    @property
    def step(self) -> int | None: ...


class LatencySource(Protocol):
    """What the planner reads of a latency table (``LatencyTable``): the original's seconds,
    the measured units (their ``step``: where latency drops; None: no measurable step) and the
    seconds saved at a kept channel count."""

    @property
    def baseline(self) -> float: ...

    @property
    def units(self) -> Mapping[str, _UnitStep]: ...

    def saving(self, unit: str, kept: int) -> float: ...


@dataclass(frozen=True)
class Constraint:
    """What the plan must keep, measured with all its moves together: ``holds(groups)``, and
    ``value(groups)`` for the report; ``name`` says it (e.g. "fidelity >= 0.99")."""

    name: str
    holds: Callable[[set[int]], bool]
    value: Callable[[set[int]], float]


@dataclass(frozen=True)
class Move:
    """Lower ``unit`` to ``kept`` channel groups: predicted seconds saved, importance lost."""

    unit: str
    kept: int
    saved: float
    lost: float


@dataclass(frozen=True)
class UnitChoice:
    """One unit in the final plan: channel groups before and kept, its step, and the seconds
    the table predicts it saves."""

    unit: str
    layers: tuple[str, ...]
    channels: int
    kept: int
    step: int
    predicted_saving: float

    def to_dict(self) -> dict:
        return {
            "unit": self.unit,
            "layers": list(self.layers),
            "channels": self.channels,
            "kept": self.kept,
            "step": self.step,
            "predicted_saving_ms": self.predicted_saving * 1e3,
        }


@dataclass(frozen=True)
class LatencyPlan:
    """The plan with what the table predicts of it (ratio to the original's latency)."""

    plan: PruningPlan
    aim: float  # the predicted ratio planned for (the target, corrected by measurements)
    predicted_ratio: float
    baseline: float  # seconds
    units: tuple[UnitChoice, ...]
    moves_taken: int
    moves_available: int
    constraint: str | None = None  # what the answers must keep (Constraint.name)
    constraint_value: float | None = None  # its value measured with all moves together
    limited: bool = False  # the constraint stopped the plan before the aim
    notes: tuple[str, ...] = field(default=())


def _interp_loss(sens: UnitSensitivity | None, fraction: float) -> float:
    """Fidelity lost with ``fraction`` of the unit removed alone: linear between the measured
    ratios (0 at 0), the last slope beyond the last ratio. Where the sensitivity has an estimate
    of the agreement on unseen inputs (top-1, CTC: their fidelity moves in steps of one sample),
    the lower of the two, as the --min-fidelity allocation orders its moves: a discrete fidelity
    costs nothing until a sample flips."""
    if sens is None:
        return 0.0
    estimate = sens.estimate
    xs = [0.0, *sens.fidelity.keys()]
    ys = [0.0, *(max(1.0 - min(f, estimate.get(r, 1.0)), 0.0) for r, f in sens.fidelity.items())]
    for i in range(1, len(xs)):
        if fraction <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 + (y1 - y0) * (fraction - x0) / (x1 - x0) if x1 > x0 else y1
    x0, x1, y0, y1 = xs[-2], xs[-1], ys[-2], ys[-1]
    slope = max((y1 - y0) / (x1 - x0), 0.0) if x1 > x0 else 0.0
    return y1 + slope * (fraction - x1)


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _unit_sizes(analysis: ChannelAnalysis, units: Sequence[Unit]) -> dict[str, int]:
    """Channel groups per unit (pinned ones too: they are kept channels)."""
    unit_of = {layer: u.name for u in units for layer in u.layers}
    sizes = dict.fromkeys(unit_of.values(), 0)
    for g in analysis.groups:
        name = unit_of.get(g.members[0][0])
        if name is not None:
            sizes[name] += 1
    return sizes


def plan_for_latency(
    analysis: ChannelAnalysis,
    config: PruneConfig,
    units: Sequence[Unit],
    table: LatencySource,
    scores: Mapping[int, float],
    aim: float,
    *,
    sensitivity: Mapping[str, UnitSensitivity] | None = None,
    constraint: Constraint | None = None,
    protected: Mapping[int, str] | None = None,
) -> LatencyPlan:
    """The groups to remove so the predicted latency is <= ``aim`` x the table's baseline.

    ``units``: find_units' units (groups lowest score first); ``scores``: group scores (the
    importance without ``sensitivity``, the tie-break with it); ``constraint``: what the
    answers must keep with the plan's groups removed (the longest prefix that holds wins);
    ``protected``: group -> why it stays (excluded layers)."""
    unmeasured = {g: u.name for u in units if u.name not in table.units for g in u.groups}
    units = [u for u in units if u.name in table.units]  # units the table did not measure stay whole
    sizes = _unit_sizes(analysis, units)
    sens = sensitivity or {}
    kept: dict[str, int] = {}
    grids: dict[str, list[int]] = {}
    steps: dict[str, int] = {}
    by_name = {u.name: u for u in units}
    for u in units:
        size = sizes[u.name]
        step = _lcm(max(int(table.units[u.name].step or 1), 1), max(config.round_to, 1))
        lowest = max(size - len(u.groups), 1)
        grid = [k for k in range(step, size, step) if k >= lowest]
        kept[u.name], grids[u.name], steps[u.name] = size, grid, step

    def lost(u: Unit, k_from: int, k_to: int) -> float:
        size = sizes[u.name]
        removed = u.groups[size - k_from : size - k_to]
        by_score = sum(max(scores.get(g, 0.0), 0.0) for g in removed)
        s = sens.get(u.name)
        if s is None:
            return by_score
        measured = _interp_loss(s, (size - k_to) / size) - _interp_loss(s, (size - k_from) / size)
        return max(measured, 0.0) + _SCORE_TIEBREAK * by_score

    def best_move(u: Unit) -> Move | None:
        k = kept[u.name]
        best: tuple[float, int, Move] | None = None
        for k_to in reversed([g for g in grids[u.name] if g < k]):
            saved = table.saving(u.name, k_to) - table.saving(u.name, k)
            if saved <= 0:
                continue  # a flat stretch: look further down for the count where it drops
            cost = lost(u, k, k_to)
            rate = saved / cost if cost > 0 else math.inf
            key = (rate, k_to)  # equal rates: the nearer count, so the plan overshoots by one step at most
            if best is None or key > best[:2]:
                best = (rate, k_to, Move(u.name, k_to, saved, cost))
        return None if best is None else best[2]

    order: list[Move] = []
    candidates = {u.name: best_move(u) for u in units}
    while True:
        live = [m for m in candidates.values() if m is not None]
        if not live:
            break
        move = max(live, key=lambda m: (m.saved / m.lost if m.lost > 0 else math.inf, m.saved, m.unit))
        order.append(move)
        kept[move.unit] = move.kept
        candidates[move.unit] = best_move(by_name[move.unit])

    baseline = float(table.baseline)

    def state(n: int) -> dict[str, int]:
        at = {u.name: sizes[u.name] for u in units}
        for m in order[:n]:
            at[m.unit] = m.kept
        return at

    def predicted(n: int) -> float:
        at = state(n)
        saved = sum(table.saving(name, k) for name, k in at.items() if k < sizes[name])
        return max(baseline - saved, 0.0) / baseline if baseline > 0 else 1.0  # as LatencyTable.predicted_latency

    def groups_of(n: int) -> set[int]:
        at = state(n)
        chosen = [g for name, k in at.items() for g in by_name[name].groups[: sizes[name] - k]]
        return enforce_constraints(analysis, chosen, {})

    n = 0
    while n < len(order) and predicted(n) > aim + _EPS:
        n += 1
    if n:  # the last move may jump past the aim: stop it at the largest count of its unit that reaches it
        last = order[n - 1]
        before = state(n - 1)[last.unit]
        for k in sorted((g for g in grids[last.unit] if last.kept < g < before), reverse=True):
            order[n - 1] = Move(last.unit, k, last.saved, last.lost)
            if predicted(n) <= aim + _EPS:
                break
        else:
            order[n - 1] = last
    notes: list[str] = []
    if predicted(n) > aim + _EPS:
        notes.append(
            f"the latency table predicts {predicted(n):.3f}x at best (every unit at its smallest count of "
            f"its step), above the {aim:.3f}x aimed at"
        )
    value = None
    limited = False
    if constraint is not None:
        holding: dict[int, bool] = {0: True}

        def holds(m: int) -> bool:
            if m not in holding:
                holding[m] = constraint.holds(groups_of(m))
            return holding[m]

        if not holds(n):
            limited = True
            lo, hi = 0, n - 1
            while lo < hi:  # the longest prefix whose measured value holds
                mid = (lo + hi + 1) // 2
                if holds(mid):
                    lo = mid
                else:
                    hi = mid - 1
            n = lo
        value = constraint.value(groups_of(n))
        if limited:
            notes.append(
                f"{constraint.name} reached before the latency target: predicted {predicted(n):.3f}x at {value:.4g}"
            )
    at = state(n)
    reasons = pinned_reasons(analysis)
    for gid, why in (protected or {}).items():
        reasons.setdefault(gid, []).append(f"protected: {why}")
    for gid, name in unmeasured.items():
        reasons.setdefault(gid, []).append(f"the latency table has no measurement of unit {name}")
    unit_of_group = {g: u for u in units for g in u.groups}
    for g in analysis.groups:
        if not g.pinned and g.id not in unit_of_group and g.id not in reasons:
            reasons[g.id] = [f"criterion {config.criterion!r} gives no score here"]
    chosen = [g for name, k in at.items() for g in by_name[name].groups[: sizes[name] - k]]
    goal = f"predicted latency <= {aim:.3f}x" + (f", {constraint.name}" if limited and constraint else "")

    def kept_reason(gid: int) -> str:
        u = unit_of_group.get(gid)
        if u is None:
            return f"kept by the latency plan ({goal})"
        k, step = at[u.name], steps[u.name]
        return f"kept by the latency plan ({goal}): {u.name} keeps {k} of {sizes[u.name]} channels" + (
            f", a multiple of {step}, the step where its measured latency drops" if step > 1 else ""
        )

    the_plan = finish_plan(analysis, config, chosen, scores, reasons, kept_reason)
    the_plan = PruningPlan(
        the_plan.criterion,
        the_plan.removed_groups,
        the_plan.kept_reasons,
        the_plan.scores,
        the_plan.members,
        (*the_plan.notes, *notes),
    )
    choices = tuple(
        UnitChoice(
            u.name,
            u.layers,
            sizes[u.name],
            at[u.name],
            steps[u.name],
            table.saving(u.name, at[u.name]) if at[u.name] < sizes[u.name] else 0.0,
        )
        for u in units
    )
    return LatencyPlan(
        the_plan,
        aim,
        predicted(n),
        baseline,
        choices,
        n,
        len(order),
        constraint.name if constraint else None,
        value,
        limited,
        tuple(notes),
    )
