"""Confirm a latency plan by measuring it, and correct the prediction until it holds.

The table's prediction adds up per-unit savings measured one unit at a time; the real model
can differ (layers fuse, memory traffic, the machine's mood). So the final plan is timed
against the original in an interleaved A/B run, and when the measured ratio misses the
target the table's savings are corrected by measured / predicted and the plan made again, a few times at
most. Pure given its two callables (plan at an aim; measure a plan), so tests drive it with a
fake measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .planner import LatencyPlan

__all__ = [
    "BAND",
    "MAX_GAIN",
    "MAX_MEASUREMENTS",
    "MAX_STEP",
    "STATE_CHANGE",
    "Attempt",
    "Confirmed",
    "Measurement",
    "confirm",
    "next_aim",
]

# A/B runs at most: each builds and times a model. The unit tables can over-predict the
# whole model's saving several times over (units timed alone are overhead-bound): with at most
# MAX_GAIN per correction that takes up to three, then one or two between the bracketing plans.
MAX_MEASUREMENTS = 5
# The original measured this much slower in one A/B run than in another: the machine's load
# changed in between (a cost added to every inference pulls ratios toward 1), worth a note.
STATE_CHANGE = 0.1
# A plan measured this far below the target removed more than needed: it is planned again
# with a higher aim (better fidelity), keeping the faster one if that misses. 0.03 until
# 2026-12-01: the table is optimistic about the deep cuts latency plans end with (YOLO26n: the
# plans predicted 0.624 and 0.582 measured 0.714 and 0.690, 236 more channel groups for 0.024),
# so a plan accepted 0.03 below had cut channels that bought little time; the relaxed plan is a
# prefix of the same order (fewer of its last, least efficient moves) and costs one A/B run.
BAND = 0.015
# Before a plan on each side of the target is measured, one correction scales the predicted
# saving by at most this factor (the table can be off by 2x and more: units timed alone).
MAX_GAIN = 2.0
MAX_STEP = 0.25
_EPS = 1e-9


class Measurement(Protocol):
    """An A/B measurement of a candidate against the original (``ab.ABResult``): the median
    of the interleaved ratios, its p10-p90 spread, and the precision the runtime computed in."""

    @property
    def ratio(self) -> float: ...

    @property
    def ratio_p10(self) -> float: ...

    @property
    def ratio_p90(self) -> float: ...

    @property
    def precision(self) -> str: ...


@dataclass(frozen=True)
class Attempt:
    """One planned and measured candidate."""

    aim: float
    predicted_ratio: float
    measured_ratio: float
    p10: float
    p90: float
    groups_removed: int
    original_ms: float | None = None  # the A/B run's own original (fastest run, median over rounds)
    candidate_ms: float | None = None

    def to_dict(self) -> dict:
        return {
            "aim": self.aim,
            "predicted_ratio": self.predicted_ratio,
            "measured_ratio": self.measured_ratio,
            "measured_p10": self.p10,
            "measured_p90": self.p90,
            "groups_removed": self.groups_removed,
            "original_ms": self.original_ms,
            "candidate_ms": self.candidate_ms,
        }


@dataclass(frozen=True)
class Confirmed:
    """The chosen plan, its measurement, and every attempt in order."""

    target: float
    chosen: LatencyPlan
    measurement: Measurement
    attempts: tuple[Attempt, ...]
    met: bool
    notes: tuple[str, ...] = field(default=())


def next_aim(target: float, points: Sequence[tuple[float, float]], band: float = BAND) -> float:
    """The predicted ratio to plan for next, from the (predicted, measured) ratios so far,
    aiming at the middle of the accepted band (``target - band / 2``).

    Once one plan measured too slow and one fast enough, between those two nearest the target
    (secant: measurement noise cannot throw it outside them). Before that, the last plan's
    predicted saving scaled by what the plans so far really saved (pooled measured / predicted
    saving), by at most ``MAX_GAIN`` either way and ``MAX_STEP`` in the predicted ratio, so a
    noisy A/B run or a table far off cannot send the plan to an extreme in one step."""
    goal = target - band / 2
    above = [pm for pm in points if pm[1] > target]
    below = [pm for pm in points if pm[1] <= target]
    if above and below:
        (p_hi, m_hi), (p_lo, m_lo) = min(above, key=lambda t: t[1]), max(below, key=lambda t: t[1])
        if m_hi - m_lo > _EPS:
            aim = p_lo + (goal - m_lo) * (p_hi - p_lo) / (m_hi - m_lo)
            return min(max(aim, min(p_lo, p_hi)), max(p_lo, p_hi))
        return p_lo
    predicted = points[-1][0]
    saved_p = 1.0 - predicted
    if saved_p <= _EPS:  # the plan removed nothing: start from the goal itself
        return min(max(goal, 0.01), 1.0)
    # The table's savings scaled by what all plans so far really saved (pooled: one noisy run
    # weighs less), by at most MAX_GAIN from the last plan, and the aim moved by at most MAX_STEP.
    pairs = [(1.0 - p, 1.0 - m) for p, m in points if 1.0 - p > _EPS]
    real = sum(max(m, 0.0) for _, m in pairs)
    gain = real / sum(p for p, _ in pairs) if real > _EPS else 0.0
    wanted = (1.0 - goal) / gain if gain > _EPS else saved_p * MAX_GAIN
    wanted = min(max(wanted, saved_p / MAX_GAIN), saved_p * MAX_GAIN)
    aim = min(max(1.0 - wanted, predicted - MAX_STEP), predicted + MAX_STEP)
    return min(max(aim, 0.01), 1.0)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def confirm(
    target: float,
    plan_at: Callable[[float], LatencyPlan],
    measure: Callable[[LatencyPlan], Measurement],
    *,
    max_measurements: int = MAX_MEASUREMENTS,
    band: float = BAND,
    progress: Callable[[int, int], None] | None = None,
) -> Confirmed:
    """Plan at the target, measure, correct the aim (``next_aim``), repeat (at most
    ``max_measurements`` A/B runs). Chooses the slowest measured plan within the target (the
    least removed), else the fastest one measured, with a note saying why it falls short."""
    aim = target
    tried: list[tuple[LatencyPlan, Measurement]] = []
    seen: dict[tuple[int, ...], Measurement] = {}
    notes: list[str] = []
    for i in range(max_measurements):
        lp = plan_at(aim)
        key = lp.plan.removed_groups
        if key in seen:
            break  # the corrected aim gives a plan already measured: nothing new to learn
        m = measure(lp)
        seen[key] = m
        tried.append((lp, m))
        if progress:
            progress(i + 1, max_measurements)
        if lp.limited:
            break  # the answers' constraint stops it: aiming lower cannot go further
        if target - band <= m.ratio <= target:
            break
        if m.ratio > target and lp.predicted_ratio > lp.aim + _EPS:
            break  # the table has nothing more to remove
        aim = next_aim(target, [(a.predicted_ratio, b.ratio) for a, b in tried], band)
    if progress:
        progress(max_measurements, max_measurements)
    within = [(lp, m) for lp, m in tried if m.ratio <= target]
    met = bool(within)
    lp, m = max(within, key=lambda t: t[1].ratio) if within else min(tried, key=lambda t: t[1].ratio)
    if not met:
        if lp.limited:
            why = f"{lp.constraint} stops the plan first ({lp.constraint_value:.4g})"
        elif lp.predicted_ratio > lp.aim:
            why = f"the latency table predicts {lp.predicted_ratio:.3f}x at best"
        else:
            why = f"{len(tried)} A/B measurements did not get there"
        notes.append(
            f"latency target {target:g} not reached: measured {m.ratio:.3f}x (p10-p90 {m.ratio_p10:.3f}-{m.ratio_p90:.3f}); {why}"
        )
    originals = [ms for _, b in tried if (ms := _ms(getattr(b, "original", None))) is not None]
    if len(originals) > 1 and max(originals) > (1.0 + STATE_CHANGE) * min(originals):
        notes.append(
            f"the original measured {min(originals):.3g}-{max(originals):.3g} ms across the A/B runs: the machine's load "
            f"changed while measuring, and ratios measured under more load read closer to 1"
        )
    attempts = tuple(
        Attempt(
            a.aim,
            a.predicted_ratio,
            b.ratio,
            b.ratio_p10,
            b.ratio_p90,
            len(a.plan.removed_groups),
            _ms(getattr(b, "original", None)),
            _ms(getattr(b, "candidate", None)),
        )
        for a, b in tried
    )
    return Confirmed(target, lp, m, attempts, met, tuple(notes))
