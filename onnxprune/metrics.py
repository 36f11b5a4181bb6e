"""Parameter and MAC counts of a model (batch 1), from its static shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np
import onnx

from .node_names import nodes_by_name
from .shapes import Shape

if TYPE_CHECKING:
    from .analysis import ChannelAnalysis

__all__ = ["ModelCost", "model_cost", "node_macs", "pruned_shapes"]


@dataclass(frozen=True)
class ModelCost:
    params: int
    macs: int
    macs_complete: bool  # False when a layer's shapes were unknown and its MACs were left out


def _numel(shape: Shape | None) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape)) if len(shape) else 1


def _count_params(model: onnx.ModelProto) -> int:
    total = sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    total += int(np.prod(a.t.dims)) if len(a.t.dims) else 1
    return total


def node_macs(model: onnx.ModelProto, shapes: Mapping[str, Shape]) -> dict[str, int | None]:
    """Multiply-accumulates of each Conv, ConvTranspose, Gemm and MatMul node (by node name,
    see node_names) for one sample; None where its shapes are unknown."""
    out: dict[str, int | None] = {}
    for label, node in nodes_by_name(model.graph.node).items():
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        ins = [shapes.get(n) if n else None for n in node.input]
        y = shapes.get(node.output[0])
        w = ins[1] if len(ins) > 1 else None
        macs: int | None = None
        if node.op_type == "Conv":
            n_out, w_n = _numel(y), _numel(w)
            if n_out is not None and w_n is not None and w:
                macs = (n_out // max(y[0] or 1, 1)) * (w_n // w[0])
        elif node.op_type == "ConvTranspose":
            n_in, w_n = _numel(ins[0]), _numel(w)
            if n_in is not None and w_n is not None and w:
                # Every input element is multiplied by a [Cout/group, *kernel] slice of the weight.
                macs = (n_in // max(ins[0][0] or 1, 1)) * (w_n // w[0])
        else:
            a, n_out = ins[0], _numel(y)
            if a is not None and w is not None and n_out is not None and a and a[-1] is not None:
                trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
                k = a[0] if (node.op_type == "Gemm" and trans_a) else a[-1]
                batch = y[0] if (y and y[0]) else 1
                macs = (n_out // batch) * int(k) if len(y) > 1 else n_out * int(k)
        out[label] = macs
    return out


def model_cost(model: onnx.ModelProto, shapes: Mapping[str, Shape]) -> ModelCost:
    """Parameters (initializer and Constant elements) and multiply-accumulates of Conv,
    ConvTranspose, Gemm and MatMul layers for one sample."""
    per_node = node_macs(model, shapes)
    macs = sum(m for m in per_node.values() if m is not None)
    complete = all(m is not None for m in per_node.values())
    return ModelCost(params=_count_params(model), macs=int(macs), macs_complete=complete)


_LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def pruned_shapes(analysis: "ChannelAnalysis", removed: np.ndarray, pruned: onnx.ModelProto) -> dict[str, Shape] | None:
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
    for node in pruned.graph.node:
        if node.op_type in _LAYERS:
            if len(node.input) < 2 or node.input[1] not in inits:
                return None
            if node.output[0] not in analysis.shapes or any(n and n not in shapes for n in node.input):
                return None
    return shapes
