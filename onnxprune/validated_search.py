"""The search judged by your validation function (``--validate``): the longest run of an
ordered list of channel groups whose plan the function keeps.

The order comes from the sensitivity analysis, measured on the calibration samples; your
function judges other data (a labelled test set), where one group early in the order can cost
more than many after it together. A bisection over prefixes alone stops at the first such
group: on the digits CNN without ``--reconstruct`` one channel (the 3rd group of the order)
alone costs three of the 540 test images, and the search stopped at 2 groups, 3.5% of the MACs,
at an accuracy above the original's. So after the bisection the group it stopped at is put back
(kept), with the rest of its unit (a unit's groups come lowest score first: the next ones are
worth more), and the search goes on with the other units' groups from the plan already kept,
by an exponential (galloping) search: one call when the next group is refused too, about
2 log2(k) calls to take k more. It stops after ``patience`` refusals in a row, or when the
order is used up.

Every plan it keeps was judged by the function: nothing is assumed monotone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PATIENCE", "SearchOutcome", "search_order"]

# Refusals in a row (the bisection's own counts) before the search stops: each costs one
# call, the galloping search's first step.
PATIENCE = 2

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SearchOutcome:
    """The plan kept (the last one the judge kept; empty when it kept none), the groups the
    judge refused (each put back with the rest of its unit), and how many plans it judged."""

    groups: frozenset[int]
    refused: tuple[int, ...]
    judged: int


def search_order(
    order: Sequence[int],
    plan_of: Callable[[Sequence[int]], set[int]],
    judge: Callable[[set[int]], bool],
    *,
    unit_of: Mapping[int, int] | None = None,
    patience: int = PATIENCE,
    progress: Progress | None = None,
) -> SearchOutcome:
    """The plan of the longest sub-list of ``order`` the ``judge`` keeps, searched as the
    module says. ``plan_of`` makes a plan (the groups removed, constraints enforced) from a
    list of groups; ``unit_of`` maps a group to its unit (without it, only the refused group
    is put back); ``progress`` gets (plans judged, an estimate of the total)."""
    judged = 0
    total = max(1, math.ceil(math.log2(len(order) + 1)))  # the bisection's steps, at most
    shown = (0, 0)

    def keeps(groups: Sequence[int]) -> tuple[bool, set[int]]:
        nonlocal judged, total, shown
        plan = plan_of(groups)
        judged += 1
        total = max(total, judged)
        if progress:
            shown = (judged, total)
            progress(*shown)
        return judge(plan), plan

    def without_unit(refused_group: int, groups: Sequence[int]) -> list[int]:
        unit = None if unit_of is None else unit_of.get(refused_group)
        return [g for g in groups if unit is None or unit_of.get(g) != unit]  # type: ignore[union-attr]

    best: set[int] = set()
    lo, hi = 0, len(order)
    while lo < hi:  # the longest prefix the judge keeps
        mid = (lo + hi + 1) // 2
        kept, plan = keeps(order[:mid])
        if kept:
            lo, best = mid, plan
        else:
            hi = mid - 1
    chosen, refused, rest = list(order[:lo]), [], []
    if lo < len(order):  # order[:lo + 1] was refused: order[lo] is put back
        refused.append(order[lo])
        rest = without_unit(order[lo], order[lo + 1 :])
    misses = len(refused)
    while rest and misses < patience:
        total = judged + patience - misses  # at least one call per refusal still allowed
        good, bad, step = 0, len(rest) + 1, 1  # rest[:good] kept, rest[:bad] refused
        while good < len(rest):  # galloping: 1, 2, 4, ... groups more until refused
            k = min(step, len(rest))
            kept, plan = keeps(chosen + rest[:k])
            if not kept:
                bad = k
                break
            good, best, step = k, plan, step * 2
        while bad - good > 1:  # then a bisection between the two
            mid = (good + bad) // 2
            kept, plan = keeps(chosen + rest[:mid])
            if kept:
                good, best = mid, plan
            else:
                bad = mid
        chosen += rest[:good]
        misses = 0 if good else misses + 1
        if good < len(rest):
            refused.append(rest[good])
            rest = without_unit(rest[good], rest[good + 1 :])
        else:
            rest = []
    if progress and shown != (total, total):
        progress(total, total)  # the bar closes when the search ends early
    return SearchOutcome(frozenset(best), tuple(refused), judged)
