"""Re-calibration after pruning: the kept channels' activation statistics drift when their
inputs lose channels (EagleEye, Li et al. 2020: stale BatchNormalization statistics explain
much of the loss right after pruning). Measured on calibration samples, every weight-bearing
layer downstream of a removal gets a per-channel affine correction of its output,

    y -> a * y + c,   a = std_original / std_pruned,   c = mean_original - a * mean_pruned,

so that each kept channel's mean and variance over the calibration samples are the original
model's again. The correction is folded, exactly, into the BatchNormalization that reads the
layer's output alone when there is one (its scale and bias: ``rules.ChannelAffine``), else
into the layer's own weights (rows scaled by a) and bias (a * b + c). Exact means: the pruned
model then computes a * y + c at that tensor, nothing more; the mean and variance it matches
are those of the calibration samples, and the activation after it (ReLU...) sees corrected
moments, not a corrected distribution.

Layers are corrected in dependency order, one depth level per pass over the calibration
samples (each level measured after the levels before it were corrected); beyond
``max_passes`` levels, consecutive levels share a pass (the deeper ones then corrected from
statistics measured before the shallower ones' corrections), or, with ``shallow_only`` (the
fidelity search's trials), the levels beyond are left uncorrected: on the openWakeWord
embedding, trials sharing 4 passes judged plans worse than the delivered model is, and the
0.95 search cut 12.5% of the MACs against 23.6% with the 4 shallowest levels exact, 28.4%
with 8, 47.9% with every level in its own pass.

A pass runs the model cut to the tensors it measures (nothing downstream of them), and a
tensor whose computation is unchanged since it was measured on the same samples (same nodes
and weights upstream: tensor_cones) is not measured again: the search's trials differ from
each other in a few layers. Both give the same sums as the whole model run again, bit for bit.
The delivered model's passes also start from the tensors the previous pass kept where its
corrections begin (``carry_forward``), so the passes together run the model about once: the
same values fed, but onnxruntime may fuse the nodes reading a fed tensor differently (on
YOLO26n 14 of 237 weights then differ from the passes run from the input, by <= 1e-7 relative).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.helper

from .analysis import ChannelAnalysis, import_graph
from .compensation import removed_id_mask
from .layer_params import WeightWriter, layer_params
from .node_names import nodes_by_name
from .params import ParamResolver, is_quantized_chain
from .planning import PruningPlan
from .rules import RuleRegistry, default_registry
from .rules.base import node_attrs
from .runtime import session
from .tensor_cones import cone_digests, cone_model, node_reads
from .validation import model_opset

__all__ = ["RecalibratedLayer", "recalibrate"]


@dataclass(frozen=True)
class RecalibratedLayer:
    """One corrected layer: its kept channels, where the correction went (the layer itself or
    the BatchNormalization reading it), and the drift of its output on the calibration samples
    before and after (mean over channels of |mean_pruned - mean_original| / std_original, and
    of |std_pruned / std_original - 1|)."""

    node: str
    channels: int
    folded_into: str
    mean_shift_before: float
    mean_shift_after: float
    std_change_before: float
    std_change_after: float


@dataclass(frozen=True)
class _Target:
    node: onnx.NodeProto  # the layer, in the original
    axis: int
    keep: np.ndarray  # its output channels the plan kept
    depth: int
    affine: str | None  # the BatchNormalization reading its output alone, if any


class _Moments:
    """Per-channel running sums of a tensor over the samples."""

    def __init__(self) -> None:
        self.n = 0
        self.s: np.ndarray | float = 0.0
        self.s2: np.ndarray | float = 0.0

    def add(self, value: np.ndarray, axis: int) -> None:
        v = np.moveaxis(np.asarray(value, np.float64), axis, 0).reshape(value.shape[axis], -1)
        self.n += v.shape[1]
        self.s = self.s + v.sum(axis=1)
        self.s2 = self.s2 + np.square(v).sum(axis=1)

    def kept(self, keep: np.ndarray) -> _Moments:
        out = _Moments()
        out.n, out.s, out.s2 = self.n, np.asarray(self.s)[keep], np.asarray(self.s2)[keep]
        return out

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(self.s) / max(self.n, 1)
        var = np.maximum(np.asarray(self.s2) / max(self.n, 1) - mean**2, 0.0)
        return mean, np.sqrt(var)


def _moments(
    model: onnx.ModelProto,
    names: Mapping[str, int],
    feeds: Sequence[Mapping[str, np.ndarray]],
    source: str,
    memo: dict[tuple[bytes, int], list[_Moments]] | None = None,
    carry: dict[bytes, list[np.ndarray]] | None = None,
    keep: Sequence[str] = (),
) -> dict[str, list[_Moments]]:
    """Per tensor (name -> channel axis): its per-channel sums over the first and the second
    half of ``feeds`` (one half when there is one sample). The model run is cut to the nodes
    those tensors need. ``memo`` (sums measured before on the same ``feeds``, by the digest of
    what computes the tensor: tensor_cones) answers the tensors whose computation it has seen.
    ``carry`` (per-sample values of tensors computed before on the same ``feeds``, by digest)
    is fed instead of computing them again, and is replaced by the values of the tensors in
    ``keep`` (those this run computes, and those it had)."""
    digests = cone_digests(model) if memo is not None or carry is not None else {}
    acc: dict[str, list[_Moments]] = {}
    missing: dict[str, int] = {}
    for n, axis in names.items():
        hit = memo.get((digests[n], axis)) if memo is not None and n in digests else None
        if hit is not None:
            acc[n] = hit
        else:
            missing[n] = axis
    if not missing:
        return acc
    carried = carry or {}
    given = {n: onnx.helper.np_dtype_to_tensor_dtype(carried[d][0].dtype) for n, d in digests.items() if d in carried}
    cut = cone_model(model, missing, given)
    fed = [v.name for v in cut.graph.input if v.name in given]
    computed = {o for node in cut.graph.node for o in node.output}
    extra = [n for n in dict.fromkeys(keep) if n in computed and n not in missing]
    cut.graph.output.extend([onnx.ValueInfoProto(name=n) for n in extra])
    run = session(cut, source=source, what="the model with the re-calibrated layers' outputs as outputs", optimize=True)
    order = list(missing)
    halves = 2 if len(feeds) >= 2 else 1
    acc.update({n: [_Moments() for _ in range(halves)] for n in order})
    kept: dict[str, list[np.ndarray]] = {n: [] for n in extra}
    for i, feed in enumerate(feeds):
        h = int(halves == 2 and i >= len(feeds) // 2)
        values = run.run({**feed, **{n: carried[digests[n]][i] for n in fed}}, order + extra)
        for n, v in zip(order, values):
            acc[n][h].add(v, missing[n])
        for n, v in zip(extra, values[len(order) :]):
            kept[n].append(v)
    if memo is not None:
        memo.update({(digests[n], missing[n]): acc[n] for n in order if n in digests})
    if carry is not None:  # tensors only: a sequence (a list per sample) cannot be fed back as one
        after = {digests[n]: kept[n] for n in extra if all(isinstance(v, np.ndarray) for v in kept[n])}
        after.update({digests[n]: carried[digests[n]] for n in keep if n in digests and digests[n] in carried})
        carry.clear()
        carry.update(after)
    return acc


def _frontier(model: onnx.ModelProto, changed: set[str]) -> list[str]:
    """The tensors a pass after this one may start from: those the nodes downstream of the
    ``changed`` ones (included) read and that none of them computes (not weights, not the
    graph's inputs). Corrections to the changed nodes leave their values as they are."""
    graph = model.graph
    down: set[str] = set()
    tensors: set[str] = set()
    for node in graph.node:  # topological; an If / Loop also reads what its subgraphs read
        if node.name in changed or any(i in tensors for i in node_reads(node)):
            down.add(node.name)
            tensors.update(node.output)
    skip = tensors | {t.name for t in graph.initializer} | {v.name for v in graph.input} | {""}
    return sorted({i for node in graph.node if node.name in down for i in node_reads(node)} - skip)


def _pooled(parts: Sequence[_Moments]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over every half."""
    whole = _Moments()
    for p in parts:
        whole.n += p.n
        whole.s = whole.s + p.s
        whole.s2 = whole.s2 + p.s2
    return whole.mean_std()


def _correction(
    now: Sequence[_Moments], reference: Sequence[_Moments], variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per channel y -> a * y + c matching the reference's mean and (with ``variance``) standard
    deviation. With two halves of the samples, cross-validated: a correction computed on one
    half is judged on the other (squared differences of the moments from the original's,
    relative to its variance, both ways round); a channel whose full correction does worse
    there than none gets the mean's alone if that does better than none, else none (a
    correction that does not carry over to other samples: a channel seen at few positions,
    noise)."""
    mean_p, std_p = _pooled(now)
    mean_o, std_o = _pooled(reference)
    kinds = ("none", "mean", "full") if variance else ("none", "mean")
    choice = np.full(mean_p.shape, len(kinds) - 1)
    if len(now) == 2 and len(reference) == 2:
        errors = np.zeros((len(kinds), *mean_p.shape))
        for i in (0, 1):
            mp, sp = now[i].mean_std()
            mo, so = reference[i].mean_std()
            jp, jsp = now[1 - i].mean_std()
            jo, jso = reference[1 - i].mean_std()
            floor = max(float(np.mean(jso)), 1e-12) * 1e-3
            for k, kind in enumerate(kinds):
                a, c = _affine(kind, mp, sp, mo, so)
                errors[k] += ((a * jp + c - jo) ** 2 + (a * jsp - jso) ** 2) / np.maximum(jso, floor) ** 2
        last = len(kinds) - 1
        fallback = np.where(errors[1] < errors[0], 1, 0)
        choice = np.where(errors[last] <= errors[0], last, fallback)
    a, c = np.ones_like(mean_p), np.zeros_like(mean_p)
    for k, kind in enumerate(kinds):
        ak, ck = _affine(kind, mean_p, std_p, mean_o, std_o)
        a, c = np.where(choice == k, ak, a), np.where(choice == k, ck, c)
    return a, c


def _affine(
    kind: str, mean_p: np.ndarray, std_p: np.ndarray, mean_o: np.ndarray, std_o: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if kind == "none":
        return np.ones_like(mean_p), np.zeros_like(mean_p)
    a = np.ones_like(mean_p)
    if kind == "full":  # a channel the pruning left (nearly) constant is not blown up
        ok = std_p > 1e-3 * np.maximum(std_o, 1e-12)
        a = np.where(ok, std_o / np.where(ok, std_p, 1.0), 1.0)
    return a, mean_o - a * mean_p


def _drift(mean: np.ndarray, std: np.ndarray, mean_o: np.ndarray, std_o: np.ndarray) -> tuple[float, float]:
    floor = max(float(np.mean(std_o)), 1e-12) * 1e-3
    shift = float(np.mean(np.abs(mean - mean_o) / np.maximum(std_o, floor)))
    change = float(np.mean(np.abs(std / np.maximum(std_o, floor) - 1.0)))
    return shift, change


def _targets(
    original: onnx.ModelProto, analysis: ChannelAnalysis, removed: np.ndarray, registry: RuleRegistry, opset: int
) -> list[_Target]:
    """Weight-bearing layers whose input depends on a reader of removed channels, with their
    depth among them (1: nothing corrected upstream). A node depends on what its subgraphs
    read too (an If / Loop branch reading an outer tensor): the layers after it drift with it."""
    starts = set()
    for sink in analysis.sinks:
        if removed[analysis.layouts[sink.tensor].axes[sink.axis]].any():
            starts.add(sink.node)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in original.graph.node:
        for i in node_reads(n):  # a subgraph's read is a reader the folded correction would miss
            readers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in original.graph.output}
    level: dict[str, int] = {}  # tensor -> depth of the corrected layers upstream (0: none, absent: unaffected)
    out = []
    for name, node in nodes_by_name(original.graph.node).items():  # graph order: topological
        affected = [level[i] for i in node_reads(node) if i in level]
        if name not in starts and not affected:
            continue
        depth = max(affected, default=0)
        layer = registry.layer(node, opset)
        lay = analysis.layouts.get(node.output[0]) if node.output else None
        if layer is not None and lay is not None and len(lay.axes) == 1:
            ((axis, ids),) = lay.axes.items()
            depth += 1
            after = readers.get(node.output[0], [])
            affine = None
            if len(after) == 1 and node.output[0] not in graph_outputs:
                if registry.channel_affine(after[0], opset) is not None:
                    affine = after[0].name
            out.append(_Target(node, axis, ~removed[ids], depth, affine))
        for o in node.output:
            level[o] = depth
    return out


def recalibrate(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    registry: RuleRegistry | None = None,
    variance: bool = True,
    max_passes: int = 32,
    shallow_only: bool = False,
    source: str = "<model>",
    cache: dict[str, list[_Moments]] | None = None,
    measure: bool = True,
    memo: dict[tuple[bytes, int], list[_Moments]] | None = None,
    carry_forward: bool = True,
) -> tuple[onnx.ModelProto, tuple[RecalibratedLayer, ...]]:
    """A copy of ``pruned`` whose layers downstream of the removed channels have their output
    statistics on ``feeds`` corrected to the original's (see module doc); ``variance=False``
    corrects the means only. ``source``, the model file, names it in errors; ``cache`` keeps
    the original's statistics on ``feeds`` for the next call with the same original and feeds;
    ``shallow_only``: see the module doc; ``measure=False`` saves the measurements of the drift
    before and after (every layer's at once, over the whole model: the figures are then nan),
    the passes measure only the layers they correct. ``memo`` keeps the pruned models' statistics
    on ``feeds`` by what computes them (see _moments) for the next call with the same feeds:
    the fidelity search's trials, which differ from each other in a few layers. The result is
    the same with or without ``cache`` and ``memo``. ``carry_forward``: each pass starts from
    the tensors where the previous pass's corrections begin, kept from it, instead of the
    model's inputs (the same values; onnxruntime may round the nodes reading them differently,
    by float32 ulps: the search's trials, which must judge every plan alike, pass False)."""
    registry = registry or default_registry()
    opset = model_opset(original)
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    targets = _targets(original, analysis, removed_id_mask(analysis, plan), registry, opset)
    writer = WeightWriter(out)
    targets = [t for t in targets if t.node.name in writer.nodes and t.keep.any()]
    if not targets or not feeds:
        return out, ()
    tensors = {t.node.output[0]: t.axis for t in targets}
    reference = dict(cache or {})
    missing = {n: axis for n, axis in tensors.items() if n not in reference}
    if missing:
        reference.update(_moments(original, missing, feeds, source))  # no memo: cache keeps them
        if cache is not None:
            cache.update({n: reference[n] for n in missing})
    graph = import_graph(out)
    by_name = {n.name: n for n in graph.nodes}
    params = ParamResolver()
    memo = {} if memo is None else memo  # within one call too: a layer no correction reached upstream
    carry: dict[bytes, list[np.ndarray]] | None = {} if carry_forward else None  # see the docstring
    depths = sorted({t.depth for t in targets})
    if shallow_only:  # the first max_passes levels exactly, the deeper ones left as they are
        chunks = [np.asarray([d]) for d in depths[:max_passes]]
    else:
        chunks = np.array_split(np.asarray(depths), min(max_passes, len(depths)))
    before: dict[str, tuple[float, float]] = {}
    applied: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}  # layer -> (folded into, a, c)
    for k, chunk in enumerate(chunks):
        levels = set(chunk.tolist())
        todo = [t for t in targets if t.depth in levels]
        seen = targets if k == 0 and measure else todo  # the first pass measures every layer's drift before
        changed = {t.node.name for t in todo} | {t.affine for t in todo if t.affine is not None}
        names = {writer.nodes[t.node.name].output[0]: t.axis for t in seen}
        frontier = _frontier(out, changed) if carry is not None and k + 1 < len(chunks) else []
        now = _moments(out, names, feeds, source, memo, carry, frontier)
        for t in seen if measure else ():
            mean_o, std_o = (v[t.keep] for v in _pooled(reference[t.node.output[0]]))
            mean_p, std_p = _pooled(now[writer.nodes[t.node.name].output[0]])
            if mean_p.shape == mean_o.shape:
                before.setdefault(t.node.name, _drift(mean_p, std_p, mean_o, std_o))
        for t in todo:
            ref = [m.kept(t.keep) for m in reference[t.node.output[0]]]
            parts = now[writer.nodes[t.node.name].output[0]]
            if np.shape(parts[0].s) != np.shape(ref[0].s):
                continue
            a, c = _correction(parts, ref, variance)
            if np.all(a == 1.0) and np.all(c == 0.0):
                continue  # no correction carries over to other samples
            into = _fold(writer, by_name, params, registry, opset, t, a, c)
            if into is not None:
                applied[t.node.name] = (into, a, c)
    if not applied:
        return out, ()
    writer.finish()
    done = [t for t in targets if t.node.name in applied]
    names = {writer.nodes[t.node.name].output[0]: t.axis for t in done}
    after = _moments(out, names, feeds, source, memo, carry) if measure else {}
    result = []
    for t in done:
        into, a, c = applied[t.node.name]
        shift, change = before.get(t.node.name, (float("nan"), float("nan")))
        shift_after = change_after = float("nan")
        if measure:
            mean_o, std_o = (v[t.keep] for v in _pooled(reference[t.node.output[0]]))
            mean_p, std_p = _pooled(after[writer.nodes[t.node.name].output[0]])
            if into != t.node.name:  # folded into the BatchNormalization after the tensor measured
                mean_p, std_p = a * mean_p + c, a * std_p
            shift_after, change_after = _drift(mean_p, std_p, mean_o, std_o)
        result.append(RecalibratedLayer(t.node.name, int(t.keep.sum()), into, shift, shift_after, change, change_after))
    return out, tuple(result)


def _fold(
    writer: WeightWriter,
    by_name: Mapping[str, object],
    params: ParamResolver,
    registry: RuleRegistry,
    opset: int,
    t: _Target,
    a: np.ndarray,
    c: np.ndarray,
) -> str | None:
    """Fold y -> a * y + c into the BatchNormalization after the layer, else into the layer;
    returns the name of the node changed, None when neither can take it."""
    if t.affine is not None and t.affine in writer.nodes and t.affine in by_name:
        bn = writer.nodes[t.affine]
        rule = registry.channel_affine(bn, opset)
        g_bn = by_name[t.affine]
        values = [params(x) for x in g_bn.inputs[1:]]  # type: ignore[attr-defined]
        if rule is not None and all(v is not None and not is_quantized_chain(v) for v in values):
            arrays = tuple(np.asarray(v.values) for v in values)  # type: ignore[union-attr]
            new = rule.input_affine_params(node_attrs(bn), arrays, a, c)
            if new is not None:
                for index, value in new.items():
                    old = arrays[index - 1]
                    writer.set(bn, index, np.asarray(value).astype(old.dtype).reshape(old.shape))
                return t.affine
    node = writer.nodes[t.node.name]
    layer = registry.layer(node, opset)
    g_node = by_name.get(t.node.name)
    if layer is None or g_node is None:
        return None
    current = layer_params(g_node, params, layer)  # type: ignore[arg-type]
    if current is None:
        return None
    mat, bias, w = current
    has_bias = layer.bias_index is not None and layer.bias_scale != 0
    if mat.shape[0] != len(a) or not (has_bias or np.allclose(c, 0.0)):
        return None  # no bias to shift (MatMul): left as it is
    writer.write(node, layer, a[:, None] * mat, a * bias + c if has_bias else None, w)
    return t.node.name
