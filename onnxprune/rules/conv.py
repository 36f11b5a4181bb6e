"""Conv and ConvTranspose: sources of output channels and readers (sinks) of input channels.

Plain Conv (group=1) creates fresh output ids and reads its input channels through weight
axis 1. Depthwise Conv (group = input channels) maps each input channel to its ``multiplier``
output channels, so they are the same channel. Grouped Conv (1 < group < input channels) keeps
its group count: every group must lose the same number of input and of output channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable

if TYPE_CHECKING:
    from ..analysis import AnalysisContext
    from ..surgery import SurgeryContext

__all__ = ["ConvRule", "ConvTransposeRule"]


def _padding_blocker(node: gs.Node, kernel: tuple[int, ...]) -> str | None:
    """Why a constant input channel cannot be folded into the bias (zero padding), or None."""
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    pads = node.attrs.get("pads", [])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and any(k > 1 for k in kernel):
        return "zero padding over the input: a constant channel is not constant at the borders"
    if any(int(p) != 0 for p in pads):
        return "zero padding over the input: a constant channel is not constant at the borders"
    return None


def _bias_blocker(node: gs.Node, ctx: "AnalysisContext", index: int) -> str | None:
    if len(node.inputs) > index and node.inputs[index].name:
        p = ctx.param(node.inputs[index])
        if p is None:
            return "bias is not a constant"
        if p.chain and any(n.op != "Identity" for n in p.chain):
            return "bias is quantized; folding a constant into it would not be exact"
    return None


def _zero_filter_consts(weight: np.ndarray, bias: np.ndarray | None, axis: int) -> np.ndarray:
    """Output constants of a layer: bias where the filter is all zero, NaN elsewhere."""
    other = tuple(a for a in range(weight.ndim) if a != axis)
    zero = ~np.any(weight != 0, axis=other)
    b = np.zeros(weight.shape[axis]) if bias is None else bias.astype(np.float64).reshape(-1)
    return np.where(zero, b, np.nan)


def _check_rank(node: gs.Node, ctx: "AnalysisContext", weight: np.ndarray) -> None:
    """A weight of rank 3 or more, the input's rank: onnx's shape inference lets a Conv whose
    data input is missing (its weight read as the data, its bias as the weight) through."""
    x_shape = ctx.shape(node.inputs[0])
    if weight.ndim < 3 or (x_shape is not None and len(x_shape) != weight.ndim):
        x_rank = "unknown" if x_shape is None else len(x_shape)
        ctx.invalid(f"weight {node.inputs[1].name!r} has rank {weight.ndim} and the input rank {x_rank}: both must be equal and at least 3")


class ConvRule:
    op_types = ("Conv",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: "AnalysisContext") -> NotApplicable | None:
        x, y = node.inputs[0], node.outputs[0]
        w = ctx.param(node.inputs[1])
        if w is None:
            return NotApplicable("weight is not a constant")
        b = ctx.param(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        if len(node.inputs) > 2 and node.inputs[2].name and b is None:
            return NotApplicable("bias is not a constant")
        weight = w.values
        _check_rank(node, ctx, weight)
        groups = int(node.attrs.get("group", 1))
        cout, cin_g = weight.shape[0], weight.shape[1]
        cin = cin_g * groups
        rank = weight.ndim
        lay = ctx.layout(x)
        if lay is not None and set(lay.axes) != {1}:
            return NotApplicable("input channels are spread over more than the channel axis")
        kernel = tuple(weight.shape[2:])
        bias = None if b is None else b.values
        x_shape = ctx.shape(x)
        if x_shape is not None and len(x_shape) > 1 and x_shape[1] is not None and x_shape[1] != cin:
            ctx.invalid(f"weight {node.inputs[1].name!r} expects {cin} input channels, the input has {x_shape[1]}")
        if bias is not None and bias.size != cout:
            ctx.invalid(f"bias {node.inputs[2].name!r} has {bias.size} values for {cout} output channels")
        blocker = _padding_blocker(node, kernel) or _bias_blocker(node, ctx, 2)

        if groups == 1:
            if lay is not None:
                ctx.add_sink(node, 0, 1, blocker)
            out = ctx.add_source(node, cout)
            ctx.set_layout(y, Layout(rank, {1: out}, {1: _zero_filter_consts(weight, bias, 0)}))
            return None
        if cin_g == 1 and cout % cin == 0:  # depthwise, channel multiplier m
            m = cout // cin
            in_ids = ctx.ids_for(x, 1, cin, "input of a depthwise Conv carries no channel ids")
            out = np.repeat(in_ids, m)
            consts = _zero_filter_consts(weight, bias, 0)
            in_const = np.repeat(lay.const(1), m) if lay is not None else np.full(cout, np.nan)
            b = np.zeros(cout) if bias is None else bias.astype(np.float64)
            # A zero input channel gives the bias even with zero padding; a nonzero constant only without.
            consts = np.where(in_const == 0, b, consts)
            if _padding_blocker(node, kernel) is None:
                wsum = weight.reshape(cout, -1).astype(np.float64).sum(axis=1)
                consts = np.where(np.isnan(consts), in_const * wsum + b, consts)
            ctx.set_layout(y, Layout(rank, {1: out}, {1: consts}))
            return None
        if cout % groups:
            return NotApplicable(f"output channels {cout} not divisible by group {groups}")
        why = f"grouped Conv (group={groups}): every group must lose the same number of channels"
        if lay is not None:
            ctx.add_sink(node, 0, 1, blocker)
            ctx.add_balance(list(lay.axes[1].reshape(groups, cin_g)), why)
        out = ctx.add_source(node, cout)
        ctx.add_balance(list(out.reshape(groups, cout // groups)), why)
        ctx.set_layout(y, Layout(rank, {1: out}, {1: _zero_filter_consts(weight, bias, 0)}))
        return None

    def apply(self, node: gs.Node, ctx: "SurgeryContext") -> None:
        x, y = node.inputs[0], node.outputs[0]
        weight = ctx.param_values(node, 1)
        groups = int(node.attrs.get("group", 1))
        cout, cin_g = weight.shape[0], weight.shape[1]
        cin = cin_g * groups
        in_keep = ctx.keep(x, 1, cin)
        out_keep = ctx.keep(y, 1, cout)
        has_bias = len(node.inputs) > 2 and bool(node.inputs[2].name)

        if groups > 1 and cin_g == 1:  # depthwise: weight rows follow the output channels
            ctx.slice_param(node, 1, 0, out_keep)
            if has_bias:
                ctx.slice_param(node, 2, 0, out_keep)
            ctx.set_attr(node, "group", int(in_keep.sum()))
            return

        delta = ctx.fold_delta(node, 0, lambda fill: _conv_fold(weight, fill, groups))
        if delta is not None:
            bias = ctx.param_values(node, 2) if has_bias else np.zeros(cout, weight.dtype)
            ctx.set_param(node, 2, (bias.astype(np.float64) + delta).astype(bias.dtype))
        if groups == 1:
            ctx.slice_param(node, 1, 0, out_keep)
            ctx.slice_param(node, 1, 1, in_keep)
        else:
            ctx.slice_param(node, 1, 0, out_keep)
            ctx.group_columns(node, 1, groups, in_keep.reshape(groups, cin_g))
        if has_bias or delta is not None:
            ctx.slice_param(node, 2, 0, out_keep)


def _conv_fold(weight: np.ndarray, fill: np.ndarray, groups: int) -> np.ndarray:
    """Bias change when input channels are replaced by constants ``fill`` (0 where kept)."""
    cout, cin_g = weight.shape[0], weight.shape[1]
    w = weight.reshape(cout, cin_g, -1).astype(np.float64).sum(axis=2)  # [cout, cin_g]
    f = fill.reshape(groups, cin_g)
    per_out_group = cout // groups
    g_of = np.arange(cout) // per_out_group
    return np.einsum("oi,oi->o", w, f[g_of])


class ConvTransposeRule:
    op_types = ("ConvTranspose",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: "AnalysisContext") -> NotApplicable | None:
        x, y = node.inputs[0], node.outputs[0]
        w = ctx.param(node.inputs[1])
        if w is None:
            return NotApplicable("weight is not a constant")
        if int(node.attrs.get("group", 1)) != 1:
            return NotApplicable("grouped ConvTranspose is not supported")
        b = ctx.param(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        if len(node.inputs) > 2 and node.inputs[2].name and b is None:
            return NotApplicable("bias is not a constant")
        weight = w.values
        _check_rank(node, ctx, weight)
        lay = ctx.layout(x)
        if lay is not None:
            if set(lay.axes) != {1}:
                return NotApplicable("input channels are spread over more than the channel axis")
            # Overlapping kernels make a constant input non-constant in the output: only zeros go.
            ctx.add_sink(node, 0, 1, "ConvTranspose spreads a constant unevenly")
        out = ctx.add_source(node, weight.shape[1])
        consts = _zero_filter_consts(weight, None if b is None else b.values, 1)
        ctx.set_layout(y, Layout(weight.ndim, {1: out}, {1: consts}))
        return None

    def apply(self, node: gs.Node, ctx: "SurgeryContext") -> None:
        weight = ctx.param_values(node, 1)
        in_keep = ctx.keep(node.inputs[0], 1, weight.shape[0])
        out_keep = ctx.keep(node.outputs[0], 1, weight.shape[1])
        ctx.slice_param(node, 1, 0, in_keep)
        ctx.slice_param(node, 1, 1, out_keep)
        if len(node.inputs) > 2 and node.inputs[2].name:
            ctx.slice_param(node, 2, 0, out_keep)
