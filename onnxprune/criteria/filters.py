"""What weight-based criteria look at: each source layer's filters as rows of a matrix, and
the BatchNormalization gamma that follows a layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis import ChannelAnalysis
from ..params import ParamResolver

__all__ = ["LayerFilters", "source_filters"]


@dataclass(frozen=True, eq=False)
class LayerFilters:
    """One source layer: ``filters[c]`` is output channel c's weights, flattened."""

    node: str
    op: str
    filters: np.ndarray  # [channels, fan_in]
    bn_gamma: np.ndarray | None  # |gamma| of a BatchNormalization reading the output directly


def _filters(node: gs.Node, params: ParamResolver) -> np.ndarray | None:
    w = params(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None:
        return None
    v = np.asarray(w.values, dtype=np.float32)
    if node.op == "Conv":
        return v.reshape(v.shape[0], -1)
    if node.op == "ConvTranspose":
        return np.moveaxis(v, 1, 0).reshape(v.shape[1], -1)
    if node.op == "Gemm":
        return v if int(node.attrs.get("transB", 0)) else v.T
    if node.op == "MatMul":
        return v.T
    return None


def source_filters(graph: gs.Graph, analysis: ChannelAnalysis) -> dict[str, LayerFilters]:
    """Filters of every source layer of ``analysis`` (keyed by node label)."""
    params = ParamResolver()
    by_label = {n.name: n for n in graph.nodes}  # import_graph names every node as the analysis did
    out = {}
    for src in analysis.sources:
        node = by_label[src.node]
        f = _filters(node, params)
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
