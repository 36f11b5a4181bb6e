"""Reconstruction: after channels are removed, refit the weights (and bias) of each layer that
read them by least squares on calibration activations, so that its outputs match the
original's as closely as possible (He et al. 2017, "Channel Pruning for Accelerating Very Deep
Neural Networks"; Luo et al. 2017, ThiNet). No gradients: a closed-form ridge solve per layer
on sampled output positions, regularised towards the weights the surgery left.

Layer-wise: each reader is refitted on the *original* model's activations (its kept input
channels -> its original output), independently of the others; with ``inputs="pruned"``
(``--reconstruct-from pruned``) sequentially instead, on the pruned model's activations with
the readers before it refitted first (reconstruction_sequential). Readers are the layers whose
rule's layer semantics give their input as rows of the weight matrix (Conv, Gemm, MatMul with a
2-D weight, and users' rules built on them):
- removed channels that pass through a depthwise Conv (the same channel on both sides) are read
  by the first layer after it that mixes channels, the projection: that one is refitted;
- a grouped Conv is one least-squares problem per group (its kept outputs on its kept inputs);
- a reader followed by a BatchNormalization is fitted to the BatchNormalization's input: each
  output channel is its own problem and the BatchNormalization a per-channel affine map, so
  that is the fit of its output too (the ridge measured on the folded weights);
- a weight computed by nodes (Constant, Cast -> Mul of int8 values...) is replaced by a float
  initializer with the refitted values and the nodes that computed it go; a quantized weight
  (QDQ, FakeQuantize) is left on its quantized path.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from . import least_squares
from .analysis import ChannelAnalysis, import_graph
from .compensation import removed_id_mask
from .errors import UnsupportedModel
from .layer_params import WeightWriter, layer_params
from .least_squares import RIDGES, Problem, factor
from .node_names import nodes_by_name
from .params import InitializerCache, ParamResolver, is_quantized_chain
from .planning import PruningPlan
from .rules import Layer, RuleRegistry, default_registry
from .runtime import session
from .validation import model_opset

__all__ = ["ReconstructedLayer", "ReconstructionCache", "reconstruct"]


@dataclass(frozen=True)
class ReconstructedLayer:
    node: str
    positions: int
    error_before: float  # relative RMS error of the layer's output on the samples
    error_after: float


class ReconstructionCache:
    """What reconstruction computes from the original model and one set of calibration
    samples alone, kept across calls with both the same (the fidelity search's trials): each
    reader's row factors per half of the samples, and the refits solved so far (by readers,
    group, kept inputs and outputs and the weights they started from). An object the caller
    holds: nothing is kept between runs; used with other samples it raises ValueError. With
    sequential reconstruction also the original readers' outputs at their sampled positions."""

    def __init__(self) -> None:
        self._feeds: tuple | None = None
        self._held: Sequence[Mapping[str, np.ndarray]] = ()  # keeps the samples (and their ids) alive
        self.factors: dict[str, list[list[np.ndarray]] | None] = {}  # reader -> per half, per group
        self.positions: dict[str, int] = {}
        self.fits: dict[tuple, tuple[np.ndarray | None, float, float, float]] = {}
        # sequential reconstruction: the original layer's outputs at its sampled positions, per half
        self.targets: dict[str, list[np.ndarray] | None] = {}

    def bind(self, feeds: Sequence[Mapping[str, np.ndarray]], settings: tuple) -> None:
        """Check that the cache serves these samples with these settings (positions, seed, ridges)."""
        ids = (tuple(id(f) for f in feeds), settings)
        if self._feeds is None:
            self._feeds, self._held = ids, list(feeds)
        elif ids != self._feeds:
            raise ValueError("a ReconstructionCache serves one set of calibration samples and settings")


@dataclass
class _Reader:
    """A reader of removed channels, or readers sharing one weight (an unrolled recurrent
    cell's Gemm at every time step): fitted together on their pooled rows, written once."""

    nodes: list[onnx.NodeProto]  # in the original
    layer: Layer
    keep_in: np.ndarray


def _rng(seed: int, node: str) -> np.random.Generator:
    """A reader's own sampling stream: its rows do not depend on which other readers are refitted."""
    return np.random.default_rng([seed, zlib.crc32(node.encode())])


def _readers(
    original: onnx.ModelProto, analysis: ChannelAnalysis, removed_ids: np.ndarray, registry: RuleRegistry, opset: int
) -> list[_Reader]:
    """The refittable readers of removed channels, those sharing a weight (and bias, and
    attributes, and kept inputs) grouped."""
    originals = nodes_by_name(original.graph.node)  # the analysis names nodes as load_model does
    groups: dict[tuple, _Reader] = {}
    for sink in analysis.sinks:
        ids = analysis.layouts[sink.tensor].axes[sink.axis]
        if not removed_ids[ids].any():
            continue
        node = originals[sink.node]
        layer = registry.layer(node, opset)
        if layer is None or sink.input_index != layer.data_index or not layer.refittable:
            continue
        keep_in = ~removed_ids[ids]
        params = [node.input[i] if len(node.input) > i else "" for i in (layer.weight_index, layer.bias_index or 0)]
        attrs = sorted((k, repr(v)) for k, v in layer.attrs.items())
        key = (node.op_type, node.domain, *params, tuple(attrs), keep_in.tobytes())
        if key in groups and sink.node not in {n.name for n in groups[key].nodes}:
            groups[key].nodes.append(node)
        else:
            groups.setdefault(key, _Reader([node], layer, keep_in))
    return list(groups.values())


def _factors(
    reader: str,
    layer: Layer,
    x: np.ndarray,
    w_shape: tuple[int, ...],
    positions: int,
    halves: int,
    seed: int,
) -> tuple[list[list[np.ndarray]], int] | None:
    """Per half of the samples in ``x`` (batch first), per group of the layer: the factor of
    its input rows (least_squares.factor), and the number of rows; None when the layer gives
    no rows."""
    rng = _rng(seed, reader)
    parts = [x[: len(x) // 2], x[len(x) // 2 :]] if halves == 2 else [x]
    out, count = [], 0
    for h in parts:
        rows = layer.input_rows(h, w_shape, positions // len(parts), rng)
        if rows is None:
            return None
        rows = np.asarray(rows, dtype=np.float64)
        count += len(rows)
        g = layer.groups
        if g < 1 or rows.shape[1] % g:
            return None
        width = rows.shape[1] // g
        out.append([factor(rows[:, i * width : (i + 1) * width]) for i in range(g)])
    return out, count


INPUTS = ("original", "pruned")


def reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    registry: RuleRegistry | None = None,
    positions: int = 8192,
    ridge: float = 1e-5,
    ridges: Sequence[float] = RIDGES,
    seed: int = 0,
    source: str = "<model>",
    progress: Callable[[int, int], None] | None = None,
    cache: ReconstructionCache | None = None,
    inputs: str = "original",
    levels: int | None = None,
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """A copy of ``pruned`` with the readers of removed channels refitted (see module doc);
    ``source``, the model file, names it in errors; ``progress(done, total)`` counts the
    readers refitted; ``cache`` keeps what does not depend on the plan for the next call
    with the same original and ``feeds`` (the result is the same with or without it).
    ``inputs``: what each reader is fitted on, "original" (the original's activations, every
    reader independently) or "pruned" (sequential: the pruned model's, with the readers
    upstream already refitted; reconstruction_sequential). ``levels`` (with "pruned"): only the
    shallowest ``levels`` depth levels in sequence, the deeper readers on the original's
    activations as the independent refit fits them (None: every level; 0 or 1: the independent
    refit, level 0 reading what the original computed)."""
    if inputs not in INPUTS:
        raise ValueError(f"reconstruct: inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    if levels is not None and levels < 0:
        raise ValueError(f"reconstruct: levels must be >= 0 or None, got {levels}")
    registry = registry or default_registry()
    cache = cache or ReconstructionCache()
    cache.bind(feeds, (positions, ridge, tuple(ridges), seed))
    with least_squares.one_blas_thread():
        return _reconstruct(
            original,
            pruned,
            analysis,
            plan,
            feeds,
            registry,
            _Settings(positions, ridge, tuple(ridges), seed, source, inputs, levels),
            progress,
            cache,
        )


@dataclass(frozen=True)
class _Settings:
    positions: int
    ridge: float
    ridges: tuple[float, ...]
    seed: int
    source: str
    inputs: str
    levels: int | None = None  # sequential levels (inputs "pruned"); None: all


@dataclass(frozen=True)
class _Start:
    """What one reader's refit starts from: the original layer ([out, in/groups · k] and its
    bias as added), the pruned layer's weights and bias, the output channels kept."""

    targets: tuple[onnx.NodeProto, ...]  # the reader's nodes in the model being refitted
    w_mat: np.ndarray
    b: np.ndarray
    w_cur: np.ndarray
    b_cur: np.ndarray
    w_param: object
    keep_out: np.ndarray
    has_bias: bool
    groups: int
    w_shape: tuple[int, ...]  # the pruned weight's, as stored
    w_shape_original: tuple[int, ...]


def _reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    registry: RuleRegistry,
    settings: _Settings,
    progress: Callable[[int, int], None] | None,
    cache: ReconstructionCache,
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """reconstruct's work (its arguments resolved)."""
    from . import reconstruction_sequential as sequential

    opset = model_opset(original)
    removed_ids = removed_id_mask(analysis, plan)
    todo = _readers(original, analysis, removed_ids, registry, opset)
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    if not todo:
        return out, ()

    graph = import_graph(original)
    params = ParamResolver(InitializerCache(original), graph)
    g_orig = {n.name: n for n in graph.nodes}
    halves = 2 if len(feeds) >= 2 and settings.ridges else 1
    steps = [todo] if settings.inputs == "original" else sequential.levels(original, analysis, removed_ids, todo)
    cap = settings.levels
    if cap is not None and len(steps) > max(cap, 1):
        # Past the cap the deeper readers are one step fitted on the original's activations
        # (the independent refit's): a bounded number of runs of the pruned model per refit.
        steps = [*steps[: max(cap, 1)], [r for s in steps[max(cap, 1) :] for r in s]]
        on_original = {0, len(steps) - 1}
    else:
        on_original = {0}
    # Level 0 reads what the original computed, and the deeper step past a cap is fitted as
    # if it did: the cached factors of the original's rows serve them.
    _cache_factors(
        original,
        [r for i in sorted(on_original) for r in steps[i]],
        g_orig,
        params,
        feeds,
        cache,
        settings.positions,
        halves,
        settings.seed,
        settings.source,
    )

    pruned_graph = import_graph(out)  # the pruned model's weights, read through Constant nodes and chains
    pruned_params = ParamResolver()
    g_pruned = {n.name: n for n in pruned_graph.nodes}
    writer = WeightWriter(out)
    done: list[ReconstructedLayer] = []
    count = 0
    for depth, step in enumerate(steps):
        starts = [
            _start(r, writer, g_orig, params, g_pruned, pruned_params, analysis, removed_ids, settings.source)
            for r in step
        ]
        rows = (
            None
            if depth in on_original
            else sequential.sampled_rows(
                original, out, [(r, s) for r, s in zip(step, starts) if s is not None], feeds, cache, settings, halves
            )
        )
        for reader, start in zip(step, starts):
            if progress:
                progress(count, len(todo))
            count += 1
            if start is None:
                continue
            names = tuple(n.name for n in reader.nodes)
            if rows is None:  # the original's inputs: column selections of the cached factors
                factors = [cache.factors.get(n) for n in names]
                if any(f is None for f in factors):
                    continue
                per_half = [
                    [_pool([f[h][g] for f in factors]) for g in range(len(factors[0][h]))] for h in range(halves)
                ]  # type: ignore[index]

                def problems(
                    g: int,
                    select: np.ndarray,
                    outs: np.ndarray,
                    w_aug: np.ndarray,
                    p: list = per_half,
                    n: int = start.groups,
                ) -> list[Problem] | None:
                    if len(p[0]) != n or any(h[g].shape[1] != w_aug.shape[1] for h in p):
                        return None
                    return [Problem(h[g], select, w_aug) for h in p]

                key: tuple | None = (names, reader.keep_in.tobytes(), start.keep_out.tobytes(), start.has_bias)
                n_rows = sum(cache.positions[n] for n in names)
            else:
                sampled = rows.get(names)
                if sampled is None:
                    continue
                problems, key, n_rows = sampled.problems(start.has_bias), None, sampled.count
            fitted = _refit_groups(problems, start, reader.keep_in, settings.ridge, settings.ridges, cache, key)
            if fitted is None:
                continue
            w_new, b_new, err_b, err_a = fitted
            if err_a >= err_b:
                continue
            writer.write(list(start.targets), reader.layer, w_new, b_new if start.has_bias else None, start.w_param)
            done.extend(ReconstructedLayer(n.name, n_rows, err_b, err_a) for n in reader.nodes)
    writer.finish()
    if progress:
        progress(len(todo), len(todo))
    return out, tuple(done)


def _start(
    reader: _Reader,
    writer: WeightWriter,
    g_orig: Mapping[str, object],
    params: ParamResolver,
    g_pruned: Mapping[str, object],
    pruned_params: ParamResolver,
    analysis: ChannelAnalysis,
    removed_ids: np.ndarray,
    source: str,
) -> _Start | None:
    """What ``reader``'s refit starts from, or None when it is not refitted (a quantized weight,
    a bias that is not a constant, readers of one weight the surgery left different)."""
    node, layer = reader.nodes[0], reader.layer
    targets = [writer.nodes.get(n.name) for n in reader.nodes]
    if any(t is None or t.op_type != node.op_type or t.name not in g_pruned for t in targets):
        raise UnsupportedModel(f"{source}: internal: layer {node.name!r} ({node.op_type}) is not in the pruned model")
    w_orig = params(g_orig[node.name].inputs[layer.weight_index])  # type: ignore[attr-defined]
    if w_orig is None or is_quantized_chain(w_orig):
        return None  # a quantized weight stays on its quantized path
    w_mat = layer.weight_matrix(np.asarray(w_orig.values, dtype=np.float64))  # [out, in/groups · k]
    b = np.zeros(w_mat.shape[0])
    bi, scale = layer.bias_index, layer.bias_scale
    if bi is not None and len(node.input) > bi and node.input[bi]:
        bp = params(g_orig[node.name].inputs[bi])  # type: ignore[attr-defined]
        if bp is None or bp.values.size != b.size:
            return None
        b = scale * np.asarray(bp.values, dtype=np.float64).reshape(-1)
    currents = [layer_params(g_pruned[n.name], pruned_params, layer) for n in reader.nodes]  # type: ignore[arg-type]
    if any(c is None for c in currents):
        return None
    w_cur, b_cur, w_param = currents[0]  # type: ignore[misc]
    if any(not (np.array_equal(c[0], w_cur) and np.array_equal(c[1], b_cur)) for c in currents[1:]):  # type: ignore[index]
        return None  # readers of one weight the surgery left different: not one refit
    # Output channels the surgery kept (the reader may be a pruned source too).
    out_lay = analysis.layouts.get(node.output[0])
    keep_out = np.ones(w_mat.shape[0], dtype=bool)
    if out_lay is not None:
        (oids,) = [v for v in out_lay.axes.values()][:1]
        if len(oids) == w_mat.shape[0]:
            keep_out = ~removed_ids[oids]
    has_bias = bi is not None and scale != 0  # a bias scaled by 0 (Gemm beta=0) stays as it is
    targets_found = tuple(t for t in targets if t is not None)
    shapes = tuple(np.shape(w_param.values)), tuple(np.shape(w_orig.values))
    return _Start(targets_found, w_mat, b, w_cur, b_cur, w_param, keep_out, has_bias, layer.groups, *shapes)


def _pool(factors: Sequence[np.ndarray]) -> np.ndarray:
    """One factor for the pooled rows of readers sharing a weight (F^T F summed)."""
    if len(factors) == 1:
        return factors[0]
    stacked = np.concatenate(factors)
    return stacked if len(stacked) <= stacked.shape[1] else np.linalg.qr(stacked, mode="r")


def _cache_factors(
    original: onnx.ModelProto,
    todo: Sequence[_Reader],
    g_orig: Mapping[str, object],
    params: ParamResolver,
    feeds: Sequence[Mapping[str, np.ndarray]],
    cache: ReconstructionCache,
    positions: int,
    halves: int,
    seed: int,
    source: str,
) -> None:
    """The row factors of the readers not in ``cache`` yet, from the original's activations at
    their inputs (one run over the samples for all of them)."""
    missing = [(n, r.layer) for r in todo for n in r.nodes if n.name not in cache.factors]
    if not missing:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(original)
    names = sorted({n.input[layer.data_index] for n, layer in missing})
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    run = session(
        probe, source=source, what="the model with the reconstructed layers' inputs as outputs", optimize=True
    )
    acts: dict[str, list[np.ndarray]] = defaultdict(list)
    for feed in feeds:
        for n, v in zip(names, run.run(feed, names)):
            acts[n].append(v)
    # As the model computed them (float32): the layers' input_rows convert the sampled rows
    # to float64, which is exact, instead of a float64 copy of every activation.
    values = {n: np.concatenate(v) if len(v) > 1 else v[0] for n, v in acts.items()}
    del acts
    for node, layer in missing:
        w = params(g_orig[node.name].inputs[layer.weight_index])  # type: ignore[attr-defined]
        shape = None if w is None else tuple(np.shape(w.values))
        made = (
            None
            if shape is None
            else _factors(node.name, layer, values[node.input[layer.data_index]], shape, positions, halves, seed)
        )
        cache.factors[node.name] = None if made is None else made[0]
        cache.positions[node.name] = 0 if made is None else made[1]


def _refit_groups(
    problems: Callable[[int, np.ndarray, np.ndarray, np.ndarray], list[Problem] | None],
    start: _Start,
    keep_in: np.ndarray,
    ridge: float,
    ridges: Sequence[float],
    cache: ReconstructionCache,
    key: tuple | None,
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Least squares per group of the layer (one group unless it is a grouped Conv): group g's
    kept outputs are refitted on group g's kept inputs only, against the original's outputs
    there; ``problems(g, select, outs, w_aug)``: group g's problem per half of the samples
    (``select``: its kept columns, and the ones column with a bias, among the original's;
    ``outs``: its kept outputs; ``w_aug``: their original weights and bias), None when the
    samples do not have the layer's columns. Returns the new
    weights and bias in the pruned layer's shape [kept out, kept in/groups · k] and the
    relative RMS error before and after, or None when the pruned layer does not have the
    shape the plan implies. ``key``: the fits are kept in ``cache`` under it (None: not kept)."""
    w_mat, b, w_cur, b_cur, keep_out, has_bias = (
        start.w_mat,
        start.b,
        start.w_cur,
        start.b_cur,
        start.keep_out,
        start.has_bias,
    )
    n_out, n_cols = w_mat.shape
    groups = start.groups
    n_in = len(keep_in)
    if groups < 1 or n_out % groups or n_in % groups:
        return None
    k = n_cols * groups // n_in  # columns per input channel (kernel positions)
    out_g, in_g = n_out // groups, n_in // groups
    kept_out = np.flatnonzero(keep_out)
    if w_cur.shape[0] != len(kept_out) or b_cur.shape[0] != len(kept_out):
        return None
    w_new, b_new = w_cur.copy(), b_cur.copy()
    sq_b = sq_a = sq_y = 0.0
    for g in range(groups):
        outs = np.flatnonzero(keep_out[g * out_g : (g + 1) * out_g]) + g * out_g
        if len(outs) == 0:
            continue  # a group dropped whole
        cols = np.repeat(keep_in[g * in_g : (g + 1) * in_g], k)
        cur = np.searchsorted(kept_out, outs)  # their rows in the pruned layer
        if int(cols.sum()) != w_cur.shape[1]:
            return None
        theta0 = w_cur[cur].T
        if has_bias:
            theta0 = np.concatenate([theta0, b_cur[cur][None, :]], axis=0)
        start_digest = hashlib.blake2b(np.ascontiguousarray(theta0).tobytes(), digest_size=16).digest()
        fkey = None if key is None else (*key, g, start_digest)
        if fkey is None or fkey not in cache.fits:
            select = np.flatnonzero(np.append(cols, has_bias))  # kept columns (and the ones column)
            w_aug = np.concatenate([w_mat[outs], b[outs][:, None]], axis=1)
            group_problems = problems(g, select, outs, w_aug)
            if group_problems is None:
                return None
            theta = least_squares.fit(group_problems, theta0, ridge, ridges)
            fit = (
                theta,
                sum(p.error(theta0) for p in group_problems),
                sum(p.error(theta0 if theta is None else theta) for p in group_problems),
                sum(p.energy() for p in group_problems),
            )
            if fkey is not None:
                cache.fits[fkey] = fit
        else:
            fit = cache.fits[fkey]
        theta, e_b, e_a, e_y = fit
        sq_b, sq_a, sq_y = sq_b + e_b, sq_a + e_a, sq_y + e_y
        if theta is None:
            continue
        w_new[cur] = (theta[:-1] if has_bias else theta).T
        if has_bias:
            b_new[cur] = theta[-1]
    scale = float(np.sqrt(sq_y)) or 1.0
    return w_new, b_new, float(np.sqrt(sq_b)) / scale, float(np.sqrt(sq_a)) / scale
