"""Concat, Split and Slice: index mappings of channel ids along an axis.

Concat on a channel axis concatenates the id vectors; Split and Slice cut them. After removal,
Split sizes and Slice bounds are rewritten to the kept counts.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .._core import Layout, NotApplicable
from .base import ApplyContext, PropagateContext, data_inputs_tracked

__all__ = ["ConcatRule", "SliceRule", "SplitRule"]


class ConcatRule:
    op_types = ("Concat",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        if not any(ctx.layout(t) is not None for t in node.inputs):
            return None
        rank = ctx.rank(node.outputs[0]) or next(ctx.layout(t).rank for t in node.inputs if ctx.layout(t))
        axis = int(node.attrs["axis"]) % rank
        shapes = [ctx.shape(t) for t in node.inputs]
        sizes = []
        for t, s in zip(node.inputs, shapes):
            lay = ctx.layout(t)
            if lay is not None and axis in lay.axes:
                sizes.append(len(lay.axes[axis]))
            elif s is not None and s[axis] is not None:
                sizes.append(int(s[axis]))
            else:
                return NotApplicable(f"size of input {t.name!r} along the concat axis is unknown")
        other_axes = sorted({a for t in node.inputs if ctx.layout(t) for a in ctx.layout(t).axes} - {axis})
        axes: dict[int, np.ndarray] = {}
        consts: dict[int, np.ndarray] = {}
        if any(ctx.layout(t) is not None and axis in ctx.layout(t).axes for t in node.inputs):
            parts, cparts = [], []
            for t, n in zip(node.inputs, sizes):
                lay = ctx.layout(t)
                parts.append(ctx.ids_for(t, axis, n, f"concatenated input {t.name!r} carries no channel ids"))
                cparts.append(
                    lay.const(axis)
                    if lay is not None and axis in lay.axes and lay.single_axis is not None
                    else np.full(n, np.nan)
                )
            axes[axis] = np.concatenate(parts)
            consts[axis] = np.concatenate(cparts)
        for a in other_axes:  # channels on another axis: every input's position i is the same channel
            n = max(len(ctx.layout(t).axes[a]) for t in node.inputs if ctx.layout(t) and a in ctx.layout(t).axes)
            ids = [ctx.ids_for(t, a, n, f"concatenated input {t.name!r} carries no channel ids") for t in node.inputs]
            for other in ids[1:]:
                ctx.union(ids[0], other)
            axes[a] = ids[0]
        if other_axes:
            consts = {}
        ctx.set_layout(node.outputs[0], Layout(rank, axes, consts))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        return None


def _split_sizes(node: gs.Node, ctx: PropagateContext | ApplyContext, dim: int) -> list[int] | None:
    if "split" in node.attrs:
        return [int(s) for s in node.attrs["split"]]
    if len(node.inputs) > 1 and node.inputs[1].name:
        p = ctx.param(node.inputs[1])
        return None if p is None else [int(s) for s in np.asarray(p.values).reshape(-1)]
    n = int(node.attrs.get("num_outputs", len(node.outputs)))
    if n <= 0:
        return None
    chunk = -(-dim // n)  # ceil, as the spec says for num_outputs
    return [min(chunk, dim - i * chunk) for i in range(n)]


class SplitRule:
    op_types = ("Split",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        axis = int(node.attrs.get("axis", 0)) % lay.rank
        if axis not in lay.axes:
            for t in node.outputs:
                ctx.set_layout(t, lay)
            return None
        ids, const = lay.axes[axis], lay.const(axis)
        sizes = _split_sizes(node, ctx, len(ids))
        if sizes is None or sum(sizes) != len(ids) or len(sizes) != len(node.outputs):
            return NotApplicable("split sizes are not constant or do not match the channels")
        start = 0
        for t, n in zip(node.outputs, sizes):
            sub = {a: v for a, v in lay.axes.items() if a != axis}
            sub[axis] = ids[start : start + n]
            c = {axis: const[start : start + n]} if lay.single_axis is not None else {}
            ctx.set_layout(t, Layout(lay.rank, sub, c))
            start += n
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        lay = ctx.analysis.layouts.get(node.inputs[0].name)
        if lay is None:
            return
        axis = int(node.attrs.get("axis", 0)) % lay.rank
        if axis not in lay.axes:
            return
        keep = ctx.keep(node.inputs[0], axis, len(lay.axes[axis]))
        sizes = _split_sizes(node, ctx, len(keep))
        assert sizes is not None
        bounds = np.cumsum([0] + sizes)
        new = np.array([int(keep[b:e].sum()) for b, e in zip(bounds[:-1], bounds[1:])], dtype=np.int64)
        if new.tolist() == sizes:
            return
        if "split" in node.attrs:
            ctx.set_attr(node, "split", new.tolist())
        elif len(node.inputs) > 1 and node.inputs[1].name:
            ctx.set_param(node, 1, new)
        elif ctx.opset < 13:
            ctx.set_attr(node, "split", new.tolist())
        else:
            ctx.drop_attr(node, "num_outputs")
            ctx.add_input(node, 1, new, "split")


def _slice_params(
    node: gs.Node, ctx: PropagateContext | ApplyContext, rank: int
) -> tuple[list[int], list[int], list[int], list[int]] | None:
    vals = []
    for i in range(1, 5):
        if len(node.inputs) > i and node.inputs[i].name:
            p = ctx.param(node.inputs[i])
            if p is None:
                return None
            vals.append([int(v) for v in np.asarray(p.values).reshape(-1)])
        else:
            vals.append(None)
    starts, ends, axes, steps = vals
    if starts is None or ends is None:
        return None
    axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    return starts, ends, axes, steps


def _norm_bound(v: int, dim: int) -> int:
    if v < 0:
        v += dim
    return max(0, min(dim, v))


class SliceRule:
    op_types = ("Slice",)
    domain = ""

    def propagate(self, node: gs.Node, ctx: PropagateContext) -> NotApplicable | None:
        bad = data_inputs_tracked(node, ctx, [0])
        if bad:
            return bad
        lay = ctx.layout(node.inputs[0])
        if lay is None:
            return None
        params = _slice_params(node, ctx, lay.rank)
        if params is None:
            return _runtime_slice(node, ctx, lay)
        starts, ends, axes, steps = params
        new_axes = dict(lay.axes)
        consts = dict(lay.consts)
        for s, e, a, st in zip(starts, ends, axes, steps):
            if a not in lay.axes:
                continue
            if st != 1:
                return NotApplicable("slices a channel axis with a step other than 1")
            n = len(lay.axes[a])
            b, f = _norm_bound(s, n), _norm_bound(e, n)
            new_axes[a] = lay.axes[a][b:f]
            if a in consts:
                consts[a] = consts[a][b:f]
        if any(len(v) == 0 for v in new_axes.values()):
            return NotApplicable("empty slice of a channel axis")
        ctx.set_layout(node.outputs[0], Layout(lay.rank, new_axes, consts))
        return None

    def apply(self, node: gs.Node, ctx: ApplyContext) -> None:
        lay = ctx.analysis.layouts.get(node.inputs[0].name)
        if lay is None:
            return
        params = _slice_params(node, ctx, lay.rank)
        if params is None:
            return  # bounds computed at run time from the pruned tensor (checked by the analysis)
        starts, ends, axes, _steps = params
        new_starts, new_ends = list(starts), list(ends)
        changed = False
        for i, a in enumerate(axes):
            if a not in lay.axes:
                continue
            n = len(lay.axes[a])
            keep = ctx.keep(node.inputs[0], a, n)
            b, f = _norm_bound(starts[i], n), _norm_bound(ends[i], n)
            nb, nf = int(keep[:b].sum()), int(keep[:f].sum())
            if (nb, nf) != (b, f) or starts[i] < 0 or ends[i] < 0 or ends[i] > n:
                new_starts[i], new_ends[i] = nb, nf
                changed = True
        if changed:
            ctx.set_param(node, 1, np.asarray(new_starts, dtype=np.int64))
            ctx.set_param(node, 2, np.asarray(new_ends, dtype=np.int64))


def _runtime_slice(node: gs.Node, ctx: PropagateContext, lay: Layout) -> NotApplicable | None:
    """Slice bounds computed from Shape(x) on the channel axis, as torch's ``x.chunk(n, 1)``:
    allowed when they are fixed fractions i/n of the channel count, with every n-th part of
    the channels losing the same number (so the fractions still cut where they should)."""
    values = [ctx.runtime_value(t) if t.name else None for t in node.inputs[1:5]]
    values += [None] * (4 - len(values))
    sources = [ctx.runtime_sources(t) for t in node.inputs[1:5] if t.name]
    x = node.inputs[0]
    if values[0] is None or values[1] is None or any(s is None for s in sources):
        return NotApplicable("slice bounds are neither constant nor computed from shapes")
    if any(name != x.name and name in ctx.layouts for s in sources for name in s):
        return NotApplicable("slice bounds read the shape of another tensor with channels")
    starts, ends = [int(v) for v in np.ravel(values[0])], [int(v) for v in np.ravel(values[1])]
    axes = [int(a) % lay.rank for a in np.ravel(values[2])] if values[2] is not None else list(range(len(starts)))
    steps = [int(v) for v in np.ravel(values[3])] if values[3] is not None else [1] * len(starts)
    new_axes, consts = dict(lay.axes), dict(lay.consts)
    shape = ctx.shape(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        if a not in lay.axes:
            continue
        ids = lay.axes[a]
        n = len(ids)
        b, f = _norm_bound(s, n), _norm_bound(e, n)
        parts = next((d for d in range(1, 9) if (b * d) % n == 0 and (f * d) % n == 0), None)
        if st != 1 or parts is None or n % parts or shape is None:
            return NotApplicable("slice bounds computed at run time are not fixed fractions of the channels")
        for k in (1, 2):
            probe = list(shape)
            probe[a] = n - k * parts
            got = [ctx.runtime_value(t, {x.name: tuple(probe)}) for t in node.inputs[1:3]]
            if any(g is None for g in got):
                return NotApplicable("slice bounds computed at run time could not be evaluated")
            i = axes.index(a)
            nb, nf = _norm_bound(int(np.ravel(got[0])[i]), probe[a]), _norm_bound(int(np.ravel(got[1])[i]), probe[a])
            if (nb, nf) != (b * probe[a] // n, f * probe[a] // n):
                return NotApplicable("slice bounds computed at run time do not scale with the channels")
        ctx.add_balance(
            list(ids.reshape(parts, -1)),
            f"bounds are computed as fractions (1/{parts}) of the channel count at run time",
        )
        new_axes[a] = ids[b:f]
        if a in consts:
            consts[a] = consts[a][b:f]
    for i in range(1, min(5, len(node.inputs))):
        if node.inputs[i].name:
            ctx.validate_shape_input(node, i)
    ctx.set_layout(node.outputs[0], Layout(lay.rank, new_axes, consts))
    return None
