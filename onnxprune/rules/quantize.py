"""QuantizeLinear / DequantizeLinear on activations: channels pass through. A per-tensor
scale needs nothing; a per-channel scale on a channel axis is sliced with the channels.
(Q/DQ on weights is read through by the parameter resolver, and sliced by surgery.)"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, PropagateContext, data_inputs_tracked

__all__ = ["QuantizeRule"]


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
