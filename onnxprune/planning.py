"""PruningPlan: which channel groups go, as data (JSON round trip), and the constraints every
plan must satisfy (grouped Conv balance, at least one channel per tensor)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

import numpy as np

from .analysis import ChannelAnalysis

__all__ = ["PruningPlan", "enforce_constraints"]

PLAN_FORMAT = "onnxprune-plan/1"


@dataclass(frozen=True)
class PruningPlan:
    """The groups to remove and, for every group that stays, why."""

    criterion: str
    removed_groups: tuple[int, ...]
    kept_reasons: Mapping[int, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "removed_groups", tuple(sorted(int(g) for g in self.removed_groups)))
        object.__setattr__(self, "kept_reasons", MappingProxyType({int(k): tuple(v) for k, v in self.kept_reasons.items()}))

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "criterion": self.criterion,
            "removed_groups": list(self.removed_groups),
            "kept_reasons": {str(k): list(v) for k, v in sorted(self.kept_reasons.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping) -> "PruningPlan":
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"not an onnxprune plan (format {data.get('format')!r})")
        return cls(
            criterion=str(data["criterion"]),
            removed_groups=tuple(int(g) for g in data["removed_groups"]),
            kept_reasons={int(k): tuple(v) for k, v in data.get("kept_reasons", {}).items()},
        )


def enforce_constraints(
    analysis: ChannelAnalysis, removable: Iterable[int], reasons: dict[int, list[str]]
) -> set[int]:
    """Shrink a set of removable groups until every structural constraint holds.

    Grouped Convs must lose the same number of channels in every group, and no tensor may lose
    all its channels. Groups put back get a reason in ``reasons``. Iterates to a fixed point:
    putting a group back can unbalance another constraint, never the other way round.
    """
    removed = set(int(g) for g in removable)
    root_of = analysis.root_of
    changed = True
    while changed:
        changed = False
        for bal in analysis.balances:
            roots = [root_of[row] for row in bal.rows]
            counts = [sum(1 for r in row if int(r) in removed) for row in roots]
            target = min(counts)
            for row, count in zip(roots, counts):
                extra = count - target
                for r in row[::-1]:
                    if extra <= 0:
                        break
                    r = int(r)
                    if r in removed:
                        # Putting a group back frees every position it holds in this row.
                        removed.discard(r)
                        reasons.setdefault(r, []).append(f"{bal.node}: {bal.reason}")
                        extra -= int(np.count_nonzero(row == r))
                        changed = True
        if not removed:
            break
        removed_arr = np.fromiter(removed, dtype=np.int64)
        for name, lay in analysis.layouts.items():
            for ids in lay.axes.values():
                roots = root_of[ids]
                if np.isin(roots, removed_arr).all():
                    r = int(roots[0])
                    removed.discard(r)
                    reasons.setdefault(r, []).append(f"last channel of tensor {name!r}: at least one must stay")
                    changed = True
                    removed_arr = np.fromiter(removed, dtype=np.int64) if removed else np.zeros(0, np.int64)
    return removed
