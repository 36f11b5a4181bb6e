"""Element-wise unary ops: channel ids pass through unchanged; known constants are mapped
through the function, so the zero criterion knows that Relu keeps 0 at 0 and Sigmoid does not."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from .._core import NotApplicable
from .base import ApplyContext, ConstFn, PropagateContext, data_inputs_tracked, passthrough
from .elementwise import BroadcastRule

__all__ = ["ClipRule", "PReluRule", "UnaryRule", "unary_rules"]


def _sigmoid(c: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-c))


def _softplus(c: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(c))


_erf = np.vectorize(math.erf, otypes=[float])


def _gelu(node: gs.Node) -> ConstFn:
    approx = node.attrs.get("approximate", "none")
    if approx in ("tanh", b"tanh"):
        return lambda c: 0.5 * c * (1 + np.tanh(math.sqrt(2 / math.pi) * (c + 0.044715 * c**3)))
    return lambda c: 0.5 * c * (1 + _erf(c / math.sqrt(2)))


def _attr(node: gs.Node, name: str, default: float) -> float:
    return float(node.attrs.get(name, default))


def _cast_const(node: gs.Node) -> ConstFn | None:
    """Cast keeps a constant only where the target type holds it exactly (an int32 0 from
    ConvInteger is a float 0); one it would round or saturate becomes unknown."""
    import onnx

    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs.get("to"))))  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError):
        return None
    if dtype.kind not in "fiu":
        return None

    def const(c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, dtype=np.float64)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            ok = (c == np.rint(c)) & (c >= info.min) & (c <= info.max)
        else:
            ok = np.isfinite(c) & (np.where(np.isfinite(c), c, 0).astype(dtype).astype(np.float64) == c)
        return np.where(ok, c, np.nan)

    return const


# op -> (node -> const function). Every entry is a function applied to each element alone.
_UNARY: dict[str, Callable[[gs.Node], ConstFn | None]] = {
    "Relu": lambda n: lambda c: np.maximum(c, 0.0),
    "LeakyRelu": lambda n: lambda c, a=_attr(n, "alpha", 0.01): np.where(c >= 0, c, a * c),
    "Elu": lambda n: lambda c, a=_attr(n, "alpha", 1.0): np.where(c >= 0, c, a * (np.exp(c) - 1)),
    "Selu": lambda n: (
        lambda c, a=_attr(n, "alpha", 1.67326319217681884765625), g=_attr(n, "gamma", 1.05070102214813232421875): (
            np.where(c > 0, g * c, g * a * (np.exp(c) - 1))
        )
    ),
    "Celu": lambda n: lambda c, a=_attr(n, "alpha", 1.0): np.maximum(0, c) + np.minimum(0, a * (np.exp(c / a) - 1)),
    "ThresholdedRelu": lambda n: lambda c, a=_attr(n, "alpha", 1.0): np.where(c > a, c, 0.0),
    "Sigmoid": lambda n: _sigmoid,
    "HardSigmoid": lambda n: lambda c, a=_attr(n, "alpha", 0.2), b=_attr(n, "beta", 0.5): np.clip(a * c + b, 0, 1),
    "HardSwish": lambda n: lambda c: c * np.clip(c / 6 + 0.5, 0, 1),
    "Tanh": lambda n: np.tanh,
    "Softplus": lambda n: _softplus,
    "Softsign": lambda n: lambda c: c / (1 + np.abs(c)),
    "Mish": lambda n: lambda c: c * np.tanh(_softplus(c)),
    "Gelu": _gelu,
    "Erf": lambda n: _erf,
    "Exp": lambda n: np.exp,
    "Log": lambda n: np.log,
    "Sqrt": lambda n: np.sqrt,
    "Reciprocal": lambda n: lambda c: 1.0 / c,
    "Abs": lambda n: np.abs,
    "Neg": lambda n: np.negative,
    "Sign": lambda n: np.sign,
    "Floor": lambda n: np.floor,
    "Ceil": lambda n: np.ceil,
    "Round": lambda n: np.rint,
    "Sin": lambda n: np.sin,
    "Cos": lambda n: np.cos,
    "Identity": lambda n: lambda c: c,
    "Dropout": lambda n: lambda c: c,  # inference: identity (ratio is ignored by runtimes)
    "Cast": lambda n: _cast_const(n),  # constants the target type holds exactly (0 always)
    "Not": lambda n: None,
    "IsNaN": lambda n: None,
    "IsInf": lambda n: None,
}


class UnaryRule:
    """One rule object per unary op type; ``const_fn`` comes from the table above."""

    domain = ""

    def __init__(self, op_type: str) -> None:
        self.op_types = (op_type,)
        self._make = _UNARY[op_type]

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        if node.op == "Dropout" and len(node.inputs) > 2 and node.inputs[2].name:
            t = ctx.param(node.inputs[2])
            if t is None or bool(np.asarray(t.values).reshape(-1)[0]):
                return NotApplicable("Dropout in training mode")
        return passthrough(node, ctx, self._make(node))

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


class ClipRule:
    op_types = ("Clip",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lo, hi = node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)
        bounds = []
        for i, default in ((1, lo), (2, hi)):
            if len(node.inputs) > i and node.inputs[i].name:
                p = ctx.param(node.inputs[i])
                if p is None:
                    return NotApplicable("min/max are not constants")
                bounds.append(float(np.asarray(p.values).reshape(-1)[0]))
            else:
                bounds.append(float(default))
        return passthrough(node, ctx, lambda c: np.clip(c, bounds[0], bounds[1]))

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


class PReluRule(BroadcastRule):
    """PRelu(x, slope): a per-channel slope is sliced with the channels, like any operand."""

    def __init__(self) -> None:
        super().__init__("PRelu")

    def combine(self, node: gs.Node, consts: list[np.ndarray]) -> np.ndarray:
        x, slope = consts
        return np.where(x >= 0, x, slope * x)


def unary_rules() -> list[UnaryRule]:
    return [UnaryRule(op) for op in _UNARY]
