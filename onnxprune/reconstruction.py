"""Reconstruction: after channels are removed, refit the weights (and bias) of each layer that
read them by least squares on calibration activations, so that its outputs match the
original's as closely as possible (He et al. 2017, "Channel Pruning for Accelerating Very Deep
Neural Networks"; Luo et al. 2017, ThiNet). No gradients: a closed-form ridge solve per layer
on sampled output positions, regularised towards the weights the surgery left.

Layer-wise: each reader is refitted on the *original* model's activations (its kept input
channels -> its original output), independently of the others. Readers handled: those whose
rule's layer semantics can give their input as rows of the weight matrix (Conv with group 1,
Gemm, MatMul with a 2-D weight, and users' rules built on them); others keep their weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .analysis import ChannelAnalysis, import_graph
from .compensation import removed_id_mask
from .errors import UnsupportedModel
from .node_names import nodes_by_name
from .params import InitializerCache, ParamResolver
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
    inits = {t.name: t for t in out.graph.initializer}
    readers = defaultdict(int)
    for n in out.graph.node:
        for i in n.input:
            readers[i] += 1
    by_name = nodes_by_name(out.graph.node)  # the surgery keeps the layers' names
    rng = np.random.default_rng(seed)
    done = []
    for sink, node, layer, keep_in in todo:
        target = by_name.get(sink.node)
        if target is None or target.op_type != node.op_type:
            raise UnsupportedModel(
                f"{source}: internal: layer {sink.node!r} ({node.op_type}) is not in the pruned model"
            )
        g_node = g_orig[sink.node]
        w_orig = params(g_node.inputs[layer.weight_index])
        if w_orig is None:
            continue
        w = np.asarray(w_orig.values, dtype=np.float64)
        w_mat = layer.weight_matrix(w)  # [out, in·k]
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
        col_keep = np.repeat(keep_in, w_mat.shape[1] // len(keep_in))
        y = rows @ w_mat.T + b  # the original layer's output at these positions
        # Output channels the surgery kept (the reader may be a pruned source too).
        out_lay = analysis.layouts.get(node.output[0])
        keep_out = np.ones(w_mat.shape[0], dtype=bool)
        if out_lay is not None:
            (oids,) = [v for v in out_lay.axes.values()][:1]
            if len(oids) == w_mat.shape[0]:
                keep_out = ~removed_ids[oids]
        y = y[:, keep_out]
        w_cur = _current(target, inits, layer)
        if w_cur is None:
            continue
        w_new_mat, b_cur = w_cur
        has_bias = bi is not None and scale != 0  # a bias scaled by 0 (Gemm beta=0) stays as it is
        a = rows[:, col_keep]
        if has_bias:
            a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
            theta0 = np.concatenate([w_new_mat, b_cur[:, None]], axis=1).T
        else:
            theta0 = w_new_mat.T
        if theta0.shape[0] != a.shape[1] or theta0.shape[1] != y.shape[1]:
            continue
        before = a @ theta0
        theta = _solve(a, y, theta0, ridge)
        after = a @ theta
        scale = float(np.sqrt(np.mean(y**2))) or 1.0
        err_b = float(np.sqrt(np.mean((before - y) ** 2))) / scale
        err_a = float(np.sqrt(np.mean((after - y) ** 2))) / scale
        if err_a >= err_b:
            continue
        _write(out, target, inits, readers, layer, theta, has_bias)
        done.append(ReconstructedLayer(sink.node, len(rows), err_b, err_a))
    return out, tuple(done)


def _current(
    node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], layer: Layer
) -> tuple[np.ndarray, np.ndarray] | None:
    """The pruned layer's weights as [out, in·k] and its bias as added (zeros if none)."""
    t = inits.get(node.input[layer.weight_index])
    if t is None:
        return None
    mat = layer.weight_matrix(numpy_helper.to_array(t).astype(np.float64))
    b = np.zeros(mat.shape[0])
    bi = layer.bias_index
    if bi is not None and len(node.input) > bi and node.input[bi]:
        bt = inits.get(node.input[bi])
        if bt is None:
            return None
        b = layer.bias_scale * numpy_helper.to_array(bt).astype(np.float64).reshape(-1)
        if b.size != mat.shape[0]:
            return None
    return mat, b


def _write(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    inits: dict,
    readers: Mapping[str, int],
    layer: Layer,
    theta: np.ndarray,
    has_bias: bool,
) -> None:
    bi = layer.bias_index if has_bias else None
    w_t = inits[node.input[layer.weight_index]]
    shape = tuple(w_t.dims)
    dtype = numpy_helper.to_array(w_t).dtype
    mat = theta[:-1].T if bi is not None else theta.T  # [out, in·k]
    _set(model, node, layer.weight_index, layer.weight_from_matrix(mat, shape).astype(dtype), inits, readers)
    if bi is not None:
        bias = (theta[-1] / layer.bias_scale).astype(dtype)
        if len(node.input) > bi and node.input[bi]:
            _set(model, node, bi, bias.reshape(tuple(inits[node.input[bi]].dims)), inits, readers)
        else:
            name = f"{node.output[0]}__reconstructed_bias"
            model.graph.initializer.append(numpy_helper.from_array(bias, name))
            while len(node.input) < bi:
                node.input.append("")
            if len(node.input) > bi:  # an empty name stands for the missing bias
                node.input[bi] = name
            else:
                node.input.append(name)


def _set(
    model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, inits: dict, readers: Mapping[str, int]
) -> None:
    name = node.input[index]
    if readers.get(name, 0) > 1:  # shared with another reader: give this one its own copy
        new = f"{name}__reconstructed_{node.name or node.output[0]}"
        model.graph.initializer.append(numpy_helper.from_array(value, new))
        node.input[index] = new
        return
    inits[name].CopyFrom(numpy_helper.from_array(value, name))


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
        self.reference = run.outputs([f for _, judge in self.folds for f in judge])

    def fidelity(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
    ) -> float:
        from .fidelity import score_outputs
        from .surgery import apply_pruning

        plan = PruningPlan("trial", tuple(removed_groups))
        pruned = apply_pruning(self.model, self.analysis, plan, registry=self.registry, estimates=estimates)
        parts = []
        for fit, judge in self.folds:
            rebuilt, _ = reconstruct(
                self.model, pruned, self.analysis, plan, fit, registry=self.registry, seed=self.seed, source=self.source
            )
            parts.append(session(rebuilt, source=self.source, pruned=True).outputs(judge))
        outs = [np.concatenate([p[i] for p in parts]) for i in range(len(self.names))]
        return score_outputs(self.names, self.reference, outs, choices)[0]
