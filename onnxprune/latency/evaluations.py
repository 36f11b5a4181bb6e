"""The budget of fidelity evaluations a latency plan may spend on combined plans, shared by
whoever spends it: the moves' order (``interactions.MeasuredOrder``) and the answers' limit
(the --min-fidelity / --max-drop floor's bisections in ``planner``). With --reconstruct or
--recalibrate each evaluation refits the model (seconds apiece on a detector), so both draw
on one count and one time budget: the plan's evaluations are bounded as a whole, not per user.
Pure bookkeeping given the ``clock``: nothing here evaluates anything by itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["EvaluationBudget", "Spender"]

T = TypeVar("T")


class EvaluationBudget:
    """At most ``count`` evaluations, and (``seconds``) none started once the evaluations so far
    took that long on ``clock`` (an evaluation starts while the time spent is below the budget:
    the last may end past it). ``evaluations`` and ``spent``: everyone's, so far."""

    def __init__(
        self, count: int, seconds: float | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.count = max(int(count), 0)
        self.seconds = seconds
        self.clock = clock
        self.evaluations = 0
        self.spent = 0.0

    @property
    def stopped(self) -> str | None:
        """What the budget has run out of: "count", "time", or None while it has room."""
        if self.evaluations >= self.count:
            return "count"
        if self.seconds is not None and self.spent >= self.seconds:
            return "time"
        return None

    def run(self, evaluation: Callable[[], T]) -> tuple[T, float]:
        """``evaluation()`` counted and timed (only its own seconds: what runs between
        evaluations, the A/B runs, does not count): its value and the seconds it took."""
        start = self.clock()
        value = evaluation()
        took = self.clock() - start
        self.evaluations += 1
        self.spent += took
        return value, took


class Spender:
    """One user's share of a shared ``EvaluationBudget``: its own evaluations and seconds (for
    the report), ``past`` of them started when the budget had no room (a user that must check
    what it returns, e.g. the answers' limit, may), and ``bound``: what the budget had run out
    of when this user was refused an evaluation (``refuse``), None when it never was."""

    def __init__(self, budget: EvaluationBudget) -> None:
        self.budget = budget
        self.evaluations = 0
        self.spent = 0.0
        self.past = 0
        self.bound: str | None = None

    @property
    def has_room(self) -> bool:
        return self.budget.stopped is None

    def refuse(self) -> bool:
        """False while the budget has room; else records what it ran out of and returns True."""
        stopped = self.budget.stopped
        if stopped is not None and self.bound is None:
            self.bound = stopped
        return stopped is not None

    def run(self, evaluation: Callable[[], T]) -> T:
        """``evaluation()`` charged to the shared budget and to this user."""
        self.past += not self.has_room
        value, took = self.budget.run(evaluation)
        self.evaluations += 1
        self.spent += took
        return value
