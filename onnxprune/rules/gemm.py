"""Gemm and MatMul with a constant weight: the output features are channels (a source), and the
input features are read through the weight's K axis (a sink)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .conv import _bias_blocker

if TYPE_CHECKING:
    from ..analysis import AnalysisContext
    from ..surgery import SurgeryContext

__all__ = ["GemmRule", "MatMulRule"]


def _bias_per_feature(c: np.ndarray | None, n: int) -> np.ndarray | None:
    """C as one value per output feature, or None when it varies along other axes too."""
    if c is None:
        return np.zeros(n)
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]))
    if c.ndim >= 1 and c.shape[-1] == n and c.size == n:
        return c.reshape(-1).astype(np.float64)
    return None


class GemmRule:
    op_types = ("Gemm",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: "AnalysisContext") -> NotApplicable | None:
        a, y = node.inputs[0], node.outputs[0]
        b = ctx.param(node.inputs[1])
        if b is None:
            return NotApplicable("B is not a constant")
        has_c = len(node.inputs) > 2 and bool(node.inputs[2].name)
        c = ctx.param(node.inputs[2]) if has_c else None
        if has_c and c is None:
            return NotApplicable("C is not a constant")
        if int(node.attrs.get("transA", 0)):
            if ctx.layout(a) is not None:
                return NotApplicable("transA=1 with channels on A")
        bm = b.values.T if int(node.attrs.get("transB", 0)) else b.values  # [K, N]
        n = bm.shape[1]
        lay = ctx.layout(a)
        if lay is not None:
            if set(lay.axes) != {1}:
                return NotApplicable("features of A are not on its last axis")
            ctx.add_sink(node, 0, 1, _bias_blocker(node, ctx, 2))
        out = ctx.add_source(node, n)
        beta = float(node.attrs.get("beta", 1.0))  # a zero column gives beta * C, whatever alpha
        per = _bias_per_feature(None if c is None else c.values, n)
        zero = ~np.any(bm != 0, axis=0)
        consts = np.where(zero, beta * per, np.nan) if per is not None else np.full(n, np.nan)
        ctx.set_layout(y, Layout(2, {1: out}, {1: consts}))
        return None

    def apply(self, node: gs.Node, ctx: "SurgeryContext") -> None:
        trans_b = int(node.attrs.get("transB", 0))
        b = ctx.param_values(node, 1)
        bm = b.T if trans_b else b
        k, n = bm.shape
        in_keep = ctx.keep(node.inputs[0], 1, k)
        out_keep = ctx.keep(node.outputs[0], 1, n)
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        has_c = len(node.inputs) > 2 and bool(node.inputs[2].name)
        delta = ctx.fold_delta(node, 0, lambda fill: alpha * (fill @ bm.astype(np.float64)))
        if delta is not None:
            c = ctx.param_values(node, 2) if has_c else np.zeros(n, b.dtype)
            ctx.set_param(node, 2, (c.astype(np.float64) + delta / beta).astype(c.dtype))
            has_c = True
        ctx.slice_param(node, 1, 1 if trans_b else 0, in_keep)
        ctx.slice_param(node, 1, 0 if trans_b else 1, out_keep)
        if has_c:
            c_shape = ctx.param_values(node, 2).shape
            if len(c_shape) >= 1 and c_shape[-1] == n and n > 1:
                ctx.slice_param(node, 2, len(c_shape) - 1, out_keep)


class MatMulRule:
    op_types = ("MatMul",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: "AnalysisContext") -> NotApplicable | None:
        a, y = node.inputs[0], node.outputs[0]
        b = ctx.param(node.inputs[1])
        if b is None or b.values.ndim != 2:
            return NotApplicable("B is not a constant 2-D weight")
        k, n = b.values.shape
        lay = ctx.layout(a)
        rank = ctx.rank(a)
        if rank is None or rank < 2:
            return NotApplicable("rank of A unknown" if rank is None else "A is a vector")
        if lay is not None:
            if set(lay.axes) != {rank - 1}:
                return NotApplicable("channels of A are not on its last axis")
            # A folded constant becomes a bias Add after the MatMul (see apply).
            ctx.add_sink(node, 0, rank - 1, None)
        out = ctx.add_source(node, n)
        zero = ~np.any(b.values != 0, axis=0)
        ctx.set_layout(y, Layout(rank, {rank - 1: out}, {rank - 1: np.where(zero, 0.0, np.nan)}))
        return None

    def apply(self, node: gs.Node, ctx: "SurgeryContext") -> None:
        b = ctx.param_values(node, 1)
        k, n = b.shape
        rank = len(ctx.analysis.shapes.get(node.inputs[0].name, ())) or 2
        out_keep = ctx.keep(node.outputs[0], rank - 1, n)
        delta = ctx.fold_delta(node, 0, lambda fill: fill @ b.astype(np.float64))
        if delta is not None:
            ctx.append_bias(node, delta[out_keep].astype(b.dtype))
        ctx.slice_param(node, 1, 0, ctx.keep(node.inputs[0], rank - 1, k))
        ctx.slice_param(node, 1, 1, out_keep)
