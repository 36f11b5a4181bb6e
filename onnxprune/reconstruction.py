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

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .analysis import ChannelAnalysis, import_graph
from .compensation import removed_id_mask
from .errors import UnsupportedModel
from .node_names import nodes_by_name
from .params import InitializerCache, Param, ParamResolver, is_quantized_chain
from .planning import PruningPlan
from .rules import Layer, RuleRegistry, default_registry
from .runtime import session
from .validation import model_opset

__all__ = ["ReconstructedLayer", "reconstruct"]


@dataclass(frozen=True)
class ReconstructedLayer:
    node: str
    positions: int
    error_before: float  # relative RMS error of the layer's output on the samples
    error_after: float


def _solve(a: np.ndarray, y: np.ndarray, theta0: np.ndarray, ridge: float) -> np.ndarray:
    """argmin ||a @ theta - y||^2 + lam ||theta - theta0||^2, lam relative to a's scale."""
    ata = a.T @ a
    lam = ridge * float(np.mean(np.diag(ata))) if ata.size else 0.0
    lhs = ata + lam * np.eye(ata.shape[0])
    rhs = a.T @ y + lam * theta0
    try:
        return np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


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
    seed: int = 0,
    source: str = "<model>",
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """A copy of ``pruned`` with the readers of removed channels refitted (see module doc);
    ``source``, the model file, names it in errors."""
    registry = registry or default_registry()
    opset = model_opset(original)
    removed_ids = removed_id_mask(analysis, plan)
    originals = nodes_by_name(original.graph.node)  # the analysis names nodes as load_model does
    todo = []
    for sink in analysis.sinks:
        ids = analysis.layouts[sink.tensor].axes[sink.axis]
        if not removed_ids[ids].any():
            continue
        node = originals[sink.node]
        layer = registry.layer(node, opset)
        if layer is None or sink.input_index != layer.data_index or not layer.refittable:
            continue
        todo.append((sink, node, layer, ~removed_ids[ids]))
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    if not todo:
        return out, ()

    # The original's activations at every reader's input, one sample at a time.
    probe = onnx.ModelProto()
    probe.CopyFrom(original)
    names = sorted({s.tensor for s, _, _, _ in todo})
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    run = session(
        probe, source=source, what="the model with the reconstructed layers' inputs as outputs", optimize=True
    )
    acts: dict[str, list[np.ndarray]] = defaultdict(list)
    for feed in feeds:
        for n, v in zip(names, run.run(feed, names)):
            acts[n].append(np.asarray(v, dtype=np.float64))
    values = {n: np.concatenate(v) for n, v in acts.items()}

    graph = import_graph(original)
    params = ParamResolver(InitializerCache(original), graph)
    g_orig = {n.name: n for n in graph.nodes}
    pruned_graph = import_graph(out)  # the pruned model's weights, read through Constant nodes and chains
    pruned_params = ParamResolver()
    g_pruned = {n.name: n for n in pruned_graph.nodes}
    writer = _Writer(out)
    rng = np.random.default_rng(seed)
    done = []
    for sink, node, layer, keep_in in todo:
        target = writer.nodes.get(sink.node)
        if target is None or target.op_type != node.op_type or sink.node not in g_pruned:
            raise UnsupportedModel(
                f"{source}: internal: layer {sink.node!r} ({node.op_type}) is not in the pruned model"
            )
        g_node = g_orig[sink.node]
        w_orig = params(g_node.inputs[layer.weight_index])
        if w_orig is None or is_quantized_chain(w_orig):
            continue  # a quantized weight stays on its quantized path
        w = np.asarray(w_orig.values, dtype=np.float64)
        w_mat = layer.weight_matrix(w)  # [out, in/groups · k]
        b = np.zeros(w_mat.shape[0])
        bi, scale = layer.bias_index, layer.bias_scale
        if bi is not None and len(node.input) > bi and node.input[bi]:
            bp = params(g_node.inputs[bi])
            if bp is None or bp.values.size != b.size:
                continue
            b = scale * np.asarray(bp.values, dtype=np.float64).reshape(-1)
        x = values[sink.tensor]
        rows = layer.input_rows(x, w.shape, positions, rng)  # [positions, in·k]
        if rows is None:
            continue
        current = _current(g_pruned[sink.node], pruned_params, layer)
        if current is None:
            continue
        w_cur, b_cur, w_param = current
        # Output channels the surgery kept (the reader may be a pruned source too).
        out_lay = analysis.layouts.get(node.output[0])
        keep_out = np.ones(w_mat.shape[0], dtype=bool)
        if out_lay is not None:
            (oids,) = [v for v in out_lay.axes.values()][:1]
            if len(oids) == w_mat.shape[0]:
                keep_out = ~removed_ids[oids]
        has_bias = bi is not None and scale != 0  # a bias scaled by 0 (Gemm beta=0) stays as it is
        fitted = _refit_groups(rows, w_mat, b, keep_in, keep_out, w_cur, b_cur, layer.groups, has_bias, ridge)
        if fitted is None:
            continue
        w_new, b_new, err_b, err_a = fitted
        if err_a >= err_b:
            continue
        writer.write(target, layer, w_new, b_new if has_bias else None, w_param)
        done.append(ReconstructedLayer(sink.node, len(rows), err_b, err_a))
    writer.finish()
    return out, tuple(done)


def _refit_groups(
    rows: np.ndarray,
    w_mat: np.ndarray,
    b: np.ndarray,
    keep_in: np.ndarray,
    keep_out: np.ndarray,
    w_cur: np.ndarray,
    b_cur: np.ndarray,
    groups: int,
    has_bias: bool,
    ridge: float,
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Least squares per group of the layer (one group unless it is a grouped Conv): group g's
    kept outputs are refitted on group g's kept inputs only, against the original's outputs
    there (``rows @ w_mat.T + b``). Returns the new weights and bias in the pruned layer's shape
    [kept out, kept in/groups · k] and the relative RMS error before and after, or None when
    the pruned layer does not have the shape the plan implies."""
    n_out, n_cols = w_mat.shape
    n_in = len(keep_in)
    if groups < 1 or n_out % groups or n_in % groups or rows.shape[1] != n_in * (n_cols * groups // n_in):
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
        ins = keep_in[g * in_g : (g + 1) * in_g]
        block = rows[:, g * in_g * k : (g + 1) * in_g * k]
        y = block @ w_mat[outs].T + b[outs]  # the original layer's outputs of this group
        a = block[:, np.repeat(ins, k)]
        cur = np.searchsorted(kept_out, outs)  # their rows in the pruned layer
        if a.shape[1] != w_cur.shape[1]:
            return None
        theta0 = w_cur[cur].T
        if has_bias:
            a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
            theta0 = np.concatenate([theta0, b_cur[cur][None, :]], axis=0)
        theta = _solve(a, y, theta0, ridge)
        sq_b += float(np.sum((a @ theta0 - y) ** 2))
        sq_a += float(np.sum((a @ theta - y) ** 2))
        sq_y += float(np.sum(y**2))
        w_new[cur] = (theta[:-1] if has_bias else theta).T
        if has_bias:
            b_new[cur] = theta[-1]
    scale = float(np.sqrt(sq_y)) or 1.0
    return w_new, b_new, float(np.sqrt(sq_b)) / scale, float(np.sqrt(sq_a)) / scale


def _current(node: gs.Node, params: ParamResolver, layer: Layer) -> tuple[np.ndarray, np.ndarray, Param] | None:
    """The pruned layer's weights as [out, in·k], its bias as added (zeros if none), and the
    weight as read (through Constant nodes, Cast and the like)."""
    if len(node.inputs) <= layer.weight_index:
        return None
    w = params(node.inputs[layer.weight_index])
    if w is None or is_quantized_chain(w) or np.asarray(w.values).dtype.kind != "f":
        return None
    mat = layer.weight_matrix(np.asarray(w.values, dtype=np.float64))
    b = np.zeros(mat.shape[0])
    bi = layer.bias_index
    if bi is not None and len(node.inputs) > bi and node.inputs[bi].name:
        bp = params(node.inputs[bi])
        if bp is None or np.asarray(bp.values).size != mat.shape[0]:
            return None
        b = layer.bias_scale * np.asarray(bp.values, dtype=np.float64).reshape(-1)
    return mat, b, w


class _Writer:
    """Writes refitted weights into a model: in place when the weight is an initializer only
    this layer reads, else as a new initializer the layer reads instead (a weight computed by
    Constant nodes, Cast, shape ops... is replaced whole, and the nodes nothing reads any more
    are dropped)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes = nodes_by_name(model.graph.node)  # the surgery keeps the layers' names
        self.inits = {t.name: t for t in model.graph.initializer}
        self.readers: dict[str, int] = defaultdict(int)
        for n in model.graph.node:
            for i in n.input:
                self.readers[i] += 1
        self.replaced: set[str] = set()

    def write(self, node: onnx.NodeProto, layer: Layer, w_mat: np.ndarray, bias: np.ndarray | None, w: Param) -> None:
        dtype = np.asarray(w.values).dtype
        shape = np.asarray(w.values).shape
        self._set(node, layer.weight_index, layer.weight_from_matrix(w_mat, shape).astype(dtype))
        bi = layer.bias_index
        if bias is None or bi is None:
            return
        bias = (bias / layer.bias_scale).astype(dtype)
        if len(node.input) > bi and node.input[bi]:
            old = self.inits.get(node.input[bi])
            self._set(node, bi, bias.reshape(tuple(old.dims)) if old is not None else bias)
            return
        name = f"{node.output[0]}__reconstructed_bias"
        self.model.graph.initializer.append(numpy_helper.from_array(bias, name))
        while len(node.input) < bi:
            node.input.append("")
        if len(node.input) > bi:  # an empty name stands for the missing bias
            node.input[bi] = name
        else:
            node.input.append(name)

    def _set(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        name = node.input[index]
        init = self.inits.get(name)
        if init is not None and self.readers.get(name, 0) == 1 and tuple(init.dims) == value.shape:
            init.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(init).dtype), name))
            return
        # Shared with another reader, or computed by nodes: this layer gets its own initializer.
        new = f"{name}__reconstructed_{node.name or node.output[0]}"
        self.model.graph.initializer.append(numpy_helper.from_array(value, new))
        node.input[index] = new
        self.readers[name] -= 1
        self.replaced.add(name)

    def finish(self) -> None:
        """Drop the nodes and initializers that only computed a replaced weight."""
        if not self.replaced:
            return
        graph = self.model.graph
        keep_names = {o.name for o in graph.output} | _subgraph_reads(graph)
        while True:
            read = {i for n in graph.node for i in n.input} | keep_names
            dead = [
                n
                for n in graph.node
                if n.output and not any(o in read for o in n.output) and (set(n.output) & self.replaced)
            ]
            if not dead:
                break
            for n in dead:
                self.replaced.update(n.input)
                graph.node.remove(n)
        read = {i for n in graph.node for i in n.input} | keep_names
        unread = [t for t in graph.initializer if t.name in self.replaced and t.name not in read]
        for t in unread:
            graph.initializer.remove(t)


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every name read inside the subgraphs of ``graph``'s nodes (they may read outer names)."""
    out: set[str] = set()
    for n in graph.node:
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for g in subs:
                out.update(i for sn in g.node for i in sn.input)
                out.update(_subgraph_reads(g))
    return out


class ReconstructedTrials:
    """The fidelity of a removal *after* reconstruction, for the allocation search (a drop-in
    for sensitivity_analysis.TrialRunner). Each trial removes the groups (surgery) and is judged by
    two-fold cross-fitting: readers refitted on one half of the calibration samples are judged
    on the other half, and the other way round, so every sample is judged by a fit that never
    saw it (fitted and judged on the same few samples, a fit looks better than it is)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        analysis: ChannelAnalysis,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        registry: RuleRegistry | None = None,
        seed: int = 0,
        source: str = "<model>",
    ) -> None:
        if len(feeds) < 2:
            raise ValueError("reconstruction inside the search needs at least 2 calibration samples")
        half = len(feeds) // 2
        self.model, self.analysis, self.registry, self.seed, self.source = model, analysis, registry, seed, source
        self.folds = [(list(feeds[:half]), list(feeds[half:])), (list(feeds[half:]), list(feeds[:half]))]
        run = session(model, source=source)
        self.names = run.output_names
        from .fidelity import output_batch_axes

        self.batch_axes = output_batch_axes(model)  # sequence-first outputs keep their samples on axis 1
        self.references = [run.outputs(judge, self.batch_axes) for _, judge in self.folds]
        self.reference = [
            np.concatenate([r[i] for r in self.references], axis=self.batch_axes.get(n, 0))
            for i, n in enumerate(self.names)
        ]

    def fidelity(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
        *,
        worst_half: bool = False,
    ) -> float:
        """The cross-fitted fidelity; with ``worst_half`` the worse of the two judged halves'
        (the search's judge, as sensitivity_analysis.TrialRunner's)."""
        from .fidelity import score_outputs
        from .surgery import apply_pruning

        plan = PruningPlan("trial", tuple(removed_groups))
        pruned = apply_pruning(self.model, self.analysis, plan, registry=self.registry, estimates=estimates)
        parts = []
        for fit, judge in self.folds:
            rebuilt, _ = reconstruct(
                self.model, pruned, self.analysis, plan, fit, registry=self.registry, seed=self.seed, source=self.source
            )
            parts.append(session(rebuilt, source=self.source, pruned=True).outputs(judge, self.batch_axes))
        if worst_half:
            return min(
                score_outputs(self.names, r, p, choices, batch_axes=self.batch_axes)[0]
                for r, p in zip(self.references, parts)
            )
        outs = [np.concatenate([p[i] for p in parts], axis=self.batch_axes.get(n, 0)) for i, n in enumerate(self.names)]
        return score_outputs(self.names, self.reference, outs, choices, batch_axes=self.batch_axes)[0]
