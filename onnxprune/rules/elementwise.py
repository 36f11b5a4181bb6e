"""Element-wise ops with several inputs and numpy broadcasting (Add, Mul, Where, ...).

Position i of every input that carries channels on an axis is the same channel: their ids are
merged. A constant operand with the full channel dimension (a per-channel constant such as
[1, C, 1, 1]) is sliced along with the channels; a scalar or size-1 operand needs nothing. An
operand with the full channel dimension that is neither tracked nor constant pins the channels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, PropagateContext, Shape, numel

__all__ = ["BroadcastRule", "broadcast_rules"]


def _operand_const(values: np.ndarray, axis: int, out_rank: int, n: int) -> np.ndarray:
    """Per-position constant of a constant operand along output ``axis`` (NaN if it varies)."""
    v = np.asarray(values, dtype=np.float64)
    full = v.reshape((1,) * (out_rank - v.ndim) + v.shape)
    moved = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    if moved.shape[1] and not np.all(moved == moved[:, :1]):
        return np.full(n, np.nan)
    col = moved[:, 0] if moved.shape[1] else np.full(moved.shape[0], np.nan)
    return np.broadcast_to(col, (n,)).copy() if col.shape[0] == 1 else col


def scaled_constant(
    t: gs.Tensor, param: Callable[[gs.Tensor], object], shape: Callable[[gs.Tensor], Shape | None]
) -> bool:
    """Is ``t`` a constant times a run-time scalar (onnxruntime's per-channel dynamic
    quantization scales its weight scales [N] by the input's scale: Mul(x_scale, w_scale))?
    Such an operand is sliced like a constant (its constant operand is), its value unknown."""
    if len(t.inputs) != 1:
        return False
    producer = t.inputs[0]
    if producer.op not in ("Mul", "Div") or (producer.domain or "") not in ("", "ai.onnx") or len(producer.inputs) != 2:
        return False
    constants = 0
    for x in producer.inputs:
        if param(x) is not None:
            constants += 1
        elif numel(shape(x)) != 1:
            return False
    return constants == 1


class BroadcastRule:
    """Channel mapping shared by all multi-input element-wise ops; ``combine`` maps constants."""

    domain = ""

    def __init__(self, op_type: str) -> None:
        self.op_types = (op_type,)

    def combine(self, node: gs.Node, consts: list[np.ndarray]) -> np.ndarray:
        c = consts
        op = node.op
        with np.errstate(all="ignore"):
            if op in ("Add", "Sum"):
                return np.sum(c, axis=0)
            if op == "Sub":
                return c[0] - c[1]
            if op == "Mul":
                prod = np.prod(c, axis=0)
                # A zero channel stays zero whatever the other operand (the SE gate).
                return np.where(np.any(np.stack(c) == 0, axis=0), 0.0, prod)
            if op == "Div":
                return np.where(c[0] == 0, np.where(np.isnan(c[1]) | (c[1] == 0), np.nan, 0.0), c[0] / c[1])
            if op == "Max":
                return np.max(c, axis=0)
            if op == "Min":
                return np.min(c, axis=0)
            if op == "Mean":
                return np.mean(c, axis=0)
            if op == "Pow":
                return np.power(c[0], c[1])
            if op == "Where":
                cond, x, y = c
                return np.where(np.isnan(cond), np.where(x == y, x, np.nan), np.where(cond != 0, x, y))
        return np.full_like(c[0], np.nan)

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        y = node.outputs[0]
        inputs = [t for t in node.inputs]
        ranks = [ctx.rank(t) for t in inputs]
        if any(ctx.layout(t) is not None for t in inputs) and any(r is None for r in ranks):
            return NotApplicable("rank of an operand is unknown")
        if not any(ctx.layout(t) is not None for t in inputs):
            return None
        out_rank = max(r for r in ranks if r is not None)
        out_shape = ctx.shape(y)
        axes: dict[int, np.ndarray] = {}
        consts: dict[int, np.ndarray] = {}
        channel_axes = sorted(
            {a + out_rank - ranks[i] for i, t in enumerate(inputs) if ctx.layout(t) for a in ctx.layout(t).axes}
        )
        for a in channel_axes:
            n = max(
                len(ctx.layout(t).axes[a - out_rank + r])
                for t, r in zip(inputs, ranks)
                if ctx.layout(t) and (a - out_rank + r) in ctx.layout(t).axes
            )
            if out_shape is not None and out_shape[a] is not None and out_shape[a] != n:
                return NotApplicable(f"channel axis {a} has {n} positions but the output has {out_shape[a]}")
            merged: np.ndarray | None = None
            per_input: list[np.ndarray] = []
            for t, r in zip(inputs, ranks):
                local = a - (out_rank - r)
                lay = ctx.layout(t)
                shape = ctx.shape(t)
                dim = (
                    None
                    if local < 0
                    else (len(lay.axes[local]) if lay and local in lay.axes else (shape[local] if shape else None))
                )
                if lay is not None and local in lay.axes:
                    ids = lay.axes[local]
                    if len(ids) == 1 and n > 1:
                        ctx.pin(ids, "a single channel is broadcast across a channel axis")
                        per_input.append(np.full(n, np.nan))
                        continue
                    merged = ids if merged is None else merged
                    if ids is not merged:
                        ctx.union(merged, ids)
                    per_input.append(lay.const(local) if lay.single_axis is not None else np.full(n, np.nan))
                elif dim is None and local >= 0:
                    return NotApplicable(f"shape of operand {t.name!r} is unknown")
                elif local < 0 or dim == 1:
                    p = ctx.param(t)
                    per_input.append(_operand_const(p.values, a, out_rank, n) if p is not None else np.full(n, np.nan))
                else:
                    p = ctx.param(t)
                    if p is None and scaled_constant(t, ctx.param, ctx.shape):
                        per_input.append(np.full(n, np.nan))  # sliced in apply; value unknown
                    elif p is None:
                        ids = ctx.fresh(n)
                        ctx.pin(ids, f"operand {t.name!r} has the channel dimension but no channel ids")
                        if merged is not None:
                            ctx.union(merged, ids)
                        else:
                            merged = ids
                        per_input.append(np.full(n, np.nan))
                    else:
                        per_input.append(_operand_const(p.values, a, out_rank, n))
            assert merged is not None
            axes[a] = merged
            if len(channel_axes) == 1:
                consts[a] = self.combine(node, per_input)
        ctx.set_layout(y, Layout(out_rank, axes, consts))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        y = node.outputs[0]
        lay = ctx.analysis.layouts.get(y.name)
        if lay is None:
            return
        for i, t in enumerate(node.inputs):
            if t.name in ctx.analysis.layouts or not t.name:
                continue
            values = ctx.param_values_or_none(node, i)
            if values is not None:
                shape: Shape | None = values.shape
            elif scaled_constant(t, ctx.param, lambda x: ctx.analysis.shapes.get(x.name)):
                shape = ctx.analysis.shapes.get(t.name)
            else:
                continue
            if shape is None or any(d is None for d in shape):
                continue
            for a, ids in lay.axes.items():
                local = a - (lay.rank - len(shape))
                if local >= 0 and shape[local] == len(ids) and len(ids) > 1:
                    ctx.slice_param(node, i, local, ctx.keep(y, a, len(ids)))


def broadcast_rules() -> list[BroadcastRule]:
    ops = (
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Pow",
        "Where",
        "Equal",
        "Less",
        "LessOrEqual",
        "Greater",
        "GreaterOrEqual",
        "And",
        "Or",
        "Xor",
        "BitShift",
        "Mod",
    )
    return [BroadcastRule(op) for op in ops]
