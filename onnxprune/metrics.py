"""Parameter and MAC counts of a model (batch 1), from its static shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .node_names import nodes_by_name
from .rules import RuleRegistry, default_registry
from .shapes import Shape
from .validation import model_opset

if TYPE_CHECKING:
    from .analysis import ChannelAnalysis

__all__ = ["ModelCost", "model_cost", "node_macs", "pruned_shapes", "unknown_macs_reason"]


@dataclass(frozen=True)
class ModelCost:
    params: int
    macs: int
    macs_complete: bool  # False when a layer's shapes were unknown and its MACs were left out


def _count_params(model: onnx.ModelProto) -> int:
    total = sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    total += int(np.prod(a.t.dims)) if len(a.t.dims) else 1
    return total


def node_macs(model: onnx.ModelProto, shapes: Mapping[str, Shape], registry: RuleRegistry) -> dict[str, int | None]:
    """Multiply-accumulates of each weight-bearing node (by node name, see node_names; what a
    layer is and computes: the registry's layer semantics) for one sample; None where its
    shapes are unknown."""
    out: dict[str, int | None] = {}
    opset = model_opset(model)
    for label, node in nodes_by_name(model.graph.node).items():
        layer = registry.layer(node, opset)
        if layer is None:
            continue
        ins = [shapes.get(n) if n else None for n in node.input]
        x = ins[layer.data_index] if len(ins) > layer.data_index else None
        w = ins[layer.weight_index] if len(ins) > layer.weight_index else None
        out[label] = layer.macs(x, w, shapes.get(node.output[0]))
    return out


def unknown_macs_reason(
    model: onnx.ModelProto, per_node: Mapping[str, int | None], input_shapes: Mapping[str, Shape]
) -> str | None:
    """Why some layers' MACs are unknown (None when every layer's are known): the layers, and
    the inputs with dynamic dimensions to give a shape or data for. ``input_shapes``: the
    inputs' shapes as the analysis saw them (None for a dynamic dimension)."""
    unknown = sorted(n for n, m in per_node.items() if m is None)
    if not unknown:
        return None
    unranked = {vi.name for vi in model.graph.input if not vi.type.tensor_type.HasField("shape")}
    dynamic = [n for n, s in input_shapes.items() if n in unranked or any(d is None for d in s)]
    layers = f"the shapes of {len(unknown)} layer(s) are unknown (e.g. {unknown[0]!r})"
    if dynamic:
        return f"{layers}: give --input-shape for {', '.join(repr(n) for n in dynamic)}, or data (--inputs, --calibration) to take the shapes from"
    return f"{layers}: their sizes are computed at run time, although every input shape is static"


def model_cost(model: onnx.ModelProto, shapes: Mapping[str, Shape], registry: RuleRegistry | None = None) -> ModelCost:
    """Parameters (initializer and Constant elements) and multiply-accumulates of the
    weight-bearing layers (Conv, ConvTranspose, Gemm, MatMul, and those of the registry's
    rules for other ops) for one sample."""
    per_node = node_macs(model, shapes, registry or default_registry())
    macs = sum(m for m in per_node.values() if m is not None)
    complete = all(m is not None for m in per_node.values())
    return ModelCost(params=_count_params(model), macs=int(macs), macs_complete=complete)


def pruned_shapes(
    analysis: ChannelAnalysis, removed: np.ndarray, pruned: onnx.ModelProto, registry: RuleRegistry | None = None
) -> dict[str, Shape] | None:
    """The shapes of a pruned model without running shape inference again: the analysis'
    shapes with every channel axis shrunk by its removed ids, the weights' from the pruned
    initializers. None (ask shape inference) when a layer reads or writes a tensor the surgery
    made, or reads its weight through other nodes (a quantized weight)."""
    shapes = dict(analysis.shapes)
    for name, lay in analysis.layouts.items():
        shape = shapes.get(name)
        if shape is None:
            continue
        new = list(shape)
        for axis, ids in lay.axes.items():
            if axis < len(new) and new[axis] is not None:
                new[axis] = int(len(ids) - np.count_nonzero(removed[ids]))
        shapes[name] = tuple(new)
    inits = set()
    for t in pruned.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
        inits.add(t.name)
    registry = registry or default_registry()
    opset = model_opset(pruned)
    for node in pruned.graph.node:
        layer = registry.layer(node, opset)
        if layer is not None:
            if len(node.input) <= layer.weight_index or node.input[layer.weight_index] not in inits:
                return None
            if node.output[0] not in analysis.shapes or any(n and n not in shapes for n in node.input):
                return None
    return shapes
