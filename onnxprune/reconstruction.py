"""Reconstruction: after channels are removed, refit the weights (and bias) of each layer that
read them by least squares on calibration activations, so that its outputs match the
original's as closely as possible (He et al. 2017, "Channel Pruning for Accelerating Very Deep
Neural Networks"; Luo et al. 2017, ThiNet). No gradients: a closed-form ridge solve per layer
on sampled output positions, regularised towards the weights the surgery left.

Layer-wise: each reader is refitted on the *original* model's activations (its kept input
channels -> its original output), independently of the others. Readers are the layers whose
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
    holds: nothing is kept between runs; used with other samples it raises ValueError."""

    def __init__(self) -> None:
        self._feeds: tuple | None = None
        self._held: Sequence[Mapping[str, np.ndarray]] = ()  # keeps the samples (and their ids) alive
        self.factors: dict[str, list[list[np.ndarray]] | None] = {}  # reader -> per half, per group
        self.positions: dict[str, int] = {}
        self.fits: dict[tuple, tuple[np.ndarray | None, float, float, float]] = {}

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
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """A copy of ``pruned`` with the readers of removed channels refitted (see module doc);
    ``source``, the model file, names it in errors; ``progress(done, total)`` counts the
    readers refitted; ``cache`` keeps what does not depend on the plan for the next call
    with the same original and ``feeds`` (the result is the same with or without it)."""
    registry = registry or default_registry()
    cache = cache or ReconstructionCache()
    cache.bind(feeds, (positions, ridge, tuple(ridges), seed))
    with least_squares.one_blas_thread():
        return _reconstruct(
            original, pruned, analysis, plan, feeds, registry, positions, ridge, ridges, seed, source, progress, cache
        )


def _reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    registry: RuleRegistry,
    positions: int,
    ridge: float,
    ridges: Sequence[float],
    seed: int,
    source: str,
    progress: Callable[[int, int], None] | None,
    cache: ReconstructionCache,
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """reconstruct's work (its arguments resolved)."""
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
    halves = 2 if len(feeds) >= 2 and ridges else 1
    _cache_factors(original, todo, g_orig, params, feeds, cache, positions, halves, seed, source)

    pruned_graph = import_graph(out)  # the pruned model's weights, read through Constant nodes and chains
    pruned_params = ParamResolver()
    g_pruned = {n.name: n for n in pruned_graph.nodes}
    writer = WeightWriter(out)
    done = []
    for i, reader in enumerate(todo):
        if progress:
            progress(i, len(todo))
        node, layer = reader.nodes[0], reader.layer
        targets = [writer.nodes.get(n.name) for n in reader.nodes]
        if any(t is None or t.op_type != node.op_type or t.name not in g_pruned for t in targets):
            raise UnsupportedModel(
                f"{source}: internal: layer {node.name!r} ({node.op_type}) is not in the pruned model"
            )
        w_orig = params(g_orig[node.name].inputs[layer.weight_index])
        if w_orig is None or is_quantized_chain(w_orig):
            continue  # a quantized weight stays on its quantized path
        w_mat = layer.weight_matrix(np.asarray(w_orig.values, dtype=np.float64))  # [out, in/groups · k]
        b = np.zeros(w_mat.shape[0])
        bi, scale = layer.bias_index, layer.bias_scale
        if bi is not None and len(node.input) > bi and node.input[bi]:
            bp = params(g_orig[node.name].inputs[bi])
            if bp is None or bp.values.size != b.size:
                continue
            b = scale * np.asarray(bp.values, dtype=np.float64).reshape(-1)
        factors = [cache.factors.get(n.name) for n in reader.nodes]
        if any(f is None for f in factors):
            continue
        currents = [layer_params(g_pruned[n.name], pruned_params, layer) for n in reader.nodes]
        if any(c is None for c in currents):
            continue
        w_cur, b_cur, w_param = currents[0]  # type: ignore[misc]
        if any(not (np.array_equal(c[0], w_cur) and np.array_equal(c[1], b_cur)) for c in currents[1:]):  # type: ignore[index]
            continue  # readers of one weight the surgery left different: not one refit
        # Output channels the surgery kept (the reader may be a pruned source too).
        out_lay = analysis.layouts.get(node.output[0])
        keep_out = np.ones(w_mat.shape[0], dtype=bool)
        if out_lay is not None:
            (oids,) = [v for v in out_lay.axes.values()][:1]
            if len(oids) == w_mat.shape[0]:
                keep_out = ~removed_ids[oids]
        has_bias = bi is not None and scale != 0  # a bias scaled by 0 (Gemm beta=0) stays as it is
        per_half = [[_pool([f[h][g] for f in factors]) for g in range(len(factors[0][h]))] for h in range(halves)]  # type: ignore[index]
        key = (tuple(n.name for n in reader.nodes), reader.keep_in.tobytes(), keep_out.tobytes(), has_bias)
        fitted = _refit_groups(
            per_half, w_mat, b, reader.keep_in, keep_out, w_cur, b_cur, has_bias, ridge, ridges, cache, key
        )
        if fitted is None:
            continue
        w_new, b_new, err_b, err_a = fitted
        if err_a >= err_b:
            continue
        writer.write([t for t in targets if t is not None], layer, w_new, b_new if has_bias else None, w_param)
        rows = sum(cache.positions[n.name] for n in reader.nodes)
        done.extend(ReconstructedLayer(n.name, rows, err_b, err_a) for n in reader.nodes)
    writer.finish()
    if progress:
        progress(len(todo), len(todo))
    return out, tuple(done)


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
    per_half: Sequence[Sequence[np.ndarray]],
    w_mat: np.ndarray,
    b: np.ndarray,
    keep_in: np.ndarray,
    keep_out: np.ndarray,
    w_cur: np.ndarray,
    b_cur: np.ndarray,
    has_bias: bool,
    ridge: float,
    ridges: Sequence[float],
    cache: ReconstructionCache,
    key: tuple,
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Least squares per group of the layer (one group unless it is a grouped Conv): group g's
    kept outputs are refitted on group g's kept inputs only, against the original's outputs
    there (``per_half[h][g]``: the factor of group g's input rows on half h of the samples,
    see least_squares). Returns the new weights and bias in the pruned layer's shape [kept
    out, kept in/groups · k] and the relative RMS error before and after, or None when the
    pruned layer does not have the shape the plan implies."""
    n_out, n_cols = w_mat.shape
    groups = len(per_half[0])
    n_in = len(keep_in)
    if groups < 1 or n_out % groups or n_in % groups or any(f.shape[1] != n_cols + 1 for h in per_half for f in h):
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
        start = hashlib.blake2b(np.ascontiguousarray(theta0).tobytes(), digest_size=16).digest()
        fkey = (*key, g, start)
        if fkey not in cache.fits:
            select = np.flatnonzero(np.append(cols, has_bias))  # kept columns (and the ones column)
            w_aug = np.concatenate([w_mat[outs], b[outs][:, None]], axis=1)
            problems = [Problem(h[g], select, w_aug) for h in per_half]
            theta = least_squares.fit(problems, theta0, ridge, ridges)
            cache.fits[fkey] = (
                theta,
                sum(p.error(theta0) for p in problems),
                sum(p.error(theta0 if theta is None else theta) for p in problems),
                sum(p.energy() for p in problems),
            )
        theta, e_b, e_a, e_y = cache.fits[fkey]
        sq_b, sq_a, sq_y = sq_b + e_b, sq_a + e_a, sq_y + e_y
        if theta is None:
            continue
        w_new[cur] = (theta[:-1] if has_bias else theta).T
        if has_bias:
            b_new[cur] = theta[-1]
    scale = float(np.sqrt(sq_y)) or 1.0
    return w_new, b_new, float(np.sqrt(sq_b)) / scale, float(np.sqrt(sq_a)) / scale
