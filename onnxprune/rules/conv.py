"""Conv and ConvTranspose: sources of output channels and readers (sinks) of input channels.

Plain Conv (group=1) creates fresh output ids and reads its input channels through weight
axis 1. Depthwise Conv (group = input channels) maps each input channel to its ``multiplier``
output channels, so they are the same channel. Grouped Conv (1 < group < input channels) keeps
its group count: every group must lose the same number of input and of output channels.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, Attrs, NotRefitted, PropagateContext, Shape, numel

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


def _bias_blocker(node: gs.Node, ctx: PropagateContext, index: int) -> str | None:
    if len(node.inputs) > index and node.inputs[index].name:
        p = ctx.param(node.inputs[index])
        if p is None:
            return "bias is not a constant"
        if any(n.op in ("QuantizeLinear", "DequantizeLinear", "FakeQuantize") for n in p.chain):
            return "bias is quantized; folding a constant into it would not be exact"
    return None


def _zero_filter_consts(weight: np.ndarray, bias: np.ndarray | None, axis: int) -> np.ndarray:
    """Output constants of a layer: bias where the filter is all zero, NaN elsewhere."""
    other = tuple(a for a in range(weight.ndim) if a != axis)
    zero = ~np.any(weight != 0, axis=other)
    b = np.zeros(weight.shape[axis]) if bias is None else bias.astype(np.float64).reshape(-1)
    return np.where(zero, b, np.nan)


def _check_rank(node: gs.Node, ctx: PropagateContext, weight: np.ndarray) -> None:
    """A weight of rank 3 or more, the input's rank: onnx's shape inference lets a Conv whose
    data input is missing (its weight read as the data, its bias as the weight) through."""
    x_shape = ctx.shape(node.inputs[0])
    if weight.ndim < 3 or (x_shape is not None and len(x_shape) != weight.ndim):
        x_rank = "unknown" if x_shape is None else len(x_shape)
        ctx.invalid(
            f"weight {node.inputs[1].name!r} has rank {weight.ndim} and the input rank {x_rank}: both must be equal and at least 3"
        )


class ConvRule:
    """Conv; also its layer semantics: weight [Cout, Cin/group, *kernel], bias [Cout]."""

    op_types = ("Conv",)
    domain = ""
    data_index, weight_index, bias_index = 0, 1, 2
    bn_mean_compensation = True  # measured on trained CNNs (see compensation)

    def out_axis(self, attrs: Attrs) -> int:
        return 0

    def in_axis(self, attrs: Attrs) -> int:
        return 1

    def groups(self, attrs: Attrs) -> int:
        return int(attrs.get("group", 1)) or 1  # type: ignore[call-overload]

    def bias_scale(self, attrs: Attrs) -> float:
        return 1.0

    def macs(self, attrs: Attrs, x: Shape | None, w: Shape | None, y: Shape | None) -> int | None:
        n_out, w_n = numel(y), numel(w)
        if n_out is None or w_n is None or not w or y is None:
            return None
        # Every output element reads one [Cin/group, *kernel] filter.
        return (n_out // max(y[0] or 1, 1)) * (w_n // w[0])

    def weight_matrix(self, attrs: Attrs, weight: np.ndarray) -> np.ndarray:
        return weight.reshape(weight.shape[0], -1)

    def weight_from_matrix(self, attrs: Attrs, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return matrix.reshape(shape)

    def refittable(self, attrs: Attrs) -> bool:
        return True  # grouped too: each group is its own least-squares problem (see LayerSemantics)

    def input_rows(
        self, attrs: Attrs, x: np.ndarray, weight_shape: tuple[int, ...], picks: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        if len(weight_shape) != 4:
            return None
        return _conv_patches(x, attrs, tuple(weight_shape[2:]), picks, rng)

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
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
        why = f"grouped Conv (group={groups}): every group must lose the same number of channels, or all of its inputs and outputs"
        if lay is not None:
            ctx.add_sink(node, 0, 1, blocker)
        out = ctx.add_source(node, cout)
        out_rows = list(out.reshape(groups, cout // groups))
        whole = None
        if lay is not None:
            in_rows = list(lay.axes[1].reshape(groups, cin_g))
            whole = [np.concatenate([i, o]) for i, o in zip(in_rows, out_rows)]  # a dead group goes whole
            ctx.add_balance(in_rows, why, whole)
        ctx.add_balance(out_rows, why, whole)
        ctx.set_layout(y, Layout(rank, {1: out}, {1: _zero_filter_consts(weight, bias, 0)}))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
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
            # A group whose inputs and outputs all go is dropped whole (the plan allows that only
            # for whole groups); the others lose the same number of columns each.
            in_groups = in_keep.reshape(groups, cin_g)
            alive = in_groups.any(axis=1) | out_keep.reshape(groups, cout // groups).any(axis=1)
            ctx.slice_param(node, 1, 0, out_keep)
            ctx.group_columns(node, 1, int(alive.sum()), in_groups[alive])
            if not alive.all():
                ctx.set_attr(node, "group", int(alive.sum()))
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


class ConvTransposeRule(NotRefitted):  # overlapping outputs: not one filter per output position
    """ConvTranspose; also its layer semantics: weight [Cin, Cout/group, *kernel], bias [Cout]."""

    op_types = ("ConvTranspose",)
    domain = ""
    data_index, weight_index, bias_index = 0, 1, 2
    bn_mean_compensation = False

    def out_axis(self, attrs: Attrs) -> int:
        return 1

    def in_axis(self, attrs: Attrs) -> int:
        return 0

    def groups(self, attrs: Attrs) -> int:
        return int(attrs.get("group", 1)) or 1  # type: ignore[call-overload]

    def bias_scale(self, attrs: Attrs) -> float:
        return 1.0

    def macs(self, attrs: Attrs, x: Shape | None, w: Shape | None, y: Shape | None) -> int | None:
        n_in, w_n = numel(x), numel(w)
        if n_in is None or w_n is None or not w or x is None:
            return None
        # Every input element is multiplied by a [Cout/group, *kernel] slice of the weight.
        return (n_in // max(x[0] or 1, 1)) * (w_n // w[0])

    def weight_matrix(self, attrs: Attrs, weight: np.ndarray) -> np.ndarray:
        return np.moveaxis(weight, 1, 0).reshape(weight.shape[1], -1)

    def weight_from_matrix(self, attrs: Attrs, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return np.moveaxis(matrix.reshape(shape[1], shape[0], *shape[2:]), 0, 1)

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
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
        x_shape = ctx.shape(x)
        if x_shape is not None and x_shape[1] is not None and x_shape[1] != weight.shape[0]:
            ctx.invalid(
                f"weight {node.inputs[1].name!r} expects {weight.shape[0]} input channels, the input has {x_shape[1]}"
            )
        if b is not None and b.values.size != weight.shape[1]:
            ctx.invalid(
                f"bias {node.inputs[2].name!r} has {b.values.size} values for {weight.shape[1]} output channels"
            )
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

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        weight = ctx.param_values(node, 1)
        in_keep = ctx.keep(node.inputs[0], 1, weight.shape[0])
        out_keep = ctx.keep(node.outputs[0], 1, weight.shape[1])
        ctx.slice_param(node, 1, 0, in_keep)
        ctx.slice_param(node, 1, 1, out_keep)
        if len(node.inputs) > 2 and node.inputs[2].name:
            ctx.slice_param(node, 2, 0, out_keep)


def _conv_patches(
    x: np.ndarray, attrs: Attrs, kernel: tuple[int, ...], picks: int, rng: np.random.Generator
) -> np.ndarray:
    """Sampled im2col rows of a 2-D Conv input: [positions, Cin * kh * kw], float64 (``x`` is
    padded in its own dtype; the sampled values are converted, exactly)."""
    pads = list(attrs.get("pads", [0] * 4))  # type: ignore[call-overload]
    strides = list(attrs.get("strides", [1, 1]))  # type: ignore[call-overload]
    dil = list(attrs.get("dilations", [1, 1]))  # type: ignore[call-overload]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    kh, kw = kernel
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for dim, k, st, d in zip(x.shape[2:], kernel, strides, dil):
            total = max(0, (-(-dim // st) - 1) * st + (k - 1) * d + 1 - dim)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begins + ends
    # Positions in the zero-padded input; the padding itself is never made (a copy of the whole
    # input, gigabytes for a detector's 32 pages): a tap outside the input reads 0.
    height, width = x.shape[2] + pads[0] + pads[2], x.shape[3] + pads[1] + pads[3]
    eff_h, eff_w = (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1
    out_h = (height - eff_h) // strides[0] + 1
    out_w = (width - eff_w) // strides[1] + 1
    n = x.shape[0] * out_h * out_w
    flat = rng.choice(n, size=min(picks, n), replace=False)
    b, rem = np.divmod(flat, out_h * out_w)
    i, j = np.divmod(rem, out_w)
    rows = np.empty((len(flat), x.shape[1], kh, kw), dtype=np.float64)
    for a in range(kh):
        y = i * strides[0] + a * dil[0] - pads[0]
        for c in range(kw):
            z = j * strides[1] + c * dil[1] - pads[1]
            inside = (y >= 0) & (y < x.shape[2]) & (z >= 0) & (z < x.shape[3])
            tap = x[b, :, np.clip(y, 0, x.shape[2] - 1), np.clip(z, 0, x.shape[3] - 1)]
            rows[:, :, a, c] = np.where(inside[:, None], tap, 0)
    return rows.reshape(len(flat), -1)
