"""Integer ops of quantized models.

onnxruntime's ``quantize_dynamic`` writes ``DynamicQuantizeLinear -> ConvInteger/MatMulInteger
-> Cast -> Mul(scales) [-> Add(bias)]``: the weights are uint8/int8 initializers with zero
points, the activation is quantized at run time with one scale for the whole tensor. These
are pruned: the integer weight, and a per-channel weight zero point, are sliced with the
channels. The run-time scale is computed from the tensor's minimum and maximum, always taken
with 0 (so a removed all-zero channel never changes it); a removed channel is read as 0 by the
masked reference, before the DynamicQuantizeLinear, where it is a float (the reader of record).
A nonzero constant channel is not folded (the integer layers have no bias to fold it into).

Statically quantized QLinearConv / QLinearMatMul (requantized int8 outputs) are left alone,
with that reason on every channel they read.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, NotRefitted, PropagateContext, numel
from .conv import ConvRule, _check_rank, _padding_blocker
from .gemm import MatMulRule

__all__ = ["ConvIntegerRule", "DynamicQuantizeLinearRule", "MatMulIntegerRule", "StaticQuantizedRule"]

_DYNAMIC_BLOCKER = "quantized at run time (DynamicQuantizeLinear): a nonzero constant cannot be folded exactly"


def _from_dynamic_quantization(x: gs.Tensor) -> bool:
    return len(x.inputs) == 1 and x.inputs[0].op == "DynamicQuantizeLinear" and x.inputs[0].outputs[0] is x


def _zero_point(node: gs.Node, ctx: PropagateContext, index: int, n: int) -> np.ndarray | NotApplicable:
    """The weight zero point as one value per output channel (0 when absent)."""
    if len(node.inputs) <= index or not node.inputs[index].name:
        return np.zeros(n)
    p = ctx.param(node.inputs[index])
    if p is None:
        return NotApplicable("weight zero point is not a constant")
    zp = np.asarray(p.values, dtype=np.float64).reshape(-1)
    if zp.size not in (1, n):
        ctx.invalid(f"weight zero point {node.inputs[index].name!r} has {zp.size} values for {n} output channels")
    return np.broadcast_to(zp, (n,))


def _input_zero_point_per_tensor(node: gs.Node, ctx: PropagateContext, index: int) -> NotApplicable | None:
    if len(node.inputs) > index and node.inputs[index].name:
        n = numel(ctx.shape(node.inputs[index]))
        if n is None or n > 1:
            return NotApplicable("the input zero point is not known to be one value for the whole tensor")
    return None


class DynamicQuantizeLinearRule:
    """Channels pass through to the quantized output (the scale and zero point are scalars).
    It is also where its readers read the channels as floats (a sink): see the module docstring.
    Only a 0 is known exactly after quantization, so only zeros stay known constants."""

    op_types = ("DynamicQuantizeLinear",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        if lay.single_axis is None:
            return NotApplicable("channels on more than one axis of a tensor quantized at run time")
        axis = lay.single_axis
        ctx.add_sink(node, 0, axis, _DYNAMIC_BLOCKER)
        consts = {axis: np.where(lay.const(axis) == 0, 0.0, np.nan)}
        ctx.set_layout(node.outputs[0], Layout(lay.rank, lay.axes, consts))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


class ConvIntegerRule(NotRefitted, ConvRule):
    """ConvInteger(x, w, x_zero_point, w_zero_point): Conv's layer semantics on the integer
    weight (its filters are ``w - w_zero_point``), no bias, never refitted."""

    op_types = ("ConvInteger",)
    bias_index = None
    bn_mean_compensation = False
    weight_zero_point_index = 3

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        x, y = node.inputs[0], node.outputs[0]
        w = ctx.param(node.inputs[1])
        if w is None:
            return NotApplicable("weight is not a constant")
        weight = np.asarray(w.values)
        _check_rank(node, ctx, weight)
        groups = int(node.attrs.get("group", 1))
        cout, cin_g = weight.shape[0], weight.shape[1]
        cin = cin_g * groups
        zp = _zero_point(node, ctx, 3, cout)
        if isinstance(zp, NotApplicable):
            return zp
        bad = _input_zero_point_per_tensor(node, ctx, 2)
        if bad:
            return bad
        lay = ctx.layout(x)
        if lay is not None:
            if set(lay.axes) != {1}:
                return NotApplicable("input channels are spread over more than the channel axis")
            if not _from_dynamic_quantization(x):
                return NotApplicable(
                    "input is not quantized by a DynamicQuantizeLinear; its channels cannot be masked as floats"
                )
        x_shape = ctx.shape(x)
        if x_shape is not None and len(x_shape) > 1 and x_shape[1] is not None and x_shape[1] != cin:
            ctx.invalid(f"weight {node.inputs[1].name!r} expects {cin} input channels, the input has {x_shape[1]}")
        rank = weight.ndim
        centred = weight.reshape(cout, -1).astype(np.float64) - zp[:, None]
        consts = np.where(~np.any(centred != 0, axis=1), 0.0, np.nan)  # int32 0 where the filter is zero
        if groups == 1:
            out = ctx.add_source(node, cout)
        elif cin_g == 1 and cout % cin == 0:  # depthwise: the output channels are the input's
            m = cout // cin
            out = np.repeat(ctx.ids_for(x, 1, cin, "input of a depthwise ConvInteger carries no channel ids"), m)
            if lay is not None and _padding_blocker(node, tuple(weight.shape[2:])) is None:
                consts = np.where(np.repeat(lay.const(1), m) == 0, 0.0, consts)
        else:
            if cout % groups:
                return NotApplicable(f"output channels {cout} not divisible by group {groups}")
            why = f"grouped ConvInteger (group={groups}): every group must lose the same number of channels"
            if lay is not None:
                ctx.add_balance(list(lay.axes[1].reshape(groups, cin_g)), why)
            out = ctx.add_source(node, cout)
            ctx.add_balance(list(out.reshape(groups, cout // groups)), why)
        ctx.set_layout(y, Layout(rank, {1: out}, {1: consts}))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        weight = ctx.param_values(node, 1)
        groups = int(node.attrs.get("group", 1))
        cout, cin_g = weight.shape[0], weight.shape[1]
        in_keep = ctx.keep(node.inputs[0], 1, cin_g * groups)
        out_keep = ctx.keep(node.outputs[0], 1, cout)
        ctx.slice_param(node, 1, 0, out_keep)
        if groups > 1 and cin_g == 1:
            ctx.set_attr(node, "group", int(in_keep.sum()))
        elif groups == 1:
            ctx.slice_param(node, 1, 1, in_keep)
        else:
            ctx.group_columns(node, 1, groups, in_keep.reshape(groups, cin_g))
        _slice_zero_point(node, ctx, 3, out_keep)


class MatMulIntegerRule(NotRefitted, MatMulRule):
    """MatMulInteger(A, B, a_zero_point, b_zero_point) with a constant integer B [K, N]:
    MatMul's layer semantics on ``B - b_zero_point``; never refitted."""

    op_types = ("MatMulInteger",)
    weight_zero_point_index = 3

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        a, y = node.inputs[0], node.outputs[0]
        b = ctx.param(node.inputs[1])
        if b is None or np.asarray(b.values).ndim != 2:
            return NotApplicable("B is not a constant 2-D weight")
        n = b.values.shape[1]
        zp = _zero_point(node, ctx, 3, n)
        if isinstance(zp, NotApplicable):
            return zp
        bad = _input_zero_point_per_tensor(node, ctx, 2)
        if bad:
            return bad
        rank = ctx.rank(a)
        if rank is None or rank < 2:
            return NotApplicable("rank of A unknown" if rank is None else "A is a vector")
        lay = ctx.layout(a)
        if lay is not None:
            if set(lay.axes) != {rank - 1}:
                return NotApplicable("channels of A are not on its last axis")
            if not _from_dynamic_quantization(a):
                return NotApplicable(
                    "A is not quantized by a DynamicQuantizeLinear; its channels cannot be masked as floats"
                )
        out = ctx.add_source(node, n)
        zero = ~np.any(np.asarray(b.values, dtype=np.float64) - zp[None, :] != 0, axis=0)
        ctx.set_layout(y, Layout(rank, {rank - 1: out}, {rank - 1: np.where(zero, 0.0, np.nan)}))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        b = ctx.param_values(node, 1)
        k, n = b.shape
        rank = len(ctx.analysis.shapes.get(node.inputs[0].name, ())) or 2
        out_keep = ctx.keep(node.outputs[0], rank - 1, n)
        ctx.slice_param(node, 1, 0, ctx.keep(node.inputs[0], rank - 1, k))
        ctx.slice_param(node, 1, 1, out_keep)
        _slice_zero_point(node, ctx, 3, out_keep)


def _slice_zero_point(node: gs.Node, ctx: ApplyContext, index: int, keep: np.ndarray) -> None:
    values = ctx.param_values_or_none(node, index) if len(node.inputs) > index and node.inputs[index].name else None
    if values is not None and values.ndim == 1 and values.size == len(keep) and values.size > 1:
        ctx.slice_param(node, index, 0, keep)


class StaticQuantizedRule:
    """QLinearConv / QLinearMatMul: left alone, with the reason on the channels they read."""

    op_types = ("QLinearConv", "QLinearMatMul")
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        return NotApplicable(
            f"statically quantized {node.op} (requantized integer output) is not pruned; "
            "its input channels stay (use the float model, or its QDQ form, to prune)"
        )

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None
