"""Why is this layer not pruned? Per weight-bearing layer: its output channels, how many each
criterion family may remove, and the reasons for the rest, counted in channels.

Two families: ``zero`` (exact: provably constant channels, what `prune` does without a budget)
and ``lossy`` (any scoring criterion with a budget: every channel group that is not pinned,
within the structural constraints, removed all at once). Pure: it reads a ChannelAnalysis.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .analysis import ChannelAnalysis
from .criteria import zero_plan
from .planning import enforce_constraints

__all__ = ["LayerExplanation", "explain_layers", "short_reason"]


def short_reason(reason: str) -> str:
    """A reason without its per-group details (scores), so equal causes count together."""
    return re.sub(r" \(score [^)]*\)", "", reason)


@dataclass(frozen=True)
class LayerExplanation:
    """One weight-bearing layer: ``removable`` channels per criterion family, and per family the
    channels that stay, counted by the first reason of their group."""

    node: str
    op: str
    channels: int
    removable: Mapping[str, int]
    kept: Mapping[str, tuple[tuple[str, int], ...]]

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "op": self.op,
            "channels": self.channels,
            "removable": dict(self.removable),
            "kept": {family: dict(reasons) for family, reasons in self.kept.items()},
        }


def _lossy_reasons(analysis: ChannelAnalysis) -> tuple[set[int], dict[int, list[str]]]:
    """The largest set of groups a lossy criterion could remove, and why the others stay."""
    reasons: dict[int, list[str]] = {g.id: list(g.pinned_by) for g in analysis.groups if g.pinned}
    removable = enforce_constraints(analysis, {g.id for g in analysis.groups if not g.pinned}, reasons)
    return removable, reasons


def explain_layers(analysis: ChannelAnalysis, nodes: Sequence[str] | None = None) -> tuple[LayerExplanation, ...]:
    """The per-layer view of ``analysis`` (every source layer, or those named in ``nodes``)."""
    zero = zero_plan(analysis)
    families = {
        "zero": (set(zero.removed_groups), {g: list(r) for g, r in zero.kept_reasons.items()}),
        "lossy": _lossy_reasons(analysis),
    }
    wanted = None if nodes is None else set(nodes)
    out = []
    for src in analysis.sources:
        if wanted is not None and src.node not in wanted:
            continue
        roots = [int(r) for r in analysis.roots(src.ids)]
        removable, kept = {}, {}
        for family, (removed, reasons) in families.items():
            removable[family] = sum(1 for r in roots if r in removed)
            counts: Counter = Counter(
                short_reason(reasons[r][0]) if reasons.get(r) else "(no reason recorded)"
                for r in roots
                if r not in removed
            )
            kept[family] = tuple(counts.most_common())
        out.append(LayerExplanation(src.node, src.op, len(roots), removable, kept))
    return tuple(out)
