"""From channel scores and a budget to a PruningPlan, dependency-aware.

Scores are normalised per layer (divided by the layer's mean score, so every layer's scores
average 1: layers with large weights do not dominate a group shared with small-weight layers,
and one outlier filter does not squash the rest as max-normalisation would). A group's score
is the sum of its members' normalised scores: channels tied by Add/Mul/Concat are ranked by
what all their layers say together, and removed together.

Per-layer ratios follow NNI's dependency-aware rule, generalised: groups are removed lowest
score first as long as no layer they touch exceeds its own target, so a cluster of tied layers
loses its minimum sparsity together, and each layer its extra only from channels it alone owns.
"""

from __future__ import annotations

import copy
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from .analysis import ChannelAnalysis
from .config import PruneConfig
from .layer_names import rule_matches
from .node_names import nodes_by_name
from .planning import PruningPlan, blocked_balances, enforce_constraints, whole_group_units
from .rules import RuleRegistry
from .validation import model_opset

__all__ = [
    "LayerBudget",
    "MacsTracker",
    "finish_plan",
    "group_scores",
    "layer_budgets",
    "pinned_reasons",
    "plan_with_budget",
]


@dataclass(frozen=True)
class LayerBudget:
    node: str
    op: str
    channels: int
    sparsity: float
    excluded_by: str | None  # the pattern or config entry that protects it


def layer_budgets(analysis: ChannelAnalysis, config: PruneConfig) -> dict[str, LayerBudget]:
    """Target sparsity of every source layer: --ratio, then config entries in order, --exclude."""
    out = {}
    for src in analysis.sources:
        sparsity = config.ratio or 0.0
        excluded = None
        for i, rule in enumerate(config.layer_rules):
            if rule_matches(rule, src.node, src.op):
                if rule.exclude:
                    excluded, sparsity = f"config entry {i} excludes it", 0.0
                else:
                    excluded, sparsity = None, float(rule.sparsity or 0.0)
        for pattern in config.exclude:
            if re.search(pattern, src.node):
                excluded, sparsity = f"--exclude {pattern!r}", 0.0
        out[src.node] = LayerBudget(src.node, src.op, len(src.ids), sparsity, excluded)
    return out


def _group_members(analysis: ChannelAnalysis) -> dict[int, dict[str, int]]:
    """group -> {source layer: number of its channels in the group}"""
    members: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for src in analysis.sources:
        for r in analysis.roots(src.ids):
            members[int(r)][src.node] += 1
    return members


def group_scores(analysis: ChannelAnalysis, layer_scores: Mapping[str, np.ndarray]) -> dict[int, float]:
    """Sum over a group's members of the per-layer mean-normalised scores (NaN if any is NaN)."""
    scores: dict[int, float] = defaultdict(float)
    for src in analysis.sources:
        s = layer_scores.get(src.node)
        if s is None:
            s = np.full(len(src.ids), np.nan)
        s = np.asarray(s, dtype=np.float64)
        mean = np.nanmean(np.abs(s)) if np.any(~np.isnan(s)) else np.nan
        norm = s / mean if mean and np.isfinite(mean) else np.zeros_like(s) if mean == 0 else s
        for r, v in zip(analysis.roots(src.ids), norm):
            scores[int(r)] += float(v)
    return dict(scores)


def plan_with_budget(
    analysis: ChannelAnalysis,
    layer_scores: Mapping[str, np.ndarray],
    config: PruneConfig,
    macs: MacsTracker | None = None,
) -> PruningPlan:
    """Choose the groups to remove (see the module docstring)."""
    budgets = layer_budgets(analysis, config)
    members = _group_members(analysis)
    scores = group_scores(analysis, layer_scores)
    reasons = pinned_reasons(analysis)
    candidates = []
    for g in analysis.groups:
        if g.pinned:
            continue
        layers = members[g.id]
        protected = [budgets[n].excluded_by for n in layers if budgets[n].excluded_by]
        if protected:
            reasons.setdefault(g.id, []).append(f"protected: {protected[0]}")
            continue
        if not np.isfinite(scores.get(g.id, np.nan)):
            reasons.setdefault(g.id, []).append(f"criterion {config.criterion!r} gives no score here")
            continue
        candidates.append(g.id)
    candidates.sort(key=lambda gid: (scores[gid], gid))

    # Grouped convolutions lose the same number of channels in every group. Where the cut the
    # budget asks for cannot be balanced (enforce_constraints puts all of it back: one output
    # per group, a row that got none...), the conv's channels are ranked again as whole groups:
    # a group's input and output channels together, removed together.
    base_reasons = {g: list(r) for g, r in reasons.items()}
    fresh = copy.deepcopy(macs)  # pass 1 moves the tracker; a second pass starts from the original
    items: list[tuple[int, ...]] = [(gid,) for gid in candidates]
    removed, notes = _choose(analysis, config, items, members, budgets, scores, reasons, macs)
    blocked = blocked_balances(analysis, removed)
    candidate_set = set(candidates)
    units = whole_group_units(analysis, blocked, candidate_set) if blocked else []
    if units:
        tied = {int(r) for bal in blocked for row in bal.rows for r in analysis.roots(row)}
        reasons = base_reasons
        in_units = {g for unit in units for g in unit}
        for bal in blocked:  # channels that can go neither evenly nor with a whole group
            for r in {int(r) for row in bal.rows for r in analysis.roots(row)} - in_units:
                if r in candidate_set:
                    reasons.setdefault(r, []).append(f"{bal.node}: {bal.reason}")
        items = [(gid,) for gid in candidates if gid not in tied] + units
        items.sort(key=lambda item: (_item_score(item, scores), item))
        removed, notes = _choose(analysis, config, items, members, budgets, scores, reasons, fresh)
    the_plan = finish_plan(
        analysis,
        config,
        removed,
        scores,
        reasons,
        lambda gid: f"ranked above the cut by {config.criterion} (score {scores[gid]:.3g})",
    )
    return replace(the_plan, notes=the_plan.notes + tuple(notes)) if notes else the_plan


def _item_score(item: tuple[int, ...], scores: Mapping[int, float]) -> float:
    """A channel group's score, or a whole conv group's: the mean of its channel groups'."""
    return float(np.mean([scores[g] for g in item]))


def _item_layers(item: tuple[int, ...], members: Mapping[int, Mapping[str, int]]) -> dict[str, int]:
    """Channels an item removes from each source layer."""
    out: dict[str, int] = defaultdict(int)
    for gid in item:
        for n, k in members[gid].items():
            out[n] += k
    return out


def _choose(
    analysis: ChannelAnalysis,
    config: PruneConfig,
    items: Sequence[tuple[int, ...]],
    members: Mapping[int, Mapping[str, int]],
    budgets: Mapping[str, LayerBudget],
    scores: Mapping[int, float],
    reasons: dict[int, list[str]],
    macs: MacsTracker | None,
) -> tuple[list[int], list[str]]:
    """The groups the budget removes, taking ``items`` (a channel group, or the channel groups
    of one whole conv group) lowest score first."""
    removed_count: dict[str, int] = defaultdict(int)
    removed: list[int] = []
    taken: set[int] = set()
    if config.macs_target is not None and macs is not None:
        return _macs_target_cut(analysis, config, items, members, budgets, scores, reasons, macs)
    if config.global_ranking or config.macs_target is not None:
        cap = {n: b.channels - 1 for n, b in budgets.items()}  # at least one channel per layer
        total = sum(b.channels for b in budgets.values())
        goal_channels = (config.ratio or 0.0) * total if config.macs_target is None else np.inf
        cut = 0
        for item in items:
            if cut >= goal_channels:
                break
            item = tuple(g for g in item if g not in taken)  # whole groups may share channels
            if not item:
                continue
            layers = _item_layers(item, members)
            if any(removed_count[n] + k > cap[n] for n, k in layers.items()):
                for gid in item:
                    reasons.setdefault(gid, []).append("would remove the last channel of a layer")
                continue
            removed.extend(item)
            taken.update(item)
            for n, k in layers.items():
                removed_count[n] += k
            cut += sum(layers.values())
        return removed, []
    target = {n: min(int(b.sparsity * b.channels), b.channels - 1) for n, b in budgets.items()}
    if config.round_to > 1:
        n_ = config.round_to
        for n, b in budgets.items():
            kept = b.channels - target[n]
            kept = min(b.channels, -(-kept // n_) * n_)
            target[n] = b.channels - kept
    for item in items:
        item = tuple(g for g in item if g not in taken)
        if not item:
            continue
        layers = _item_layers(item, members)
        if all(removed_count[n] + k <= target[n] for n, k in layers.items()):
            removed.extend(item)
            taken.update(item)
            for n, k in layers.items():
                removed_count[n] += k
    return removed, []


def _macs_target_cut(
    analysis: ChannelAnalysis,
    config: PruneConfig,
    items: Sequence[tuple[int, ...]],
    members: Mapping[int, Mapping[str, int]],
    budgets: Mapping[str, LayerBudget],
    scores: Mapping[int, float],
    reasons: dict[int, list[str]],
    macs: MacsTracker,
) -> tuple[list[int], list[str]]:
    """The shortest prefix of the removal order whose *final* plan (kept counts rounded to
    ``config.round_to``, grouped convolutions balanced: both put groups back) has MACs <= the
    target; and a note saying exactly why when no prefix reaches it."""
    goal = config.macs_target * macs.original  # type: ignore[operator]
    cap = {n: b.channels - 1 for n, b in budgets.items()}  # at least one channel per layer
    count: dict[str, int] = defaultdict(int)
    order: list[tuple[int, ...]] = []
    skipped: list[tuple[tuple[int, ...], int]] = []  # (item, position in the order when it was skipped)
    taken: set[int] = set()
    for item in items:  # every item that can go, lowest score first
        item = tuple(g for g in item if g not in taken)  # whole groups may share channels
        if not item:
            continue
        layers = _item_layers(item, members)
        if any(count[n] + k > cap[n] for n, k in layers.items()):
            skipped.append((item, len(order)))
            continue
        order.append(item)
        taken.update(item)
        for n, k in layers.items():
            count[n] += k

    def chosen_of(k: int) -> set[int]:
        return {g for item in order[:k] for g in item}

    def final_macs(k: int) -> float:
        chosen = chosen_of(k)
        if config.round_to > 1:
            chosen = _round_kept(analysis, members, budgets, chosen, scores, config.round_to, {})
        return macs.evaluate(enforce_constraints(analysis, chosen, {}))

    k = 0  # the shortest prefix that reaches the goal before rounding
    while k < len(order) and macs.current > goal:
        for gid in order[k]:
            macs.remove(gid)
        k += 1
    notes: list[str] = []
    if final_macs(k) > goal and k < len(order):
        # Rounding (or balance) put groups back: go further down the order until the final plan
        # reaches the goal (galloping, then bisection between the last miss and the first hit).
        low, step, high = k, 1, None
        while high is None:
            probe = min(low + step, len(order))
            if final_macs(probe) <= goal:
                high = probe
            elif probe == len(order):
                break
            else:
                low, step = probe, step * 2
        if high is not None:
            while high - low > 1:
                mid = (low + high) // 2
                if final_macs(mid) <= goal:
                    high = mid
                else:
                    low = mid
            k = high
        else:
            k = len(order)
    reached = final_macs(k)
    if reached > goal:
        ratio = reached / macs.original if macs.original else 1.0
        why = []
        if config.round_to > 1:
            why.append(
                f"with --round-to {config.round_to} every layer keeps a multiple of {config.round_to} channels (at least {config.round_to})"
            )
        why.append("every layer keeps at least one channel")
        if any(g.pinned for g in analysis.groups) or any(b.excluded_by for b in budgets.values()):
            why.append("pinned and protected channels stay (see the kept reasons)")
        notes.append(
            f"MACs target {config.macs_target:g} not reached: removing every group that may go leaves {ratio:.3f}x of the MACs, "
            f"because {'; '.join(why)}"
        )
    for item, position in skipped:
        if position < k:
            for gid in item:
                reasons.setdefault(gid, []).append("would remove the last channel of a layer")
    return sorted(chosen_of(k)), notes


def pinned_reasons(analysis: ChannelAnalysis) -> dict[int, list[str]]:
    """Why each pinned group stays: the start of every plan's kept reasons."""
    return {g.id: list(g.pinned_by) for g in analysis.groups if g.pinned}


def finish_plan(
    analysis: ChannelAnalysis,
    config: PruneConfig,
    removed: Iterable[int],
    scores: Mapping[int, float],
    reasons: dict[int, list[str]],
    kept_reason: Callable[[int], str],
) -> PruningPlan:
    """The plan that removes ``removed`` (however they were chosen): kept counts made multiples
    of ``config.round_to`` by putting back the best-scored groups, the structural constraints
    enforced, and every kept group given a reason (``kept_reason(group)`` where ``reasons``
    has none)."""
    removed_set = set(removed)
    if config.round_to > 1:
        removed_set = _round_kept(
            analysis,
            _group_members(analysis),
            layer_budgets(analysis, config),
            removed_set,
            scores,
            config.round_to,
            reasons,
        )
    final = enforce_constraints(analysis, removed_set, reasons)
    kept = {g.id: tuple(reasons.get(g.id) or (kept_reason(g.id),)) for g in analysis.groups if g.id not in final}
    return PruningPlan(
        criterion=config.criterion,
        removed_groups=tuple(sorted(final)),
        kept_reasons=kept,
        scores={gid: scores[gid] for gid in final if gid in scores},
        members={gid: analysis.group(gid).members for gid in final},
    )


def _round_kept(
    analysis: ChannelAnalysis,
    members: Mapping[int, Mapping[str, int]],
    budgets: Mapping[str, LayerBudget],
    removed: set[int],
    scores: Mapping[int, float],
    multiple: int,
    reasons: dict[int, list[str]],
) -> set[int]:
    """Put back the best-scored removed groups of layers whose kept count is not a multiple."""
    removed = set(removed)
    for _ in range(4):  # putting back for one layer can unround another that shares the group
        changed = False
        kept = {n: b.channels for n, b in budgets.items()}
        by_layer: dict[str, list[int]] = defaultdict(list)
        for gid in removed:
            for n, k in members[gid].items():
                kept[n] -= k
                by_layer[n].append(gid)
        for n, count in kept.items():
            if count % multiple == 0 or count == budgets[n].channels:
                continue
            for gid in sorted(by_layer[n], key=lambda g: -scores.get(g, 0.0)):
                if kept[n] % multiple == 0:
                    break
                if gid in removed:
                    removed.discard(gid)
                    reasons.setdefault(gid, []).append(f"kept so that {n} keeps a multiple of {multiple} channels")
                    for m, k in members[gid].items():
                        kept[m] += k
                    changed = True
        if not changed:
            break
    return removed


class MacsTracker:
    """Exact MACs of the model as groups are removed one by one: a layer (Conv, Gemm, MatMul...)
    keeps MACs x (kept outputs / outputs) x (kept inputs / inputs); a depthwise or grouped one
    scales with its outputs only (its inputs are the same channels)."""

    def __init__(
        self,
        analysis: ChannelAnalysis,
        node_macs: Mapping[str, int | None],
        model: onnx.ModelProto,
        registry: RuleRegistry,
    ) -> None:
        """``node_macs``: metrics.node_macs of ``model`` (by node name); the registry says
        what each layer is."""
        nodes = nodes_by_name(model.graph.node)
        opset = model_opset(model)
        self.macs0: dict[str, float] = {}
        self.total: dict[str, list[int]] = {}
        self.kept: dict[str, list[int]] = {}
        self.effects: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        for layer, macs in node_macs.items():
            if not macs:
                continue
            node = nodes[layer]
            semantics = registry.layer(node, opset)
            if semantics is None:
                continue
            sides = [analysis.layouts.get(node.output[0])]
            sides.append(None if semantics.groups != 1 else analysis.layouts.get(node.input[semantics.data_index]))
            counts = [[0, 0], [0, 0]]
            per_group: dict[int, list[int]] = defaultdict(lambda: [0, 0])
            for side, lay in enumerate(sides):
                if lay is None or len(lay.axes) != 1:
                    continue
                (ids,) = lay.axes.values()
                counts[side] = [len(ids), len(ids)]
                for r in analysis.roots(ids):
                    per_group[int(r)][side] += 1
            self.macs0[layer] = float(macs)
            self.total[layer] = [counts[0][0] or 1, counts[1][0] or 1]
            self.kept[layer] = [counts[0][1] or 1, counts[1][1] or 1]
            for gid, (d_out, d_in) in per_group.items():
                self.effects[gid].append((layer, d_out, d_in))
        self.current = float(sum(self.macs0.values()))

    def _node(self, layer: str) -> float:
        t, k = self.total[layer], self.kept[layer]
        return self.macs0[layer] * (k[0] / t[0]) * (k[1] / t[1])

    @property
    def original(self) -> float:
        return float(sum(self.macs0.values()))

    def evaluate(self, groups: Sequence[int] | set[int]) -> float:
        """MACs with these groups removed (from the original, without changing the tracker)."""
        kept = {i: list(v) for i, v in self.total.items()}
        for gid in groups:
            for layer, d_out, d_in in self.effects.get(gid, ()):
                kept[layer][0] -= d_out
                kept[layer][1] -= d_in
        return float(
            sum(self.macs0[i] * (k[0] / self.total[i][0]) * (k[1] / self.total[i][1]) for i, k in kept.items())
        )

    def remove(self, gid: int) -> float:
        """Remove a group; return the model's MACs after it."""
        for layer, d_out, d_in in self.effects.get(gid, ()):
            before = self._node(layer)
            self.kept[layer][0] -= d_out
            self.kept[layer][1] -= d_in
            self.current += self._node(layer) - before
        return self.current
