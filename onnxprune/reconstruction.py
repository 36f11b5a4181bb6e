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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .analysis import ChannelAnalysis, import_graph
from .compensation import removed_id_mask
from .errors import UnsupportedModel
from .layer_params import WeightWriter, layer_params
from .node_names import nodes_by_name
from .params import InitializerCache, ParamResolver, is_quantized_chain
from .planning import PruningPlan
from .rules import RuleRegistry, default_registry
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


# Ridge strengths tried (relative to the mean diagonal of a.T @ a), and "keep the weights".
RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _fit(
    folds: Sequence[tuple[np.ndarray, np.ndarray]], theta0: np.ndarray, ridge: float, ridges: Sequence[float]
) -> np.ndarray | None:
    """The refitted parameters, with the ridge chosen by two-fold cross-validation over
    different calibration samples (rows of one half fitted, judged on the other, and the other
    way round): a layer read at few positions is underdetermined, and a fit that looks exact on
    its samples can be worse than the weights it started from. None when keeping ``theta0``
    predicts the held-out half best. One fold: the fixed ``ridge``."""
    a_all = np.concatenate([a for a, _ in folds])
    y_all = np.concatenate([y for _, y in folds])
    if len(folds) < 2 or not ridges:
        return _solve(a_all, y_all, theta0, ridge)
    errors = np.zeros(len(ridges))
    keep_error = 0.0
    for i, (a, y) in enumerate(folds):
        a_o, y_o = folds[1 - i]
        keep_error += float(np.sum((a_o @ theta0 - y_o) ** 2))
        ata = a.T @ a
        scale = float(np.mean(np.diag(ata)))
        if scale <= 0:
            return None
        vals, vecs = np.linalg.eigh(ata)
        aty = a.T @ y
        for k, rel in enumerate(ridges):
            lam = rel * scale
            rhs = vecs.T @ (aty + lam * theta0)
            theta = vecs @ (rhs / np.maximum(vals + lam, lam)[:, None])
            errors[k] += float(np.sum((a_o @ theta - y_o) ** 2))
    best = int(np.argmin(errors))
    if errors[best] >= keep_error:
        return None
    return _solve(a_all, y_all, theta0, ridges[best])


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
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """A copy of ``pruned`` with the readers of removed channels refitted (see module doc);
    ``source``, the model file, names it in errors; ``progress(done, total)`` counts the
    layers refitted."""
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
    writer = WeightWriter(out)
    rng = np.random.default_rng(seed)
    done = []
    for i, (sink, node, layer, keep_in) in enumerate(todo):
        if progress:
            progress(i, len(todo))
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
        # Rows from two halves of the samples: the ridge is chosen on one half, judged on the other.
        halves = [x[: len(x) // 2], x[len(x) // 2 :]] if len(x) >= 2 and ridges else [x]
        parts = [layer.input_rows(h, w.shape, positions // len(halves), rng) for h in halves]
        if any(p is None for p in parts):
            continue
        rows = np.concatenate(parts)  # [positions, in·k]
        current = layer_params(g_pruned[sink.node], pruned_params, layer)
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
        fitted = _refit_groups(parts, w_mat, b, keep_in, keep_out, w_cur, b_cur, layer.groups, has_bias, ridge, ridges)
        if fitted is None:
            continue
        w_new, b_new, err_b, err_a = fitted
        if err_a >= err_b:
            continue
        writer.write(target, layer, w_new, b_new if has_bias else None, w_param)
        done.append(ReconstructedLayer(sink.node, len(rows), err_b, err_a))
    writer.finish()
    if progress:
        progress(len(todo), len(todo))
    return out, tuple(done)


def _refit_groups(
    parts: Sequence[np.ndarray],
    w_mat: np.ndarray,
    b: np.ndarray,
    keep_in: np.ndarray,
    keep_out: np.ndarray,
    w_cur: np.ndarray,
    b_cur: np.ndarray,
    groups: int,
    has_bias: bool,
    ridge: float,
    ridges: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Least squares per group of the layer (one group unless it is a grouped Conv): group g's
    kept outputs are refitted on group g's kept inputs only, against the original's outputs
    there (``rows @ w_mat.T + b``; ``parts``: the rows of different samples, see ``_fit``).
    Returns the new weights and bias in the pruned layer's shape [kept out, kept in/groups · k]
    and the relative RMS error before and after, or None when the pruned layer does not have
    the shape the plan implies."""
    n_out, n_cols = w_mat.shape
    n_in = len(keep_in)
    if groups < 1 or n_out % groups or n_in % groups or any(p.shape[1] != n_cols * groups for p in parts):
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
        folds = []
        for rows in parts:
            block = rows[:, g * in_g * k : (g + 1) * in_g * k]
            y = block @ w_mat[outs].T + b[outs]  # the original layer's outputs of this group
            a = block[:, cols]
            if has_bias:
                a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
            folds.append((a, y))
        theta = _fit(folds, theta0, ridge, ridges)
        for a, y in folds:
            sq_b += float(np.sum((a @ theta0 - y) ** 2))
            sq_a += float(np.sum((a @ (theta0 if theta is None else theta) - y) ** 2))
            sq_y += float(np.sum(y**2))
        if theta is None:
            continue
        w_new[cur] = (theta[:-1] if has_bias else theta).T
        if has_bias:
            b_new[cur] = theta[-1]
    scale = float(np.sqrt(sq_y)) or 1.0
    return w_new, b_new, float(np.sqrt(sq_b)) / scale, float(np.sqrt(sq_a)) / scale


class ReconstructedTrials:
    """The fidelity of a removal *after* recovery (reconstruction and/or re-calibration, see
    recovery), for the allocation search (a drop-in for sensitivity_analysis.TrialRunner). Each
    trial removes the groups (surgery) and is judged by two-fold cross-fitting: the model
    recovered on one half of the calibration samples is judged on the other half, and the other
    way round, so every sample is judged by a fit that never saw it (fitted and judged on the
    same few samples, a fit looks better than it is). Re-calibration inside the search takes at
    most ``RECALIBRATION_PASSES`` passes per trial."""

    RECALIBRATION_PASSES = 4

    def __init__(
        self,
        model: onnx.ModelProto,
        analysis: ChannelAnalysis,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        registry: RuleRegistry | None = None,
        seed: int = 0,
        source: str = "<model>",
        reconstruct: bool = True,
        recalibrate: bool = False,
    ) -> None:
        self.reconstruct, self.recalibrate = reconstruct, recalibrate
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
        search: bool = False,
    ) -> float:
        """The cross-fitted fidelity; with ``search`` the search's judgement of it
        (``fidelity.search_score`` on the two judged halves, as sensitivity_analysis.TrialRunner's)."""
        from .fidelity import score_outputs, search_score
        from .recovery import recover_model
        from .surgery import apply_pruning

        plan = PruningPlan("trial", tuple(removed_groups))
        pruned = apply_pruning(self.model, self.analysis, plan, registry=self.registry, estimates=estimates)
        parts = []
        for fit, judge in self.folds:
            rebuilt, _, _ = recover_model(
                self.model,
                pruned,
                self.analysis,
                plan,
                fit,
                reconstruct=self.reconstruct,
                recalibrate=self.recalibrate,
                registry=self.registry,
                seed=self.seed,
                recalibration_passes=self.RECALIBRATION_PASSES,
                source=self.source,
            )
            parts.append(session(rebuilt, source=self.source, pruned=True).outputs(judge, self.batch_axes))
        outs = [np.concatenate([p[i] for p in parts], axis=self.batch_axes.get(n, 0)) for i, n in enumerate(self.names)]
        if search:
            pairs = list(zip(self.references, parts))
            return search_score(self.names, self.reference, outs, pairs, choices, batch_axes=self.batch_axes).value
        return score_outputs(self.names, self.reference, outs, choices, batch_axes=self.batch_axes)[0]
