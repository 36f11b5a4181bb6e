"""The moves a latency plan chooses from (pure: nothing is timed or run here): per unit of
tied layers, the channel counts it may keep (multiples of its measured step), the seconds the
latency table predicts a move saves and the fidelity it loses as measured with the unit alone
(its sensitivity curve, the estimate on unseen inputs where lower, plus a share of the outputs'
cosine loss); and the order that takes them greedily by seconds saved per fidelity lost. A move's
seconds are what it saves *in context*: with the units already lowered at their counts (a unit
whose partner has shrunk saves less than alone, the corner of the layer they share being gone
already), so moves rank by what they really save once their partners shrink."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from ..planning import enforce_constraints

if TYPE_CHECKING:
    from ..analysis import ChannelAnalysis
    from ..config import PruneConfig
    from ..sensitivity_analysis import Unit, UnitSensitivity

__all__ = [
    "CONTINUOUS_WEIGHT",
    "LatencySource",
    "Move",
    "MoveSpace",
    "isolated_order",
    "move_space",
    "rate",
]

# The outputs' cosine counts this much of the task score in a move's cost: it orders the moves
# a coarse task metric ties (top-1 or detections kept by both, or lost by both), while the
# moves the task metric tells apart stay ordered mostly by it.
CONTINUOUS_WEIGHT = 0.1
# Ties between moves that lose no measured fidelity are broken by the criterion's scores, scaled
# far below any fidelity difference the sensitivity analysis can measure.
_SCORE_TIEBREAK = 1e-9


class _UnitStep(Protocol):
    @property
    def step(self) -> int | None: ...


class LatencySource(Protocol):
    """What the planner reads of a latency table (``LatencyTable``): the original's seconds,
    the measured units (their ``step``: where latency drops; None: no measurable step), the
    seconds one unit saves at a kept channel count with the others full (``saving``) and with
    the others at given counts (``saving_with``: a move's saving in its plan), and the model's
    predicted seconds with several units shrunk (``predicted_latency``: the plan's prediction,
    corrected where units share layers)."""

    @property
    def baseline(self) -> float: ...

    @property
    def units(self) -> Mapping[str, _UnitStep]: ...

    def saving(self, unit: str, kept: int) -> float: ...

    def saving_with(self, unit: str, kept: int, others: Mapping[str, int]) -> float: ...

    def predicted_latency(self, kept: Mapping[str, int]) -> float: ...


@dataclass(frozen=True)
class Move:
    """Lower ``unit`` to ``kept`` channel groups: predicted seconds saved, importance lost."""

    unit: str
    kept: int
    saved: float
    lost: float


def _interp(xs: Sequence[float], ys: Sequence[float], fraction: float) -> float:
    """Linear between the points (xs ascending, from 0), the last slope (>= 0) beyond the last."""
    for i in range(1, len(xs)):
        if fraction <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 + (y1 - y0) * (fraction - x0) / (x1 - x0) if x1 > x0 else y1
    x0, x1, y0, y1 = xs[-2], xs[-1], ys[-2], ys[-1]
    slope = max((y1 - y0) / (x1 - x0), 0.0) if x1 > x0 else 0.0
    return y1 + slope * (fraction - x1)


def _interp_loss(sens: UnitSensitivity | None, fraction: float) -> float:
    """Fidelity lost with ``fraction`` of the unit removed alone: linear between the measured
    ratios (0 at 0), the last slope beyond the last ratio. Where the sensitivity has an estimate
    of the agreement on unseen inputs (top-1, CTC: their fidelity moves in steps of one sample),
    the lower of the two, as the --min-fidelity allocation orders its moves: a discrete fidelity
    costs nothing until a sample flips. Plus ``CONTINUOUS_WEIGHT`` x the outputs' cosine loss in
    the same trials (where measured): it orders units the task metric ties."""
    if sens is None:
        return 0.0
    estimate = sens.estimate
    xs = [0.0, *sens.fidelity.keys()]
    ys = [0.0, *(max(1.0 - min(f, estimate.get(r, 1.0)), 0.0) for r, f in sens.fidelity.items())]
    if sens.cosine:
        ys = [y + CONTINUOUS_WEIGHT * max(1.0 - sens.cosine.get(r, 1.0), 0.0) for r, y in zip(xs, ys)]
    return _interp(xs, ys, fraction)


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


@dataclass(frozen=True)
class MoveSpace:
    """The moves a latency plan chooses from: the units the table measured, their channel
    groups (``sizes``), the counts they may keep (multiples of ``steps``, ``grids``) and what a
    move costs in fidelity as measured alone (``lost``)."""

    analysis: ChannelAnalysis
    units: tuple[Unit, ...]
    table: LatencySource
    sizes: Mapping[str, int]
    grids: Mapping[str, tuple[int, ...]]
    steps: Mapping[str, int]
    scores: Mapping[int, float]
    sensitivity: Mapping[str, UnitSensitivity]
    unmeasured: Mapping[int, str]  # group -> its unit the table has no measurement of

    @cached_property
    def by_name(self) -> dict[str, Unit]:
        return {u.name: u for u in self.units}

    def lost(self, name: str, k_from: int, k_to: int) -> float:
        """Importance lost lowering ``name`` from ``k_from`` to ``k_to`` groups, the unit alone."""
        u, size = self.by_name[name], self.sizes[name]
        removed = u.groups[size - k_from : size - k_to]
        by_score = sum(max(self.scores.get(g, 0.0), 0.0) for g in removed)
        s = self.sensitivity.get(name)
        if s is None:
            return by_score
        measured = _interp_loss(s, (size - k_to) / size) - _interp_loss(s, (size - k_from) / size)
        return max(measured, 0.0) + _SCORE_TIEBREAK * by_score

    def saved(self, name: str, k_from: int, k_to: int, at: Mapping[str, int] | None = None) -> float:
        """Seconds saved lowering ``name`` from ``k_from`` to ``k_to`` groups, the other units at
        their counts in ``at`` (None: full): in context, so a move whose partner has shrunk
        saves what it really saves then, not what it would alone."""
        if at is None:
            return self.table.saving(name, k_to) - self.table.saving(name, k_from)
        return self.table.saving_with(name, k_to, {**at, name: k_from})

    def best_move(self, name: str, k: int, at: Mapping[str, int] | None = None) -> Move | None:
        """The unit's best move from ``k`` groups by seconds saved (the others at ``at``) per
        importance lost; it may skip a flat stretch of its curve to the count where it drops."""
        best: tuple[float, int, Move] | None = None
        for k_to in reversed([g for g in self.grids[name] if g < k]):
            saved = self.saved(name, k, k_to, at)
            if saved <= 0:
                continue  # a flat stretch: look further down for the count where it drops
            cost = self.lost(name, k, k_to)
            key = (rate(saved, cost), k_to)  # equal rates: the nearer count, so the plan overshoots by one step at most
            if best is None or key > best[:2]:
                best = (key[0], k_to, Move(name, k_to, saved, cost))
        return None if best is None else best[2]

    def chunk_move(self, name: str, k: int, seconds: float, at: Mapping[str, int] | None = None) -> Move | None:
        """The unit's move from ``k`` groups to the largest count saving >= ``seconds`` (the
        others at ``at``; where none does, to the count saving the most), None when nothing
        saves time."""
        saved = {g: s for g in self.grids[name] if g < k and (s := self.saved(name, k, g, at)) > 0}
        if not saved:
            return None
        enough = [g for g, s in saved.items() if s >= seconds]
        k_to = max(enough) if enough else max(saved, key=lambda g: (saved[g], g))
        return Move(name, k_to, saved[k_to], self.lost(name, k, k_to))

    def full(self) -> dict[str, int]:
        return dict(self.sizes)

    def predicted(self, at: Mapping[str, int]) -> float:
        """The table's ratio to the original with the units at these counts: its
        ``predicted_latency`` (one computation for the planner, its report and the table's own
        prediction; it corrects the savings of units that share layers, which a sum of the units'
        savings counts twice) over its baseline."""
        baseline = float(self.table.baseline)
        shrunk = {name: k for name, k in at.items() if k < self.sizes[name]}
        return self.table.predicted_latency(shrunk) / baseline if baseline > 0 else 1.0

    def chosen(self, at: Mapping[str, int]) -> list[int]:
        """The groups removed with the units at these counts, lowest-scored first in each unit."""
        by_name = self.by_name
        return [g for name, k in at.items() for g in by_name[name].groups[: self.sizes[name] - k]]

    def groups(self, at: Mapping[str, int]) -> set[int]:
        """``chosen`` with the groups tied to them (what surgery removes)."""
        return enforce_constraints(self.analysis, self.chosen(at), {})


def rate(saved: float, cost: float) -> float:
    """Seconds saved per importance lost (a move that loses nothing: infinite)."""
    return saved / cost if cost > 0 else math.inf


def move_space(
    analysis: ChannelAnalysis,
    config: PruneConfig,
    units: Sequence[Unit],
    table: LatencySource,
    scores: Mapping[int, float],
    *,
    sensitivity: Mapping[str, UnitSensitivity] | None = None,
) -> MoveSpace:
    """The moves of ``units`` (find_units' units, groups lowest score first) under ``table``:
    units it did not measure stay whole. ``scores``: group scores (the importance without
    ``sensitivity``, the tie-break with it)."""
    unmeasured = {g: u.name for u in units if u.name not in table.units for g in u.groups}
    units = [u for u in units if u.name in table.units]
    sizes = _unit_sizes(analysis, units)
    grids: dict[str, tuple[int, ...]] = {}
    steps: dict[str, int] = {}
    for u in units:
        size = sizes[u.name]
        step = _lcm(max(int(table.units[u.name].step or 1), 1), max(config.round_to, 1))
        lowest = max(size - len(u.groups), 1)
        grids[u.name] = tuple(k for k in range(step, size, step) if k >= lowest)
        steps[u.name] = step
    return MoveSpace(
        analysis,
        tuple(units),
        table,
        sizes,
        grids,
        steps,
        scores,
        sensitivity or {},
        unmeasured,
    )


def isolated_order(space: MoveSpace) -> list[Move]:
    """Every move, greedily by seconds saved in context per importance lost, each unit's loss
    measured alone. Lazily: a move saves no more once other units have shrunk (their shared
    layers' corners are gone), so a candidate's saving from an earlier plan is an upper bound;
    the best is recomputed on the current plan and taken when it still ranks first."""
    kept = space.full()
    order: list[Move] = []
    # unit -> (its best move, the number of moves taken when it was computed)
    candidates = {u.name: (space.best_move(u.name, kept[u.name], kept), 0) for u in space.units}

    def key(m: Move) -> tuple[float, float, str]:
        return (rate(m.saved, m.lost), m.saved, m.unit)

    while True:
        live = [(m, when) for m, when in candidates.values() if m is not None]
        if not live:
            break
        move, when = max(live, key=lambda mw: key(mw[0]))
        if when != len(order):  # computed on an earlier plan: recompute it on this one
            candidates[move.unit] = (space.best_move(move.unit, kept[move.unit], kept), len(order))
            continue
        order.append(move)
        kept[move.unit] = move.kept
        candidates[move.unit] = (space.best_move(move.unit, move.kept, kept), len(order))
    return order
