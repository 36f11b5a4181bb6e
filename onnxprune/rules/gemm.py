"""Gemm and MatMul with a constant weight: the output features are channels (a source), and the
input features are read through the weight's K axis (a sink)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, Attrs, PropagateContext, Shape, numel
from .conv import _bias_blocker

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


def _matmul_macs(x: Shape | None, w: Shape | None, y: Shape | None, trans_a: bool = False) -> int | None:
    """MACs of a product with output ``y``: every output element sums K products."""
    n_out = numel(y)
    if x is None or w is None or n_out is None or not x or x[-1] is None or y is None:
        return None
    k = x[0] if trans_a else x[-1]
    batch = y[0] if (y and y[0]) else 1
    return (n_out // batch) * int(k) if len(y) > 1 else n_out * int(k)  # type: ignore[arg-type]


def _feature_rows(x: np.ndarray, picks: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``picks`` sampled rows of the input's features (its last axis), float64 (the
    sampled rows converted, exactly, not the whole input)."""
    rows = x.reshape(-1, x.shape[-1])
    if len(rows) > picks:
        rows = rows[rng.choice(len(rows), size=picks, replace=False)]
    return np.asarray(rows, dtype=np.float64)


class GemmRule:
    """Gemm; also its layer semantics: weight B [K, N] ([N, K] with transB), bias C (times beta)."""

    op_types = ("Gemm",)
    domain = ""
    data_index, weight_index, bias_index = 0, 1, 2
    bn_mean_compensation = False

    def out_axis(self, attrs: Attrs) -> int:
        return 0 if int(attrs.get("transB", 0)) else 1  # type: ignore[call-overload]

    def in_axis(self, attrs: Attrs) -> int:
        return 1 - self.out_axis(attrs)

    def groups(self, attrs: Attrs) -> int:
        return 1

    def bias_scale(self, attrs: Attrs) -> float:
        return float(attrs.get("beta", 1.0))  # type: ignore[arg-type]

    def macs(self, attrs: Attrs, x: Shape | None, w: Shape | None, y: Shape | None) -> int | None:
        return _matmul_macs(x, w, y, bool(attrs.get("transA", 0)))

    def weight_matrix(self, attrs: Attrs, weight: np.ndarray) -> np.ndarray:
        return weight if self.out_axis(attrs) == 0 else weight.T

    def weight_from_matrix(self, attrs: Attrs, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return matrix if self.out_axis(attrs) == 0 else matrix.T

    def refittable(self, attrs: Attrs) -> bool:
        return not int(attrs.get("transA", 0))  # type: ignore[call-overload]

    def input_rows(
        self, attrs: Attrs, x: np.ndarray, weight_shape: tuple[int, ...], picks: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        if not self.refittable(attrs):
            return None
        rows = _feature_rows(x, picks, rng)
        alpha = float(attrs.get("alpha", 1.0))  # type: ignore[arg-type]
        return rows if alpha == 1.0 else alpha * rows

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
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

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
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
    """MatMul; also its layer semantics: weight B [K, N], no bias."""

    op_types = ("MatMul",)
    domain = ""
    data_index, weight_index, bias_index = 0, 1, None
    bn_mean_compensation = False

    def out_axis(self, attrs: Attrs) -> int:
        return 1

    def in_axis(self, attrs: Attrs) -> int:
        return 0

    def groups(self, attrs: Attrs) -> int:
        return 1

    def bias_scale(self, attrs: Attrs) -> float:
        return 1.0

    def macs(self, attrs: Attrs, x: Shape | None, w: Shape | None, y: Shape | None) -> int | None:
        return _matmul_macs(x, w, y)

    def weight_matrix(self, attrs: Attrs, weight: np.ndarray) -> np.ndarray:
        return weight.T

    def weight_from_matrix(self, attrs: Attrs, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return matrix.T

    def refittable(self, attrs: Attrs) -> bool:
        return True

    def input_rows(
        self, attrs: Attrs, x: np.ndarray, weight_shape: tuple[int, ...], picks: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        return _feature_rows(x, picks, rng)

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        a, y = node.inputs[0], node.outputs[0]
        b = ctx.param(node.inputs[1])
        if b is None or b.values.ndim != 2:
            return NotApplicable("B is not a constant 2-D weight")
        _k, n = b.values.shape
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

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        b = ctx.param_values(node, 1)
        k, n = b.shape
        rank = len(ctx.analysis.shapes.get(node.inputs[0].name, ())) or 2
        out_keep = ctx.keep(node.outputs[0], rank - 1, n)
        delta = ctx.fold_delta(node, 0, lambda fill: fill @ b.astype(np.float64))
        if delta is not None:
            ctx.append_bias(node, delta[out_keep].astype(b.dtype))
        ctx.slice_param(node, 1, 0, ctx.keep(node.inputs[0], rank - 1, k))
        ctx.slice_param(node, 1, 1, out_keep)
