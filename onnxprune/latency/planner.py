"""A plan for a latency budget, from a per-unit latency table (pure: nothing is timed here).

Moves lower one unit of tied layers (see ``sensitivity_analysis.find_units``) to a smaller
channel count, its lowest-scored groups first (``latency.moves``). The counts a unit may keep
are multiples of its measured step (where its latency drops; ``--round-to`` as well), so no move
pays for channels that save nothing. Moves are taken greedily by predicted seconds saved per
importance lost; a move may skip over a flat stretch of the unit's curve to the next count
that saves time. Importance is the criterion's group scores, or with a sensitivity analysis the
unit's measured fidelity loss (interpolated between the ratios it was measured at; for top-1/CTC
outputs the estimated agreement on unseen inputs where it is lower, as the --min-fidelity
allocation does; plus a share of the outputs' cosine loss, which orders what a coarse task metric
ties), each unit measured alone -- or, given an ``order`` (``latency.interactions``), measured on
the combined plan. With a constraint on the answers (a fidelity floor, or the user's validation
function within its drop) the longest prefix of the order whose *measured* value holds is the
limit, and the move after it taken in part, to the smallest count of its unit that still holds
(bisected while the constraint's ``refine`` allows: an evaluation budget): the answers win over
the latency target."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..budget import finish_plan, pinned_reasons
from ..planning import PruningPlan
from .moves import LatencySource, Move, MoveSpace, isolated_order, move_space

if TYPE_CHECKING:
    from ..analysis import ChannelAnalysis
    from ..config import PruneConfig
    from ..sensitivity_analysis import Unit, UnitSensitivity

__all__ = ["Constraint", "LatencyPlan", "LatencySource", "Move", "MoveOrder", "UnitChoice", "plan_for_latency"]

_EPS = 1e-9  # a ratio equal to the aim up to float rounding reaches it


@dataclass(frozen=True)
class Constraint:
    """What the plan must keep, measured with all its moves together: ``holds(groups)``, and
    ``value(groups)`` for the report; ``name`` says it (e.g. "fidelity >= 0.99"). ``refine``:
    whether the move past the limit may still be bisected at ``groups`` (their value known, or
    an evaluation budget left); None: always. The prefix's checks are never refused: the answers
    are measured, not assumed."""

    name: str
    holds: Callable[[set[int]], bool]
    value: Callable[[set[int]], float]
    refine: Callable[[set[int]], bool] | None = None


@dataclass(frozen=True)
class UnitChoice:
    """One unit in the final plan: channel groups before and kept, its step, and the seconds
    the table predicts it saves in the plan (the other units at their kept counts)."""

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
    evaluations: int = 0  # fidelity evaluations of combined plans behind the order (MeasuredOrder)


class MoveOrder(Protocol):
    """Where a plan's moves come from when not ``isolated_order`` (``interactions.MeasuredOrder``):
    its ``space``, and the order's first moves, at least until the prediction reaches ``aim``."""

    @property
    def space(self) -> MoveSpace: ...

    @property
    def evaluations(self) -> int: ...

    def moves_to(self, aim: float) -> Sequence[Move]: ...


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
    order: MoveOrder | None = None,
) -> LatencyPlan:
    """The groups to remove so the predicted latency is <= ``aim`` x the table's baseline.

    ``units``: find_units' units (groups lowest score first); ``scores``: group scores (the
    importance without ``sensitivity``, the tie-break with it); ``constraint``: what the answers must keep with the plan's groups removed (the longest prefix
    that holds wins); ``protected``: group -> why it stays (excluded layers); ``order``: the
    moves measured on the combined plan (``interactions.MeasuredOrder``, built on the same
    arguments), else each unit's loss measured alone decides."""
    if order is not None:
        space = order.space
        moves = list(order.moves_to(aim))
    else:
        space = move_space(analysis, config, units, table, scores, sensitivity=sensitivity)
        moves = isolated_order(space)
    return _plan_from_order(space, config, moves, aim, constraint, protected, order)


def _part_of_move(space: MoveSpace, move: Move, at: dict[str, int], constraint: Constraint) -> Move | None:
    """``move`` (one unit lowered, from its count in ``at``) stopped at the smallest count of the
    unit that saves time and keeps ``constraint`` (bisected), or None. Moves are coarse (a
    measured order's chunk, a jump over a flat stretch): the first whole move past the answers'
    limit can lose most of the way from the limit to the target. When ``constraint.refine``
    refuses (an evaluation budget spent), the smallest count measured to hold so far."""
    before = at[move.unit]
    counts = [k for k in space.grids[move.unit] if move.kept < k < before and space.saved(move.unit, before, k, at) > 0]
    lo, hi = 0, len(counts)  # counts[lo:] may hold, counts[hi] (if any) was measured to; more kept holds better
    while lo < hi:
        mid = (lo + hi) // 2
        groups = space.groups({**at, move.unit: counts[mid]})
        if constraint.refine is not None and not constraint.refine(groups):
            break
        if constraint.holds(groups):
            hi = mid
        else:
            lo = mid + 1
    if hi == len(counts):
        return None
    k = counts[hi]
    return Move(move.unit, k, space.saved(move.unit, before, k, at), space.lost(move.unit, before, k))


def _plan_from_order(
    space: MoveSpace,
    config: PruneConfig,
    order: list[Move],
    aim: float,
    constraint: Constraint | None,
    protected: Mapping[int, str] | None,
    source: MoveOrder | None,
) -> LatencyPlan:
    """The shortest prefix of ``order`` predicted to reach ``aim`` (its last move stopped at the
    largest count that does), cut back to what ``constraint`` allows."""
    analysis, table, units, sizes, grids, steps = (
        space.analysis,
        space.table,
        space.units,
        space.sizes,
        space.grids,
        space.steps,
    )
    baseline = float(table.baseline)

    def state(n: int) -> dict[str, int]:
        at = {u.name: sizes[u.name] for u in units}
        for m in order[:n]:
            at[m.unit] = m.kept
        return at

    def predicted(n: int) -> float:
        return space.predicted(state(n))

    def groups_of(n: int) -> set[int]:
        return space.groups(state(n))

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
            if n < len(order):  # the move that broke it, in part: as far as the answers hold
                part = _part_of_move(space, order[n], state(n), constraint)
                if part is not None:
                    order[n] = part
                    n += 1
        value = constraint.value(groups_of(n))
        if limited:
            notes.append(
                f"{constraint.name} reached before the latency target: predicted {predicted(n):.3f}x at {value:.4g}"
            )
    at = state(n)
    reasons = pinned_reasons(analysis)
    for gid, why in (protected or {}).items():
        reasons.setdefault(gid, []).append(f"protected: {why}")
    for gid, name in space.unmeasured.items():
        reasons.setdefault(gid, []).append(f"the latency table has no measurement of unit {name}")
    unit_of_group = {g: u for u in units for g in u.groups}
    for g in analysis.groups:
        if not g.pinned and g.id not in unit_of_group and g.id not in reasons:
            reasons[g.id] = [f"criterion {config.criterion!r} gives no score here"]
    chosen = space.chosen(at)
    goal = f"predicted latency <= {aim:.3f}x" + (f", {constraint.name}" if limited and constraint else "")

    def kept_reason(gid: int) -> str:
        u = unit_of_group.get(gid)
        if u is None:
            return f"kept by the latency plan ({goal})"
        k, step = at[u.name], steps[u.name]
        return f"kept by the latency plan ({goal}): {u.name} keeps {k} of {sizes[u.name]} channels" + (
            f", a multiple of {step}, the step where its measured latency drops" if step > 1 else ""
        )

    the_plan = finish_plan(analysis, config, chosen, space.scores, reasons, kept_reason)
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
            space.saved(u.name, sizes[u.name], at[u.name], at) if at[u.name] < sizes[u.name] else 0.0,
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
        source.evaluations if source is not None else 0,
    )
