"""A layer's parameters as reconstruction and re-calibration read and rewrite them: the weight
(through Constant nodes, Cast, shape ops...) as an [out, in·k] matrix and the bias as added,
and a writer that puts new values in place, or, when the value is computed by nodes or shared,
in a new initializer of the layer's own (dropping the nodes nothing reads any more)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .node_names import nodes_by_name
from .params import Param, ParamResolver, is_quantized_chain
from .rules import Layer

__all__ = ["WeightWriter", "layer_params", "set_node_input"]


def set_node_input(node: onnx.NodeProto, index: int, name: str) -> None:
    """Make ``name`` input ``index`` of ``node``, padding skipped optional inputs with empty
    names (an empty name stands for a missing optional input, such as an absent bias)."""
    while len(node.input) < index:
        node.input.append("")
    if len(node.input) > index:
        node.input[index] = name
    else:
        node.input.append(name)


def layer_params(node: gs.Node, params: ParamResolver, layer: Layer) -> tuple[np.ndarray, np.ndarray, Param] | None:
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


class WeightWriter:
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

    def write(
        self,
        nodes: onnx.NodeProto | Sequence[onnx.NodeProto],
        layer: Layer,
        w_mat: np.ndarray,
        bias: np.ndarray | None,
        w: Param,
    ) -> None:
        """Set the weight of ``nodes`` (one layer, or layers that share their weight and bias
        and keep sharing them) from ``w_mat`` ([out, in·k], in the dtype and shape of ``w``,
        the weight as read) and, unless None, their bias (as added: divided by the bias scale)."""
        nodes = [nodes] if isinstance(nodes, onnx.NodeProto) else list(nodes)
        dtype = np.asarray(w.values).dtype
        shape = np.asarray(w.values).shape
        self.set(nodes, layer.weight_index, layer.weight_from_matrix(w_mat, shape).astype(dtype))
        bi = layer.bias_index
        if bias is None or bi is None:
            return
        bias = (bias / layer.bias_scale).astype(dtype)
        node = nodes[0]
        if len(node.input) > bi and node.input[bi]:
            old = self.inits.get(node.input[bi])
            self.set(nodes, bi, bias.reshape(tuple(old.dims)) if old is not None else bias)
            return
        name = f"{node.output[0]}__reconstructed_bias"
        self.model.graph.initializer.append(numpy_helper.from_array(bias, name))
        for n in nodes:
            set_node_input(n, bi, name)

    def set(self, nodes: onnx.NodeProto | Sequence[onnx.NodeProto], index: int, value: np.ndarray) -> None:
        """Set input ``index`` of ``nodes`` (one node, or nodes reading the same name there) to
        the constant ``value``."""
        nodes = [nodes] if isinstance(nodes, onnx.NodeProto) else list(nodes)
        name = nodes[0].input[index]
        init = self.inits.get(name)
        if init is not None and self.readers.get(name, 0) == len(nodes) and tuple(init.dims) == value.shape:
            init.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(init).dtype), name))
            return
        # Shared with another reader, or computed by nodes: these layers get their own initializer.
        new = f"{name}__reconstructed_{nodes[0].name or nodes[0].output[0]}"
        self.model.graph.initializer.append(numpy_helper.from_array(value, new))
        for node in nodes:
            node.input[index] = new
        self.readers[name] -= len(nodes)
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
