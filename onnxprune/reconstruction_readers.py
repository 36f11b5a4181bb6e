"""Reconstruction's readers: which layers read removed channels and are refitted (readers
sharing one weight grouped), and what each refit starts from (the original layer, the pruned
one's weights and bias, the output channels kept). Split from reconstruction, which runs the
refit; the refit's arithmetic is reconstruction_fit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from .analysis import ChannelAnalysis
from .errors import UnsupportedModel
from .layer_params import WeightWriter, layer_params
from .node_names import nodes_by_name
from .params import ParamResolver, is_quantized_chain
from .rules import Layer, RuleRegistry

__all__ = ["Reader", "RefitStart", "find_readers", "refit_start"]


@dataclass
class Reader:
    """A reader of removed channels, or readers sharing one weight (an unrolled recurrent
    cell's Gemm at every time step): fitted together on their pooled rows, written once."""

    nodes: list[onnx.NodeProto]  # in the original
    layer: Layer
    keep_in: np.ndarray


def find_readers(
    original: onnx.ModelProto, analysis: ChannelAnalysis, removed_ids: np.ndarray, registry: RuleRegistry, opset: int
) -> list[Reader]:
    """The refittable readers of removed channels, those sharing a weight (and bias, and
    attributes, and kept inputs) grouped."""
    originals = nodes_by_name(original.graph.node)  # the analysis names nodes as load_model does
    groups: dict[tuple, Reader] = {}
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
            groups.setdefault(key, Reader([node], layer, keep_in))
    return list(groups.values())


@dataclass(frozen=True)
class RefitStart:
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


def refit_start(
    reader: Reader,
    writer: WeightWriter,
    g_orig: Mapping[str, object],
    params: ParamResolver,
    g_pruned: Mapping[str, object],
    pruned_params: ParamResolver,
    analysis: ChannelAnalysis,
    removed_ids: np.ndarray,
    source: str,
) -> RefitStart | None:
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
    return RefitStart(targets_found, w_mat, b, w_cur, b_cur, w_param, keep_out, has_bias, layer.groups, *shapes)
