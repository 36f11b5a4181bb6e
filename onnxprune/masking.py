"""The masked reference: the original model with the removed channels replaced where they are
read. Lossy pruning is proven against it (the pruned model must equal it to the tolerance of
exact removal), and the sensitivity analysis runs its trials on it without rebuilding the
model: the original is instrumented once with ``x * keep + fill`` before every reader of a
channel, and keep/fill are fed as inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .node_names import nodes_by_name

if TYPE_CHECKING:
    from .analysis import ChannelAnalysis

__all__ = ["Masks", "Ports", "instrument_readers", "mask_feeds", "masked_reference"]

# Per (reader node, input index): the names of its keep and fill inputs and their shape.
Ports = Mapping[tuple[str, int], tuple[str, str, list[int]]]
# Per (reader node, input index): keep and fill along the channel axis (see compensation.reader_masks).
Masks = Mapping[tuple[str, int], tuple[np.ndarray, np.ndarray]]


def instrument_readers(
    model: onnx.ModelProto, analysis: ChannelAnalysis
) -> tuple[onnx.ModelProto, dict[tuple[str, int], tuple[str, str, list[int]]]]:
    """A copy of ``model`` with ``x * keep + fill`` before every reader (sink) of channels;
    keep and fill are new graph inputs, broadcast along the channel axis. Returns the model and,
    per (reader, input index), the names and shape of its keep and fill inputs."""
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = nodes_by_name(m.graph.node)  # the analysis names nodes as load_model does
    inserted: dict[str, list[onnx.NodeProto]] = {}  # by reader
    ports = {}
    for k, sink in enumerate(analysis.sinks):
        lay = analysis.layouts[sink.tensor]
        shape = [1] * lay.rank
        shape[sink.axis] = len(lay.axes[sink.axis])
        node = nodes[sink.node]
        name = node.input[sink.input_index]
        keep, fill, out = f"__keep_{k}", f"__fill_{k}", f"__masked_{k}"
        m.graph.input.extend(
            [
                helper.make_tensor_value_info(keep, TensorProto.FLOAT, shape),
                helper.make_tensor_value_info(fill, TensorProto.FLOAT, shape),
            ]
        )
        inserted.setdefault(sink.node, []).extend(
            [
                helper.make_node("Mul", [name, keep], [out + "_m"], name=out + "_Mul"),
                helper.make_node("Add", [out + "_m", fill], [out], name=out + "_Add"),
            ]
        )
        node.input[sink.input_index] = out
        ports[(sink.node, sink.input_index)] = (keep, fill, shape)
    ordered = []
    for label, node in nodes.items():  # graph order
        ordered.extend(inserted.get(label, []))
        ordered.append(node)
    del m.graph.node[:]
    m.graph.node.extend(ordered)
    return m, ports


def mask_feeds(ports: Ports, masks: Masks) -> dict[str, np.ndarray]:
    """Values of the keep/fill inputs: ones/zeros where a reader loses nothing."""
    feeds = {}
    for key, (keep_name, fill_name, shape) in ports.items():
        keep, fill = masks.get(key, (None, None))
        feeds[keep_name] = np.ones(shape, np.float32) if keep is None else np.asarray(keep, np.float32).reshape(shape)
        feeds[fill_name] = np.zeros(shape, np.float32) if fill is None else np.asarray(fill, np.float32).reshape(shape)
    return feeds


def masked_reference(original: onnx.ModelProto, analysis: ChannelAnalysis, masks: Masks) -> onnx.ModelProto:
    """The original model with every removed channel replaced, where it is read, by what the
    pruned model folds in its place (0 when masked): x -> x * keep + fill before each reader.

    Lossy pruning is proven by comparing the pruned model with this, to the same tolerance as
    exact removal: it checks the surgery even though the outputs change."""
    from onnx import numpy_helper

    m, ports = instrument_readers(original, analysis)
    values = mask_feeds(ports, masks)
    names = set(values)
    kept_inputs = [vi for vi in m.graph.input if vi.name not in names]
    del m.graph.input[:]
    m.graph.input.extend(kept_inputs)
    m.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())
    return m
