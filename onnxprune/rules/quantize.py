"""QuantizeLinear / DequantizeLinear, and OpenVINO's FakeQuantize (NNCF's int8 export), on
activations: channels pass through. A per-tensor scale or range needs nothing; a per-channel
one on a channel axis is sliced with the channels. (On weights the parameter resolver reads
through them, and the surgery slices them with the weight.)"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from ..fake_quantize import FQ_DOMAIN, fake_quantize_values
from .base import ApplyContext, PropagateContext, data_inputs_tracked

__all__ = ["FakeQuantizeRule", "QuantizeRule"]


class QuantizeRule:
    op_types = ("QuantizeLinear", "DequantizeLinear")
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        if node.attrs.get("block_size", 0):
            return NotApplicable("blocked quantization")
        scale = ctx.param(node.inputs[1])
        zp = ctx.param(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        if scale is None or (len(node.inputs) > 2 and node.inputs[2].name and zp is None):
            return NotApplicable("scale or zero point is not constant")
        s = scale.values.astype(np.float64).reshape(-1)
        z = np.zeros(1) if zp is None else zp.values.astype(np.float64).reshape(-1)
        axis = int(node.attrs.get("axis", 1)) % lay.rank
        if s.size > 1:
            if axis not in lay.axes or len(lay.axes[axis]) != s.size or len(lay.axes) != 1:
                return NotApplicable("per-channel quantization on an axis without matching channels")
        consts = {}
        if lay.single_axis is not None:
            a = lay.single_axis
            c = lay.const(a)
            if node.op == "DequantizeLinear":
                consts[a] = (c - z) * s
            else:
                if zp is not None:
                    info = np.iinfo(zp.values.dtype)
                    lo, hi = info.min, info.max
                else:
                    lo, hi = 0, 255
                with np.errstate(all="ignore"):
                    consts[a] = np.clip(np.rint(c / s) + z, lo, hi)
        ctx.set_layout(node.outputs[0], Layout(lay.rank, lay.axes, consts))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        lay = ctx.analysis.layouts.get(node.inputs[0].name)
        if lay is None:
            return
        scale = ctx.param_values(node, 1)
        if scale.size <= 1:
            return
        axis = int(node.attrs.get("axis", 1)) % lay.rank
        keep = ctx.keep(node.inputs[0], axis, scale.size)
        ctx.slice_param(node, 1, 0, keep)
        if len(node.inputs) > 2 and node.inputs[2].name:
            ctx.slice_param(node, 2, 0, keep)


class FakeQuantizeRule:
    """OpenVINO's FakeQuantize (NNCF's int8 export) on activations: channels pass through. A
    range of one value per channel ([1,C,1,1] on an NCHW activation) is sliced with them; a
    Constant passed as several ranges (NNCF passes one as input_low and output_low), or shared
    with other nodes, is copied on write by the surgery. On weights the parameter resolver
    reads through it (the weight's values are the fake-quantized ones), and the surgery slices
    its ranges with the filters."""

    op_types = ("FakeQuantize",)
    domain = FQ_DOMAIN

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        if len(node.inputs) != 5:
            return NotApplicable(f"FakeQuantize with {len(node.inputs)} inputs (5 expected)")
        ranges = [ctx.param(t) for t in node.inputs[1:]]
        if any(r is None for r in ranges):
            return NotApplicable("a FakeQuantize range is not a constant")
        per_channel = []
        for r in ranges:
            shape = np.asarray(r.values).shape
            axes = _spanned_axes(shape, lay.rank)
            if axes is None:
                return NotApplicable("a FakeQuantize range has more dimensions than its input")
            if any(a not in lay.axes or len(lay.axes[a]) != shape[a - (lay.rank - len(shape))] for a in axes):
                return NotApplicable("a FakeQuantize range varies along an axis without matching channels")
            per_channel.append(axes)
        consts = {}
        if lay.single_axis is not None:
            a = lay.single_axis
            if all(set(axes) <= {a} for axes in per_channel):
                flat = [_along(np.asarray(r.values), a, lay.rank, len(lay.axes[a])) for r in ranges]
                c = lay.const(a)
                known = ~np.isnan(c)
                out = np.full(c.shape, np.nan)
                levels = int(node.attrs.get("levels", 256))
                out[known] = fake_quantize_values(c[known], *(f[known] for f in flat), levels)
                consts[a] = out
        ctx.set_layout(node.outputs[0], Layout(lay.rank, lay.axes, consts))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        lay = ctx.analysis.layouts.get(node.inputs[0].name)
        if lay is None:
            return
        for index in range(1, 5):
            shape = np.asarray(ctx.param_values(node, index)).shape
            offset = lay.rank - len(shape)
            for a in _spanned_axes(shape, lay.rank) or ():
                ctx.slice_param(node, index, a - offset, ctx.keep(node.inputs[0], a, shape[a - offset]))


def _spanned_axes(shape: tuple[int, ...], rank: int) -> tuple[int, ...] | None:
    """The input's axes along which a range broadcast to rank ``rank`` has more than one value."""
    if len(shape) > rank:
        return None
    offset = rank - len(shape)
    return tuple(offset + i for i, d in enumerate(shape) if d != 1)


def _along(values: np.ndarray, axis: int, rank: int, n: int) -> np.ndarray:
    """A range as one value per position of ``axis`` (a broadcast range repeated)."""
    if values.size == 1:
        return np.full(n, float(values.reshape(-1)[0]))
    return values.reshape(-1).astype(np.float64)
