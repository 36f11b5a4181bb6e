"""Reshape, Flatten, Squeeze, Unsqueeze and Transpose: channel ids follow the index arithmetic.

A reshape is mapped by laying the ids out over the input's full (static, batch 1) shape and
reading them back in the output's shape. Where the ids of the output vary along one axis, that
axis carries them (Flatten: each channel's id repeated H*W times). Where they vary along several
(channel shuffle's N,C,H,W -> N,g,C/g,H,W), the largest axis carries them and the ids along the
others are merged, so that removal always deletes whole slices of one axis: deleting slices
keeps the C-order of what remains, so the reshape of the pruned tensor is the pruned reshape.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, PropagateContext, data_inputs_tracked

__all__ = ["ReshapeRule", "ShapeRule", "TransposeRule", "map_reshape"]

_MAX_GRID = 1 << 26  # positions; beyond this a reshape is pinned rather than mapped


def map_reshape(
    lay: Layout, in_shape: tuple[int, ...], out_shape: tuple[int, ...], ctx: PropagateContext
) -> Layout | NotApplicable:
    """Map ``lay`` through a reshape of ``in_shape`` into ``out_shape`` (both static)."""
    if len(lay.axes) != 1:
        return NotApplicable("channels on more than one axis cannot be reshaped")
    ((axis, ids),) = lay.axes.items()
    size = int(np.prod(in_shape))
    if size > _MAX_GRID:
        return NotApplicable(f"reshape of {size} elements is too large to map")
    if int(np.prod(out_shape)) != size:
        return NotApplicable("reshape changes the number of elements")
    bshape = [1] * len(in_shape)
    bshape[axis] = len(ids)
    grid = np.broadcast_to(ids.reshape(bshape), in_shape).reshape(out_shape)
    cgrid = np.broadcast_to(lay.const(axis).reshape(bshape), in_shape).reshape(out_shape)
    varying = [k for k in range(len(out_shape)) if out_shape[k] > 1 and not np.all(grid == np.take(grid, [0], axis=k))]
    if not varying:
        return NotApplicable("channel ids vanish in the reshape")
    carrier = max(varying, key=lambda k: (out_shape[k], -k))
    moved = np.moveaxis(grid, carrier, 0).reshape(out_shape[carrier], -1)
    cmoved = np.moveaxis(cgrid, carrier, 0).reshape(out_shape[carrier], -1)
    if len(varying) > 1:
        for row in moved:
            ctx.union(np.full(len(row), row[0]), row)
    out_ids = moved[:, 0]
    c = cmoved[:, 0]
    same = np.all(cmoved == cmoved[:, :1], axis=1)
    consts = np.where(same, c, np.nan)
    return Layout(len(out_shape), {carrier: out_ids}, {carrier: consts})


def _static(shape: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    if shape is None or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _graph_inputs_behind(tensor: gs.Tensor) -> list[gs.Variable]:
    """The graph inputs ``tensor`` is computed from (variables no node produces)."""
    seen: set[int] = set()
    leaves: list[gs.Variable] = []
    stack = [tensor]
    while stack:
        t = stack.pop()
        if id(t) in seen or isinstance(t, gs.Constant) or not t.name:
            continue  # an omitted optional input ('') is no graph input
        seen.add(id(t))
        if not t.inputs:
            leaves.append(t)
        for node in t.inputs:
            stack.extend(node.inputs)
    return leaves


def _missing_shape(ctx: PropagateContext, tensor: gs.Tensor) -> str:
    """What is still missing for a static shape: the user's --input-shape of an input it is
    computed from, or (when those are all static) a size shape inference cannot follow."""
    shape = ctx.shape(tensor)
    shown = "unknown" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    leaf_shapes = {t.name: ctx.shape(t) for t in _graph_inputs_behind(tensor)}
    dynamic = sorted(n for n, s in leaf_shapes.items() if s is None or any(d is None for d in s))
    if dynamic:
        return f"needs static shapes to map channels: {tensor.name!r} is {shown} (give --input-shape for {', '.join(repr(n) for n in dynamic)})"
    return f"needs static shapes to map channels: {tensor.name!r} is {shown} although every input shape is static (its size is computed at run time)"


class ReshapeRule:
    """Reshape, Flatten, Squeeze and Unsqueeze."""

    op_types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        in_shape, out_shape = _static(ctx.shape(node.inputs[0])), _static(ctx.shape(node.outputs[0]))
        if in_shape is None or out_shape is None:
            return NotApplicable(_missing_shape(ctx, node.inputs[0] if in_shape is None else node.outputs[0]))
        out = map_reshape(lay, in_shape, out_shape, ctx)
        if isinstance(out, NotApplicable):
            return out
        if node.op == "Reshape":
            target = _shape_entries(node.inputs[1], ctx)
            (carrier,) = out.axes
            if target is None:
                bad = _check_runtime_shape(node, ctx, out, in_shape, out_shape, carrier)
                if bad:
                    return bad
                ctx.validate_shape_input(node, 1)
                ctx.set_layout(node.outputs[0], out)
                return None
            entry = target[carrier] if carrier < len(target) else None
            if entry not in (-1, out_shape[carrier]) and entry != 0:
                return NotApplicable("target shape does not match the inferred output shape")
            if entry == 0 and carrier not in lay.axes:
                return NotApplicable("target shape copies (0) a dimension that changes")
            if entry is not None and not isinstance(entry, int):
                return NotApplicable("target shape entry of the channel axis is computed at run time")
        ctx.set_layout(node.outputs[0], out)
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        if node.op != "Reshape":
            return
        out_lay = ctx.analysis.layouts.get(node.outputs[0].name)
        if out_lay is None:
            return
        ((carrier, ids),) = out_lay.axes.items()
        kept = int(ctx.keep(node.outputs[0], carrier, len(ids)).sum())
        if ctx.param(node.inputs[1]) is None:
            # Computed at run time from the pruned tensor (checked by the analysis), or with the
            # channel entry a constant part of a Concat: that part gets the kept count.
            entry = _concat_constant_entry(node.inputs[1], carrier, ctx)
            if entry is not None and kept != len(ids):
                concat, index, offset = entry
                part = np.array(ctx.param_values(concat, index), copy=True)
                if int(part[offset]) == len(ids):
                    part[offset] = kept
                    ctx.set_param(concat, index, part)
            return
        shape = ctx.param_values(node, 1)
        if int(shape[carrier]) in (-1, 0) or kept == len(ids):
            return
        new = np.array(shape, copy=True)
        new[carrier] = kept
        ctx.set_param(node, 1, new)


def _check_runtime_shape(
    node: gs.Node,
    ctx: PropagateContext,
    out: Layout,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    carrier: int,
) -> NotApplicable | None:
    """A target shape computed from Shape() of tensors with channels must follow the channel
    count: after removing the first k channel groups of the output (k = 1, 2), evaluating it
    with the shapes those tensors would then have must give exactly the pruned output shape."""
    sources = ctx.runtime_sources(node.inputs[1])
    if sources is None:
        return NotApplicable("target shape is neither constant nor computed from shapes")
    x = node.inputs[0]
    tensors = {name: ctx.layouts[name] for name in sources | {x.name} if name in ctx.layouts}
    if any(len(lay.axes) != 1 for lay in tensors.values()):
        return NotApplicable("target shape reads a tensor with channels on several axes")
    carrier_roots = list(dict.fromkeys(ctx.uf.find(int(i)) for i in out.axes[carrier]))
    allow_zero = int(node.attrs.get("allowzero", 0))
    for k in (1, 2):
        if len(carrier_roots) - k < 1:
            break
        gone = set(carrier_roots[:k])
        probes = {}
        for name, lay in tensors.items():
            ((axis, ids),) = lay.axes.items()
            shape = list(ctx.shapes.get(name) or ())
            if len(shape) != lay.rank or any(d is None for d in shape):
                return NotApplicable(f"shape of {name!r} is unknown")
            shape[axis] -= sum(1 for i in ids if ctx.uf.find(int(i)) in gone)
            probes[name] = tuple(shape)
        expected = list(out_shape)
        expected[carrier] -= sum(1 for i in out.axes[carrier] if ctx.uf.find(int(i)) in gone)
        value = ctx.runtime_value(node.inputs[1], probes)
        if value is None or len(np.ravel(value)) != len(expected):
            return NotApplicable("target shape computed at run time could not be evaluated")
        probe_in = probes[x.name]
        got = [int(v) for v in np.ravel(value)]
        resolved = [probe_in[i] if (v == 0 and not allow_zero) else v for i, v in enumerate(got)]
        if -1 in resolved:
            known = int(np.prod([v for v in resolved if v != -1]))
            resolved[resolved.index(-1)] = int(np.prod(probe_in)) // max(known, 1)
        if (
            resolved != expected
            and _concat_constant_entry(node.inputs[1], carrier, ctx) is not None
            and got[carrier] == out_shape[carrier]
        ):
            # [N, 512] as Concat(Shape(x)[:1], [512]) (torch's view): the surgery writes the
            # kept count into the Concat's constant part, as it does for a constant target.
            resolved[carrier] = expected[carrier]
        if resolved != expected:
            return NotApplicable("target shape computed at run time would not follow the removed channels")
    return None


def _concat_constant_entry(
    target: gs.Tensor, position: int, ctx: PropagateContext | ApplyContext
) -> tuple[gs.Node, int, int] | None:
    """(Concat, input index, offset) when entry ``position`` of a run-time target shape comes
    from a constant part of the Concat that builds it; None otherwise."""
    if len(target.inputs) != 1 or target.inputs[0].op != "Concat":
        return None
    concat = target.inputs[0]
    shapes = ctx.shapes if isinstance(ctx, PropagateContext) else ctx.analysis.shapes
    start = 0
    for index, part in enumerate(concat.inputs):
        p = ctx.param(part)
        shape = shapes.get(part.name) if p is None else tuple(np.asarray(p.values).shape)
        if shape is None or len(shape) != 1 or shape[0] is None:
            return None
        if start <= position < start + shape[0]:
            return (concat, index, position - start) if p is not None else None
        start += shape[0]
    return None


def _shape_entries(t: gs.Tensor, ctx: PropagateContext) -> list[int | str] | None:
    """The target shape of a Reshape: ints where constant, 'dim' where read from a Shape."""
    p = ctx.param(t)
    if p is not None:
        return [int(v) for v in np.asarray(p.values).reshape(-1)]
    return None


class TransposeRule:
    op_types = ("Transpose",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        perm = node.attrs.get("perm")
        perm = list(range(lay.rank))[::-1] if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(lay.rank)):  # onnx's checks miss it when shapes are unknown
            ctx.invalid(f"perm {perm} is not a permutation of the input's {lay.rank} axes")
        inverse = {src: dst for dst, src in enumerate(perm)}
        ctx.set_layout(
            node.outputs[0],
            Layout(
                lay.rank, {inverse[a]: v for a, v in lay.axes.items()}, {inverse[a]: v for a, v in lay.consts.items()}
            ),
        )
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


class ShapeRule:
    """Shape(x): its output carries no channels. Whether a channel count read from it matters
    is decided where the value is used (see analysis._pin_channel_counts_read_at_run_time)."""

    op_types = ("Shape", "Size")
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None
