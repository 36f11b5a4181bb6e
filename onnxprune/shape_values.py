"""Small integer tensors computed at run time from ``Shape`` and constants (torch's
``x.view(x.size(0), -1)``, ``x.chunk(2, 1)``, channel shuffle's ``C // groups``).

The evaluator computes such a tensor for the static shapes, or for hypothetical shapes of the
tensors whose Shape is read: that is how rules check that a run-time shape stays right after
channels are removed (the graph recomputes it from the pruned tensor, so nothing is rewritten).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx_graphsurgeon as gs

from .params import ParamResolver
from .shapes import Shape

__all__ = ["ShapeEvaluator", "is_shape_arithmetic"]

Overrides = Mapping[str, tuple[int, ...]]

# Nodes a shape expression is followed through, at most (exporters' are a few deep): deeper is
# "not a shape expression", so a hostile chain of thousands cannot exhaust Python's stack.
MAX_DEPTH = 64


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return np.fix(a / b).astype(np.result_type(a, b))  # ONNX integer Div truncates
    return a / b


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": _int_div,
    "Max": np.maximum,
    "Min": np.minimum,
    "Mod": np.mod,
}


class ShapeEvaluator:
    """Evaluates shape expressions; ``None`` means "not a shape expression" (or unknown)."""

    def __init__(self, shapes: Mapping[str, Shape], params: ParamResolver) -> None:
        self._shapes = shapes
        self._params = params
        self._sources: dict[int, frozenset[str] | None] = {}

    def sources(self, t: gs.Tensor, _depth: int = 0) -> frozenset[str] | None:
        """Names of the tensors whose Shape the expression reads (empty for a constant)."""
        key = id(t)
        if key in self._sources:
            return self._sources[key]
        if _depth > MAX_DEPTH:
            return None
        self._sources[key] = None  # guards against cycles
        result: frozenset[str] | None
        if self._params(t) is not None:
            result = frozenset()
        elif len(t.inputs) != 1:
            result = None
        else:
            node = t.inputs[0]
            if node.op == "Shape":
                result = frozenset([node.inputs[0].name])
            elif node.op in _OPS:
                parts = [self.sources(i, _depth + 1) for i in node.inputs if i.name]
                result = None if any(p is None for p in parts) else frozenset().union(*parts)
            else:
                result = None
        self._sources[key] = result
        return result

    def value(self, t: gs.Tensor, overrides: Overrides | None = None) -> np.ndarray | None:
        """The tensor's value with the static shapes, or with ``overrides`` for some tensors."""
        try:
            return self._eval(t, dict(overrides or {}), {}, 0)
        except (ValueError, IndexError, TypeError, ZeroDivisionError, FloatingPointError):
            return None

    def _shape_of(self, t: gs.Tensor, overrides: Overrides) -> np.ndarray | None:
        shape = overrides.get(t.name) or self._shapes.get(t.name)
        if shape is None or any(d is None for d in shape):
            return None
        return np.asarray(shape, dtype=np.int64)

    def _eval(
        self, t: gs.Tensor, overrides: Overrides, memo: dict[int, np.ndarray | None], depth: int
    ) -> np.ndarray | None:
        key = id(t)
        if key in memo:
            return memo[key]
        if depth > MAX_DEPTH:
            return None
        memo[key] = None
        p = self._params(t)
        if p is not None:
            out: np.ndarray | None = np.asarray(p.values)
        elif len(t.inputs) != 1:
            out = None
        else:
            node = t.inputs[0]
            if node.op == "Shape":
                full = self._shape_of(node.inputs[0], overrides)
                start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
                out = None if full is None else full[start : (None if end is None else int(end))]
            elif node.op in _OPS:
                args = [self._eval(i, overrides, memo, depth + 1) if i.name else None for i in node.inputs]
                out = _OPS[node.op](node, args)
            else:
                out = None
        memo[key] = out
        return out


def _axes(node: gs.Node, args: list) -> list[int] | None:
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(args) > 1 and args[1] is not None:
        return [int(a) for a in np.asarray(args[1]).reshape(-1)]
    return None


def _unsqueeze(node: gs.Node, args: list) -> np.ndarray | None:
    x, axes = args[0], _axes(node, args)
    if x is None or axes is None:
        return None
    out = np.asarray(x)
    for a in sorted(a % (out.ndim + len(axes)) for a in axes):
        out = np.expand_dims(out, a)
    return out


def _squeeze(node: gs.Node, args: list) -> np.ndarray | None:
    x, axes = args[0], _axes(node, args)
    if x is None:
        return None
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))


def _slice(node: gs.Node, args: list) -> np.ndarray | None:
    x = args[0]
    if x is None or any(a is None for a in args[1:3]):
        return None
    starts, ends = np.asarray(args[1]).reshape(-1), np.asarray(args[2]).reshape(-1)
    axes = np.asarray(args[3]).reshape(-1) if len(args) > 3 and args[3] is not None else np.arange(len(starts))
    steps = np.asarray(args[4]).reshape(-1) if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
    index = [slice(None)] * np.ndim(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return np.asarray(x)[tuple(index)]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[gs.Node, list], np.ndarray | None]:
    def op(node: gs.Node, args: list) -> np.ndarray | None:
        if len(args) != 2 or args[0] is None or args[1] is None:
            return None
        return np.asarray(fn(np.asarray(args[0]), np.asarray(args[1])))

    return op


_NP_CAST = {1: np.float32, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64}

_OPS: dict[str, Callable[[gs.Node, list], np.ndarray | None]] = {
    "Identity": lambda n, a: a[0],
    "Gather": lambda n, a: (
        None if a[0] is None or a[1] is None else np.take(a[0], a[1], axis=int(n.attrs.get("axis", 0)))
    ),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda n, a: (
        None if any(x is None for x in a) else np.concatenate([np.atleast_1d(x) for x in a], axis=int(n.attrs["axis"]))
    ),
    "Cast": lambda n, a: (
        None
        if a[0] is None or int(n.attrs["to"]) not in _NP_CAST
        else np.asarray(a[0]).astype(_NP_CAST[int(n.attrs["to"])])
    ),
    "Slice": _slice,
    "Floor": lambda n, a: None if a[0] is None else np.floor(a[0]),
    "Ceil": lambda n, a: None if a[0] is None else np.ceil(a[0]),
    "Neg": lambda n, a: None if a[0] is None else -np.asarray(a[0]),
    **{op: _binary(fn) for op, fn in _BINARY.items()},
}


def is_shape_arithmetic(node: gs.Node, evaluator: ShapeEvaluator) -> bool:
    """A node that only computes a shape value from others (it passes them on, does not use them)."""
    return node.op == "Shape" or (
        node.op in _OPS and bool(node.outputs) and evaluator.sources(node.outputs[0]) is not None
    )
