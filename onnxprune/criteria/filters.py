"""What weight-based criteria look at: each source layer's filters as rows of a matrix, and
the BatchNormalization gamma that follows a layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis import ChannelAnalysis
from ..params import ParamResolver
from ..rules import RuleRegistry

__all__ = ["LayerFilters", "source_filters"]


@dataclass(frozen=True, eq=False)
class LayerFilters:
    """One source layer: ``filters[c]`` is output channel c's weights, flattened."""

    node: str
    op: str
    filters: np.ndarray  # [channels, fan_in]
    bn_gamma: np.ndarray | None  # |gamma| of a BatchNormalization reading the output directly


def _filters(node: gs.Node, params: ParamResolver, registry: RuleRegistry, opset: int) -> np.ndarray | None:
    layer = registry.layer(node, opset)
    if layer is None or len(node.inputs) <= layer.weight_index:
        return None
    w = params(node.inputs[layer.weight_index])
    if w is None:
        return None
    values = np.asarray(w.values, dtype=np.float32)
    # An integer layer's filters are its weight minus the weight zero point (ConvInteger).
    zp_index = getattr(layer.semantics, "weight_zero_point_index", None)
    if zp_index is not None and len(node.inputs) > zp_index and node.inputs[zp_index].name:
        zp = params(node.inputs[zp_index])
        if zp is None:
            return None
        zp_values = np.asarray(zp.values, dtype=np.float32).reshape(-1)
        shape = [1] * values.ndim
        if zp_values.size > 1:
            shape[layer.out_axis] = zp_values.size
        values = values - zp_values.reshape(shape)
    return layer.weight_matrix(values)


def source_filters(graph: gs.Graph, analysis: ChannelAnalysis, registry: RuleRegistry) -> dict[str, LayerFilters]:
    """Filters of every source layer of ``analysis`` (keyed by node label) whose rule has layer
    semantics (see rules.LayerSemantics): output channel c's weights are row c."""
    params = ParamResolver()
    by_label = {n.name: n for n in graph.nodes}  # import_graph names every node as the analysis did
    out = {}
    for src in analysis.sources:
        node = by_label[src.node]
        f = _filters(node, params, registry, graph.opset)
        if f is None:
            continue
        gamma = None
        for reader in node.outputs[0].outputs:
            if reader.op == "BatchNormalization":
                g = params(reader.inputs[1])
                if g is not None:
                    gamma = np.abs(np.asarray(g.values, dtype=np.float64).reshape(-1))
                break
        out[src.node] = LayerFilters(src.node, src.op, f, gamma)
    return out
