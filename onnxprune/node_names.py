"""One name per node, the same in every representation of a model.

The analysis, rules and surgery read a graphsurgeon ``Graph``; metrics, budget, compensation,
reconstruction and instrumentation read the ``ModelProto``; the pruned model has nodes added
and reordered. They refer to a node by its name, never by its position, so every node of the
main graph needs a unique one: ``load_model`` names every unnamed node ``Op#index`` (the label
messages always used) and renames a repeated name ``name#index``; the names stay in the pruned
model. The naming is deterministic and idempotent, so a model that did not come through
``load_model`` gets the same names wherever it is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import onnx
import onnx_graphsurgeon as gs

__all__ = ["name_graph_nodes", "name_nodes", "nodes_by_name", "unique_node_names"]


def unique_node_names(nodes: Sequence[tuple[str, str]]) -> list[str]:
    """``(name, op_type)`` of each node in graph order -> a unique, non-empty name per node.

    A node keeps its name unless it is empty or an earlier node has it; those get
    ``Op#index`` / ``name#index`` (with ``_k`` appended in the unlikely case that is taken)."""
    taken: set[str] = set()
    keeps: list[bool] = []
    for name, _ in nodes:
        keeps.append(bool(name) and name not in taken)
        if name:
            taken.add(name)
    out = []
    for index, ((name, op), keep) in enumerate(zip(nodes, keeps)):
        if keep:
            out.append(name)
            continue
        base = f"{name or op}#{index}"
        new, k = base, 0
        while new in taken:
            k += 1
            new = f"{base}_{k}"
        taken.add(new)
        out.append(new)
    return out


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node of the main graph a unique name, in place (see the module doc)."""
    nodes = model.graph.node
    for node, name in zip(nodes, unique_node_names([(n.name, n.op_type) for n in nodes])):
        if node.name != name:
            node.name = name


def name_graph_nodes(graph: gs.Graph) -> None:
    """``name_nodes`` for a graphsurgeon graph imported from a model (same order, same names)."""
    for node, name in zip(graph.nodes, unique_node_names([(n.name or "", n.op) for n in graph.nodes])):
        node.name = name


def nodes_by_name(nodes: Iterable[onnx.NodeProto]) -> dict[str, onnx.NodeProto]:
    """The nodes of a model's graph by their unique name (``name_nodes``'s, if they lack one)."""
    nodes = list(nodes)
    return dict(zip(unique_node_names([(n.name, n.op_type) for n in nodes]), nodes))
