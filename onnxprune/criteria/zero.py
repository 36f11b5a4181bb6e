"""The zero criterion: remove every channel group whose value is a known constant wherever it
is read, folding nonzero constants into the readers' biases where that is exact."""

from __future__ import annotations

import numpy as np

from ..analysis import ChannelAnalysis
from ..planning import PruningPlan, enforce_constraints

__all__ = ["zero_plan"]


def zero_plan(analysis: ChannelAnalysis) -> PruningPlan:
    """Plan the exact removal of constant channels (see the module docstring)."""
    reasons: dict[int, list[str]] = {g.id: list(g.pinned_by) for g in analysis.groups if g.pinned}
    blocked: set[int] = set(reasons)
    for sink in analysis.sinks:
        lay = analysis.layouts[sink.tensor]
        ids = lay.axes[sink.axis]
        consts = lay.const(sink.axis) if lay.single_axis is not None else np.full(len(ids), np.nan)
        roots = analysis.root_of[ids]
        unknown = np.isnan(consts)
        for r in np.unique(roots[unknown]):
            r = int(r)
            if r not in blocked:
                blocked.add(r)
                reasons.setdefault(r, []).append(f"not constant where {sink.node} reads it")
        if sink.fold_blocker is not None:
            nonzero = ~unknown & (consts != 0)
            for r in np.unique(roots[nonzero]):
                r = int(r)
                if r not in blocked:
                    blocked.add(r)
                    reasons.setdefault(r, []).append(
                        f"constant but nonzero where {sink.node} reads it, and {sink.fold_blocker}"
                    )
    candidates = {g.id for g in analysis.groups} - blocked
    removed = enforce_constraints(analysis, candidates, reasons)
    kept = {g.id: tuple(reasons.get(g.id, ())) for g in analysis.groups if g.id not in removed}
    members = {gid: analysis.group(gid).members for gid in removed}
    return PruningPlan(criterion="zero", removed_groups=tuple(sorted(removed)), kept_reasons=kept, members=members)
