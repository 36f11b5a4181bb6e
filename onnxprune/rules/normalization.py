"""BatchNormalization and InstanceNormalization (per-channel, pass-through), and the
normalisations that mix channels (LayerNormalization, GroupNormalization...), which pin."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, Attrs, PropagateContext, data_inputs_tracked

__all__ = ["BatchNormalizationRule", "ChannelMixingNormalizationRule", "InstanceNormalizationRule"]


def _per_channel_params(node: gs.Node, ctx: PropagateContext, indices: range) -> list[np.ndarray] | NotApplicable:
    values = []
    for i in indices:
        p = ctx.param(node.inputs[i])
        if p is None:
            return NotApplicable(f"parameter {node.inputs[i].name!r} is not a constant")
        values.append(p.values.astype(np.float64).reshape(-1))
    return values


class BatchNormalizationRule:
    op_types = ("BatchNormalization",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        if len([t for t in node.outputs if t.name]) > 1 or int(node.attrs.get("training_mode", 0)):
            return NotApplicable("training-mode BatchNormalization")
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        if set(lay.axes) != {1}:
            return NotApplicable("channels are not on axis 1")
        params = _per_channel_params(node, ctx, range(1, 5))
        if isinstance(params, NotApplicable):
            return params
        scale, bias, mean, var = params
        eps = float(node.attrs.get("epsilon", 1e-5))
        with np.errstate(all="ignore"):
            consts = (lay.const(1) - mean) / np.sqrt(var + eps) * scale + bias
        # Scale 0 gives the bias whatever the input, even an unknown (non-constant) one: the
        # channels NNCF's filter pruning masks keep their BatchNormalization with scale and bias
        # 0, and behind its FakeQuantize a zero filter is no longer exactly zero.
        consts = np.where(scale == 0, bias, consts)
        ctx.set_layout(node.outputs[0], Layout(lay.rank, lay.axes, {1: consts}))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        keep = ctx.keep(node.inputs[0], 1, ctx.param_values(node, 1).shape[0])
        for i in range(1, 5):
            ctx.slice_param(node, i, 0, keep)

    def input_affine_params(
        self, attrs: Attrs, params: tuple[np.ndarray, ...], a: np.ndarray, c: np.ndarray
    ) -> dict[int, np.ndarray] | None:
        """s (a x + c - m) / d + beta = (s a)(x - m) / d + beta + s (c + (a - 1) m) / d, with
        d = sqrt(var + eps): scale and bias change, mean and variance stay (exact)."""
        if len(params) < 4 or int(attrs.get("training_mode", 0)):  # type: ignore[call-overload]
            return None
        scale, bias, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params[:4])
        if not (scale.size == bias.size == mean.size == var.size == a.size == c.size):
            return None
        d = np.sqrt(var + float(attrs.get("epsilon", 1e-5)))  # type: ignore[arg-type]
        return {1: scale * a, 2: bias + scale * (c + (a - 1.0) * mean) / d}


class InstanceNormalizationRule:
    op_types = ("InstanceNormalization",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        if set(lay.axes) != {1}:
            return NotApplicable("channels are not on axis 1")
        params = _per_channel_params(node, ctx, range(1, 3))
        if isinstance(params, NotApplicable):
            return params
        _, bias = params
        # A constant channel normalises to 0, so the output is the bias.
        consts = np.where(np.isnan(lay.const(1)), np.nan, bias)
        ctx.set_layout(node.outputs[0], Layout(lay.rank, lay.axes, {1: consts}))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        keep = ctx.keep(node.inputs[0], 1, ctx.param_values(node, 1).shape[0])
        ctx.slice_param(node, 1, 0, keep)
        ctx.slice_param(node, 2, 0, keep)


class ChannelMixingNormalizationRule:
    """Normalisations whose statistics mix channels: removing one changes the others."""

    op_types = ("LayerNormalization", "GroupNormalization", "LpNormalization", "MeanVarianceNormalization", "LRN")
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        if any(ctx.layout(t) is not None for t in node.inputs):
            return NotApplicable("normalises across channels: removing one would change the others")
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None
