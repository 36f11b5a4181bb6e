"""The latency plan's moves ordered by what they cost on the combined plan (interactions).

A unit's sensitivity is measured with that unit alone; pruned together, units interact (the
second unit cut from one path costs more than alone, a plan that has lost the answers loses
nothing more by the task metric), and the order by costs measured alone goes wrong exactly where
plans lose their answers. ``MeasuredOrder`` takes the moves greedily by seconds saved per
fidelity lost as ``isolated_order`` does, but measures a move's cost on the plan it would join,
NetAdapt-style, within a bounded number of fidelity evaluations: lazily (the costs measured
alone, or measured on an earlier plan, rank the candidates; the best is re-measured on the
current plan, and taken when it still ranks first), in chunks of about the same predicted
seconds so the budget lasts until the aim. The score is continuous beneath a coarse task
metric (``score`` is the caller's: the search's value plus ``CONTINUOUS_WEIGHT`` x the outputs'
cosine), so moves still order when the task metric ties at 0 or 1. When ``score`` judges another
model than the costs measured alone did (``rescaled``: the recovered model of --reconstruct, whose
losses are a fraction of the masked trials'), the costs measured alone are scaled by what the
measured moves cost against their costs alone so far: unscaled, every unit measured once would
look cheaper than every unit not yet measured, and the order would keep cutting the first few.
Recovery repairs units unalike (PP-LCNet + --reconstruct: a unit's recovered loss 0.22-0.82 of
its masked one; the two rankings of the units agree at Spearman 0.38), so such an order first
measures every unit's first move on the recovered model (``seed``, when that takes at most half
the evaluations left; the recovered default budget has one per unit for it), and scales each
unit's costs alone by what its own measured moves cost against them: ranked lazily by masked
costs times one shared scale, a unit that masks badly and recovers well is never measured.
Besides the count, the evaluations may be bounded by the seconds they take (``seconds``, on the
``clock`` given; the user's --latency-evaluation-seconds): a recovered evaluation refits the model
(YOLO26n: 1.3 s each on a quiet Intel Xeon, ~3 s under load), but a plan bounded by seconds depends
on the machine's speed and load, so by default only the count bounds them. The budget may be shared
(``evaluations.EvaluationBudget``: the answers' limit draws on it too), then the order sizes its
chunks for what the others left.
Pure given ``score`` (and the clock): the same calls give the same order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .evaluations import EvaluationBudget
from .moves import Move, MoveSpace, rate

__all__ = ["EVALUATIONS_PER_MOVE", "SEED_SHARE", "MeasuredOrder", "default_budget"]

# What a taken move costs in evaluations on average (itself, and a re-measured candidate that
# fell behind): the chunk size is planned from it.
EVALUATIONS_PER_MOVE = 2
# Of the budget left, the share planned for reaching the aim asked; the rest is for the lower
# aims an A/B correction asks next (the table's predictions are often optimistic).
FIRST_AIM_SHARE = 0.7
# ``rescaled``: the scale of the costs measured alone stays within these (a plan whose answers
# are gone costs ~0 per move: a zero scale would make every unmeasured move look free)
SCALE_RANGE = (0.05, 1.0)
# The share of the evaluations left that measuring every unit's first move (``seed``) may take at
# most: the rest orders the moves (measured on the plans they join).
SEED_SHARE = 0.5
_EPS = 1e-9


def default_budget(units: int) -> int:
    """Fidelity evaluations for a model of ``units`` units: two per unit (the sensitivity
    analysis ran about three each), at least 16, at most 160."""
    return min(max(2 * units, 16), 160)


@dataclass(frozen=True)
class _Known:
    """A move's cost measured on the plan of ``version`` (its score after: ``after``)."""

    move: Move
    cost: float
    after: float
    version: int


class MeasuredOrder:
    """The plan's moves, extended on demand (``moves_to``) with each taken move's fidelity cost
    measured on the plan it joins. ``score(groups)``: the fidelity of the original with those
    groups removed (higher is better); at most ``budget`` calls, and (``seconds``) no new call
    once the calls so far took that long on ``clock``, then the moves go on ordered by the costs
    measured alone (``rescaled``: those scaled as the measured ones compared, see the module's
    docstring). ``spent``: the seconds the calls took; ``bound``: what bounded them, "time" when
    the time budget held fewer than the count left (the chunks were sized for it) or ended them,
    "count" when the count ended them, None while neither did. ``shared``: a budget others draw
    on too (then ``budget``, ``seconds`` and ``clock`` are its own; ``evaluations`` and
    ``spent`` stay this order's). ``seed`` (default: ``rescaled``): measure every unit's first move
    before taking one (see the module's docstring)."""

    def __init__(
        self,
        space: MoveSpace,
        score: Callable[[set[int]], float],
        budget: int,
        *,
        rescaled: bool = False,
        seconds: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        shared: EvaluationBudget | None = None,
        seed: bool | None = None,
    ) -> None:
        self._space = space
        self._score = score
        self._ledger = shared if shared is not None else EvaluationBudget(budget, seconds, clock)
        self.budget = self._ledger.count
        self.rescaled = rescaled
        self.seconds = self._ledger.seconds
        self.spent = 0.0
        self._stopped: str | None = None  # the bound that ended the evaluations
        self._time_sized = False  # the chunks were planned for fewer evaluations than the count left
        # (cost alone, cost measured on the plan, unit) per measured move
        self._pairs: list[tuple[float, float, str]] = []
        self.evaluations = 0
        self.measured = 0  # moves taken with their cost measured on the plan they joined
        self._kept = space.full()
        self._moves: list[Move] = []
        self._version = 0
        self._base: float | None = None  # the current plan's score
        self._known: dict[str, _Known] = {}
        self._seed = rescaled if seed is None else seed  # every unit's first move measured first

    @property
    def space(self) -> MoveSpace:
        return self._space

    def moves_to(self, aim: float) -> tuple[Move, ...]:
        """The order's moves, extended until the predicted ratio is <= ``aim`` (or no unit can
        save more); earlier moves never change."""
        space = self._space
        if space.predicted(self._kept) <= aim + _EPS:
            return tuple(self._moves)
        left = self._left()
        needed = (space.predicted(self._kept) - aim) * float(space.table.baseline)
        seeds = self._seeds(left)
        planned = max(int((left - seeds) * FIRST_AIM_SHARE) // EVALUATIONS_PER_MOVE, 1)
        chunk = needed / planned  # seconds a measured move saves, so the budget lasts to the aim
        if seeds:
            self._measure_all(chunk)
        while space.predicted(self._kept) > aim + _EPS:
            move = self._next(chunk)
            if move is None:
                break
            self._take(move)
        return tuple(self._moves)

    def _seeds(self, left: int) -> int:
        """The evaluations seeding takes (``_measure_all``): one per unit that can move, when the
        order seeds, has taken no move yet, and they are at most ``SEED_SHARE`` of the ``left``."""
        if not self._seed or self._moves or self._pairs:
            return 0
        movable = sum(1 for u in self._space.units if self._space.grids[u.name])
        return movable if 0 < movable <= left * SEED_SHARE else 0

    def _measure_all(self, chunk: float) -> None:
        """Every unit's first move measured on the plan without moves, before the first is taken:
        a recovered model's losses differ from the masked ones alone by unit (the order's lazy
        ranking re-measures only the candidate that ranks first, so a unit whose masked cost
        looks high would never be measured, however well recovery repairs it)."""
        if self._base is None:
            self._base = self._evaluate(self._kept)
        for u in self._space.units:
            m = self._space.chunk_move(u.name, self._kept[u.name], chunk, self._kept)
            if m is None or self.exhausted:
                continue
            self._measure(m)

    def _measure(self, move: Move) -> None:
        """Measure ``move``'s cost on the current plan (one evaluation) and record it: the pair
        (cost alone, cost measured) the scales read, and the cost the ranking reads."""
        assert self._base is not None
        after = self._evaluate({**self._kept, move.unit: move.kept})
        cost = max(self._base - after, 0.0)
        self._pairs.append((move.lost, cost, move.unit))
        self._known[move.unit] = _Known(move, cost, after, self._version)

    def _left(self) -> int:
        """The evaluations the budget has left: the count, and with ``seconds`` as many as the
        time left holds at the mean time per evaluation so far (the plan without moves is
        evaluated first to know it), so the chunks are sized for the bound that comes first."""
        ledger = self._ledger
        left = ledger.count - ledger.evaluations
        if self.seconds is None:
            return left
        before = ledger.evaluations
        if self._base is None and not self.exhausted:
            self._base = self._evaluate(self._kept)
        per = ledger.spent / ledger.evaluations if ledger.evaluations else 0.0
        if per <= 0.0:
            return left
        # an evaluation starts while the time spent is below the budget: the last may end past it
        in_time = math.ceil(max(self.seconds - ledger.spent, 0.0) / per) + (ledger.evaluations - before)
        self._time_sized = self._time_sized or in_time < left
        return min(left, in_time)

    def _evaluate(self, at: dict[str, int]) -> float:
        groups = self._space.groups(at)
        # only the evaluations' own seconds: A/B runs between aims do not count
        value, took = self._ledger.run(lambda: float(self._score(groups)))
        self.evaluations += 1
        self.spent += took
        return value

    @property
    def exhausted(self) -> bool:
        """No more evaluations: the count is spent, or (``seconds``) the time; records which."""
        if self._stopped is None:
            self._stopped = self._ledger.stopped
        return self._stopped is not None

    @property
    def bound(self) -> str | None:
        """What bounded the evaluations (see the class docstring)."""
        return "time" if self._time_sized or self._stopped == "time" else self._stopped

    @property
    def scale(self) -> float:
        """What the costs measured alone are multiplied by: 1, or (``rescaled``) the measured
        moves' costs over their costs alone so far, within ``SCALE_RANGE``."""
        return self._scale_of(self._pairs)

    def _scale_of(self, pairs: list[tuple[float, float, str]]) -> float:
        alone = sum(a for a, _, _ in pairs)
        if not self.rescaled or alone <= 0:
            return 1.0
        return min(max(sum(c for _, c, _ in pairs) / alone, SCALE_RANGE[0]), SCALE_RANGE[1])

    def unit_scale(self, unit: str) -> float:
        """``scale`` for one unit: (``rescaled``) its own measured moves' costs over their costs
        alone where it has any (recovery repairs units unalike), else every unit's ``scale``."""
        own = [p for p in self._pairs if p[2] == unit]
        return self._scale_of(own) if own and sum(a for a, _, _ in own) > 0 else self.scale

    def _cost(self, m: Move) -> float:
        """The move's cost as last known: measured on some plan for this very move, else alone
        (times ``unit_scale``)."""
        known = self._known.get(m.unit)
        same = known is not None and known.move.kept == m.kept  # its saving moves with the plan; its cost was measured
        return known.cost if same else m.lost * self.unit_scale(m.unit)

    def _next(self, chunk: float) -> Move | None:
        space, kept = self._space, self._kept
        if self.exhausted:  # the budget is spent: costs measured alone, each unit's scaled as it measured
            live = [m for u in space.units if (m := space.best_move(u.name, kept[u.name], kept)) is not None]
            return max(
                live, key=lambda m: (rate(m.saved, m.lost * self.unit_scale(m.unit)), m.saved, m.unit), default=None
            )
        if self._base is None:
            self._base = self._evaluate(kept)
        proposals = [m for u in space.units if (m := space.chunk_move(u.name, kept[u.name], chunk, kept)) is not None]
        while proposals:
            best = max(proposals, key=lambda m: (rate(m.saved, self._cost(m)), m.saved, m.unit))
            known = self._known.get(best.unit)
            if known is not None and known.move.kept == best.kept and known.version == self._version:
                return Move(best.unit, best.kept, best.saved, known.cost)  # measured on this plan, still first
            if self.exhausted:
                return best
            self._measure(best)
        return None

    def _take(self, move: Move) -> None:
        known = self._known.pop(move.unit, None)
        fresh = known is not None and known.move.kept == move.kept and known.version == self._version
        self._base = known.after if fresh else None  # else measured again when next needed
        self.measured += fresh
        self._kept[move.unit] = move.kept
        self._moves.append(move)
        self._version += 1
