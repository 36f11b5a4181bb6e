"""The rule protocol and the registry that maps op types to rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable

if TYPE_CHECKING:
    from ..analysis import AnalysisContext
    from ..surgery import SurgeryContext

__all__ = ["Rule", "RuleRegistry", "passthrough", "ConstFn"]

ConstFn = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class Rule(Protocol):
    """What every module in ``rules/`` provides, one object per op family.

    ``propagate`` maps channel ids from the node's inputs to its outputs (creating fresh ids for
    sources, recording sinks and constraints) or returns NotApplicable with a reason, and then the
    analysis pins every channel the node touches. ``apply`` edits the node for the channels
    removed: parameters, attributes, shape constants. Only surgery calls ``apply``.
    """

    op_types: tuple[str, ...]
    domain: str

    def propagate(self, node: gs.Node, ctx: "AnalysisContext") -> NotApplicable | None: ...

    def apply(self, node: gs.Node, ctx: "SurgeryContext") -> None: ...


class RuleRegistry:
    """Rules keyed by (domain, op type) with an opset range. An object, not a global: copy the
    default one and register rules for custom ops, then pass it to ``analyze``/``prune``."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[tuple[str, str], list[tuple[int, int, Rule]]] = {}
        for rule in rules:
            self.register(rule)

    def register(self, rule: Rule, *, min_opset: int = 1, max_opset: int = 10**6) -> "RuleRegistry":
        """Add ``rule`` for its op types (later registrations win). Returns self for chaining."""
        if not isinstance(rule, Rule):
            raise TypeError(f"{rule!r} does not implement the Rule protocol (op_types, domain, propagate, apply)")
        for op in rule.op_types:
            key = (_norm_domain(rule.domain), op)
            self._rules.setdefault(key, []).insert(0, (min_opset, max_opset, rule))
        return self

    def lookup(self, op_type: str, domain: str = "", opset: int = 21) -> Rule | None:
        for lo, hi, rule in self._rules.get((_norm_domain(domain), op_type), []):
            if lo <= opset <= hi:
                return rule
        return None

    def op_types(self) -> list[str]:
        return sorted({op for (_, op) in self._rules})

    def copy(self) -> "RuleRegistry":
        new = RuleRegistry()
        new._rules = {k: list(v) for k, v in self._rules.items()}
        return new


def _norm_domain(domain: str | None) -> str:
    return "" if domain in (None, "", "ai.onnx") else domain


def data_inputs_tracked(node: gs.Node, ctx: "AnalysisContext", data_indices: Iterable[int]) -> NotApplicable | None:
    """Refuse when a tracked tensor arrives on an input that is not a data input (e.g. Clip's min)."""
    data = set(data_indices)
    for i, t in enumerate(node.inputs):
        if i not in data and t.name and ctx.layout(t) is not None:
            return NotApplicable(f"input {i} ({t.name}) carries channels but is not a data input")
    return None


def passthrough(
    node: gs.Node,
    ctx: "AnalysisContext",
    const_fn: ConstFn | None = None,
    *,
    spatial_from: int | None = None,
) -> NotApplicable | None:
    """Output 0 carries input 0's channel ids unchanged.

    ``const_fn`` maps known per-channel constants (None: output constants unknown).
    ``spatial_from``: the op works on axes >= this one, so channel ids there are not allowed.
    """
    bad = data_inputs_tracked(node, ctx, [0])
    if bad:
        return bad
    layout = ctx.layout(node.inputs[0])
    if layout is None:
        return None
    if spatial_from is not None and any(a >= spatial_from for a in layout.axes):
        return NotApplicable(f"channels on an axis the op computes over (axes >= {spatial_from})")
    out_rank = ctx.rank(node.outputs[0])
    if out_rank is not None and out_rank != layout.rank:
        return NotApplicable(f"output rank {out_rank} differs from input rank {layout.rank}")
    consts = {}
    if const_fn is not None:
        with np.errstate(all="ignore"):
            consts = {a: _guard_nan(const_fn, layout.const(a)) for a in layout.axes}
    ctx.set_layout(node.outputs[0], Layout(layout.rank, layout.axes, consts))
    return None


def _guard_nan(fn: ConstFn, c: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to known constants only: an unknown (NaN) input stays unknown."""
    out = np.asarray(fn(c), dtype=np.float64)
    return np.where(np.isnan(c), np.nan, out)
