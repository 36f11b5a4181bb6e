"""Which layers the options name: a --config entry selects a layer by its op type and node name
(``rule_matches``, also what budget.layer_budgets applies), and an --exclude pattern or entry
that selects no layer of the model is refused (``check_layers_named``: a typo protected
nothing). Run after the analysis, before any work (stages.analyse, api.plan)."""

from __future__ import annotations

import difflib
import re

from .analysis import ChannelAnalysis
from .config import LayerRule, PruneConfig
from .errors import UsageError

__all__ = ["check_layers_named", "rule_matches"]


def rule_matches(rule: LayerRule, node: str, op: str) -> bool:
    """Whether a config entry selects the layer ``node`` of type ``op`` (its op types, then its
    name patterns; an entry naming neither selects every layer)."""
    if rule.op_types and op not in rule.op_types:
        return False
    return not rule.op_names or any(re.search(p, node) for p in rule.op_names)


def check_layers_named(analysis: ChannelAnalysis, config: PruneConfig, source: str) -> None:
    """UsageError when an --exclude pattern or a --config entry matches no layer of the model: a
    typo ('--exclude Conv_node_44') protected nothing, exit 0, and the user thought the layer safe.
    The message names the pattern and the closest layer names."""
    layers = [(s.node, s.op) for s in analysis.sources]
    names = [n for n, _ in layers]
    if not names:
        where = "the model has no layer onnxprune prunes (Conv, ConvTranspose, Gemm, MatMul)"
    else:
        ops = sorted({op for _, op in layers})
        where = f"its layers are {len(names)} {'/'.join(ops)} nodes"

    def closest(text: str) -> str:
        near = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
        return f"; closest: {', '.join(map(repr, near))}" if near else ""

    for pattern in config.exclude:
        if not any(re.search(pattern, n) for n in names):
            raise UsageError(
                f"{source}: --exclude {pattern!r} matches no layer's node name, so it protects nothing "
                f"({where}{closest(pattern)})"
            )
    for i, rule in enumerate(config.layer_rules):
        if not any(rule_matches(rule, n, op) for n, op in layers):
            said = ", ".join(
                f"{key} {list(value)}"
                for key, value in (("op_types", rule.op_types), ("op_names", rule.op_names))
                if value
            )
            does = "protects" if rule.exclude else "sets the sparsity of"
            raise UsageError(
                f"{rule.named(i)} ({said or 'every layer'}) matches no layer of {source}, so it {does} nothing "
                f"({where}{closest(rule.op_names[0]) if rule.op_names else ''})"
            )
