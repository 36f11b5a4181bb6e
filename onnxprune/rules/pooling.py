"""Spatial ops that work on each channel alone: pooling, Resize/Upsample, Pad, and Reduce*
over spatial axes. Channels pass through; an op that acts on a channel axis pins."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, PropagateContext, data_inputs_tracked, passthrough

__all__ = ["PadRule", "PoolRule", "ReduceRule", "ResizeRule"]


def _has_pads(node: gs.Node) -> bool:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return any(int(p) for p in node.attrs.get("pads", [])) or auto_pad in ("SAME_UPPER", "SAME_LOWER")


class PoolRule:
    op_types = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxRoiPool")
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        if node.op == "MaxRoiPool":
            return NotApplicable("MaxRoiPool is not supported")
        if node.op == "MaxPool" and len([t for t in node.outputs if t.name]) > 1:
            return NotApplicable("MaxPool with an Indices output")
        op = node.op
        if op in ("MaxPool", "GlobalAveragePool", "GlobalMaxPool"):
            fn = lambda c: c  # noqa: E731 - max and mean of a constant are the constant
        elif op == "AveragePool":
            include_pad = int(node.attrs.get("count_include_pad", 0))
            fn = (lambda c: np.where(c == 0, 0.0, np.nan)) if include_pad and _has_pads(node) else (lambda c: c)
        else:
            fn = lambda c: np.where(c == 0, 0.0, np.nan)  # noqa: E731 - Lp norms scale with the window
        return passthrough(node, ctx, fn, spatial_from=2)

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


class ResizeRule:
    """Resize / Upsample: allowed while the batch and channel axes keep their size."""

    op_types = ("Resize", "Upsample")
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
        for a in lay.axes:
            n = len(lay.axes[a])
            if out_shape is None or a >= len(out_shape) or out_shape[a] != n:
                return NotApplicable(f"cannot prove the resize keeps channel axis {a} unchanged")
        for index in range(1, len(node.inputs)):
            t = node.inputs[index]
            if t.name and ctx.param(t) is None:
                bad = _check_runtime_sizes(node, index, ctx, lay, in_shape)
                if bad:
                    return bad
                ctx.validate_shape_input(node, index)
        mode = node.attrs.get("mode", "nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        fn = (lambda c: c) if mode in ("nearest", "linear", "bilinear") else (lambda c: np.where(c == 0, 0.0, np.nan))
        return passthrough(node, ctx, fn)

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


def _check_runtime_sizes(
    node: gs.Node, index: int, ctx: PropagateContext, lay: Layout, in_shape
) -> NotApplicable | None:
    """Resize sizes/scales computed at run time (segmentation heads take sizes from Shape())
    must keep following the input: probed with one channel fewer in every tensor whose shape
    they read, only the input's own channel entry may change, and only with the input."""
    x = node.inputs[0]
    sources = ctx.runtime_sources(node.inputs[index])
    if sources is None:
        return NotApplicable("resize sizes are neither constant nor computed from shapes")
    base = ctx.runtime_value(node.inputs[index])
    if base is None:
        return NotApplicable("resize sizes computed at run time could not be evaluated")
    base = np.ravel(base).astype(np.float64)
    for name in sources:
        src_lay = ctx.layouts.get(name)
        shape = ctx.shapes.get(name)
        if src_lay is None:
            continue
        if shape is None or any(d is None for d in shape) or len(src_lay.axes) != 1:
            return NotApplicable(f"resize sizes read the shape of {name!r}, whose shape is unknown")
        ((axis, _),) = src_lay.axes.items()
        probe = list(shape)
        probe[axis] -= 1
        got = ctx.runtime_value(node.inputs[index], {name: tuple(probe)})
        if got is None or np.size(got) != base.size:
            return NotApplicable("resize sizes computed at run time could not be evaluated")
        expected = base.copy()
        if name == x.name and index == 3:  # the channel entry of sizes follows the input's channels
            expected[axis] = probe[axis]
        if not np.array_equal(expected, np.ravel(got).astype(np.float64)):
            return NotApplicable(f"resize sizes computed at run time use the channel count of {name!r}")
    return None


class PadRule:
    op_types = ("Pad",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        rank = lay.rank
        if "pads" in node.attrs:
            pads = np.asarray(node.attrs["pads"], dtype=np.int64)
            value = float(node.attrs.get("value", 0.0))
        else:
            p = ctx.param(node.inputs[1]) if len(node.inputs) > 1 else None
            if p is None:
                return NotApplicable("pads are not constant")
            pads = np.asarray(p.values, dtype=np.int64).reshape(-1)
            value = 0.0
            if len(node.inputs) > 2 and node.inputs[2].name:
                v = ctx.param(node.inputs[2])
                if v is None:
                    return NotApplicable("pad value is not constant")
                value = float(np.asarray(v.values).reshape(-1)[0]) if v.values.size else 0.0
        axes = list(range(rank))
        if len(node.inputs) > 3 and node.inputs[3].name:
            ap = ctx.param(node.inputs[3])
            if ap is None:
                return NotApplicable("axes are not constant")
            axes = [int(a) % rank for a in np.asarray(ap.values).reshape(-1)]
        k = len(axes)
        begins, ends = pads[:k], pads[k:]
        for a, b, e in zip(axes, begins, ends):
            if a in lay.axes and (b or e):
                return NotApplicable(f"pads the channel axis {a}")
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode == "constant" and np.any(pads):
            fn = lambda c: np.where(c == value, c, np.nan)  # noqa: E731 - padding brings in `value`
        else:
            fn = lambda c: c  # noqa: E731
        return passthrough(node, ctx, fn)

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


class ReduceRule:
    """Reduce* over axes without channels: channels pass (moving if keepdims=0); over a
    channel axis: pinned."""

    op_types = (
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceSum",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    )
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        rank = lay.rank
        if "axes" in node.attrs:
            axes = [int(a) % rank for a in node.attrs["axes"]]
        elif len(node.inputs) > 1 and node.inputs[1].name:
            p = ctx.param(node.inputs[1])
            if p is None:
                return NotApplicable("axes are not constant")
            axes = [int(a) % rank for a in np.asarray(p.values).reshape(-1)]
        else:
            axes = [] if int(node.attrs.get("noop_with_empty_axes", 0)) else list(range(rank))
        if any(a in lay.axes for a in axes):
            return NotApplicable("reduces over a channel axis")
        keep = int(node.attrs.get("keepdims", 1))
        new_axes = {}
        consts = {}
        for a, ids in lay.axes.items():
            na = a if keep else a - sum(1 for r in axes if r < a)
            new_axes[na] = ids
            c = lay.const(a)
            if node.op in ("ReduceMean", "ReduceMax", "ReduceMin"):
                consts[na] = c
            else:
                consts[na] = (
                    np.where(c == 0, 0.0, np.nan)
                    if node.op in ("ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare")
                    else np.full(len(c), np.nan)
                )
        ctx.set_layout(node.outputs[0], Layout(rank if keep else rank - len(set(axes)), new_axes, consts))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None
