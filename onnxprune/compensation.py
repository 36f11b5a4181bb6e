"""What a removed channel is replaced by where it is read: its known constant (exact), the mean
activation over calibration inputs, or its value with the filters zeroed (data-free); folded
into the reader's bias. A reader with zero padding over the channel gets nothing folded (the
constant would be wrong at the borders), so the masked reference stays exact.

The nonlinearity: calibration means are measured at the reader's input, i.e. after the
activation between the removed layer and its reader (E[relu(z)], never relu(E[z])). Every
reader is linear in that input (Conv, Gemm, MatMul: the sinks), so folding the mean into its
bias gives the reader's expected output exactly, E[W x + b] = W E[x] + b, over the calibration
distribution. Data-free values come from constant propagation instead: a zeroed filter's bias
(or the BatchNormalization's beta) through the activation, act(E[z]) of a channel assumed
constant; that is the channel's value only when it really is constant, so give calibration
data when the removed channels are not."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from .analysis import ChannelAnalysis, analyze
from .layer_params import set_node_input
from .node_names import nodes_by_name
from .planning import PruningPlan
from .rules import RuleRegistry, default_registry
from .validation import model_opset

__all__ = ["data_free_values", "reader_masks", "removed_id_mask", "sink_fills"]


def removed_id_mask(analysis: ChannelAnalysis, plan: PruningPlan) -> np.ndarray:
    """Boolean per channel id: is its group removed?"""
    if not plan.removed_groups:
        return np.zeros(len(analysis.root_of), dtype=bool)
    return np.isin(analysis.root_of, np.asarray(plan.removed_groups, dtype=np.int64))


def sink_fills(
    analysis: ChannelAnalysis,
    removed_ids: np.ndarray,
    estimates: Mapping[str, np.ndarray] | None = None,
) -> dict[tuple[str, int], np.ndarray]:
    """For every sink reading a removed position: the value to fold, per position (0 where kept).

    Known constants always win (that is what makes zero removal exact); elsewhere
    ``estimates`` (per sink tensor) give the compensation, and without them removed channels
    read as 0, i.e. are masked."""
    out = {}
    for sink in analysis.sinks:
        lay = analysis.layouts[sink.tensor]
        ids = lay.axes[sink.axis]
        removed = removed_ids[ids]
        if not removed.any():
            continue
        if sink.fold_blocker is not None:
            out[(sink.node, sink.input_index)] = np.zeros(len(ids))
            continue
        const = lay.const(sink.axis) if lay.single_axis is not None else np.full(len(ids), np.nan)
        est = estimates.get(sink.tensor) if estimates else None
        base = np.where(np.isnan(const), 0.0 if est is None else est, const)
        out[(sink.node, sink.input_index)] = np.where(removed, base, 0.0)
    return out


def reader_masks(
    analysis: ChannelAnalysis, removed_ids: np.ndarray, estimates: Mapping[str, np.ndarray] | None = None
) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Per reader of a removed channel: (keep mask, fill) such that ``x * keep + fill`` before
    it is what the pruned model computes (the masked reference)."""
    fills = sink_fills(analysis, removed_ids, estimates)
    out = {}
    for sink in analysis.sinks:
        key = (sink.node, sink.input_index)
        if key in fills:
            removed = removed_ids[analysis.layouts[sink.tensor].axes[sink.axis]]
            out[key] = (~removed, fills[key])
    return out


def data_free_values(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    registry: RuleRegistry | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Per sink tensor: the value each removed channel has when its filters are zeroed and its
    biases kept (a constant the next layers relied on), from the same constant propagation as
    the zero criterion. Layers whose weights are not plain initializers, or whose rule has no
    layer semantics, are left as they are."""
    registry = registry or default_registry()
    opset = model_opset(model)
    removed = removed_id_mask(analysis, plan)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inits = {i.name: i for i in copy.graph.initializer}
    readers: dict[str, int] = {}
    for n in copy.graph.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    nodes = nodes_by_name(copy.graph.node)  # the analysis names nodes as load_model does
    for src in analysis.sources:
        rows = np.flatnonzero(removed[src.ids])
        if len(rows) == 0:
            continue
        node = nodes[src.node]
        layer = registry.layer(node, opset)
        if layer is None or len(node.input) <= layer.weight_index:
            continue
        if getattr(layer.semantics, "weight_zero_point_index", None) is not None:
            continue  # an integer layer's zero filter is its zero point, and it has no bias
        init = inits.get(node.input[layer.weight_index])
        if init is None or readers.get(init.name, 0) != 1:
            continue
        w = numpy_helper.to_array(init).copy()
        index = [slice(None)] * w.ndim
        index[layer.out_axis] = rows
        w[tuple(index)] = 0
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        if layer.bn_mean_compensation and layer.bias_index is not None:
            _expected_output_as_bias(copy, node, layer.bias_index, rows, inits, readers)
    zeroed = analyze(copy, input_shapes=input_shapes, registry=registry)
    out = {}
    for sink in zeroed.sinks:
        lay = zeroed.layouts[sink.tensor]
        if lay.single_axis is not None:
            out[sink.tensor] = np.nan_to_num(lay.const(sink.axis), nan=0.0)
    return out


def _expected_output_as_bias(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    bias_index: int,
    rows: np.ndarray,
    inits: dict,
    readers: Mapping[str, int],
) -> None:
    """Where a BatchNormalization reads the layer, its running mean is what the layer's output
    averages to: give the zeroed filters that as their constant, so the BatchNormalization
    yields its beta (the channel's mean), not the value of an all-zero input."""
    bn = next((n for n in model.graph.node if n.op_type == "BatchNormalization" and n.input[0] == node.output[0]), None)
    if bn is None or bn.input[3] not in inits:
        return
    mean = numpy_helper.to_array(inits[bn.input[3]]).astype(np.float32)
    if len(node.input) > bias_index and node.input[bias_index]:
        init = inits.get(node.input[bias_index])
        if init is None or readers.get(init.name, 0) != 1:
            return
        bias = numpy_helper.to_array(init).copy()
        bias[rows] = mean[rows]
        init.CopyFrom(numpy_helper.from_array(bias, init.name))
    else:
        bias = np.zeros(len(mean), np.float32)
        bias[rows] = mean[rows]
        name = f"{node.output[0]}__expected_bias"
        model.graph.initializer.append(numpy_helper.from_array(bias, name))
        set_node_input(node, bias_index, name)
