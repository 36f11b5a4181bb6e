"""What computes a tensor of a model: the nodes, attributes and initializer values upstream of
it (its cone). Two uses, both for measuring a few inner tensors many times (re-calibration's
passes, the fidelity search's trials):
- ``cone_digests``: a digest per tensor of everything its value depends on, so a statistic
  measured on the same samples can be reused while the digest is unchanged (the search's
  trials differ from each other, and from the original, in a few layers);
- ``cone_model``: the model cut to the nodes the asked tensors need, so a pass over the
  samples computes those and nothing downstream of them.
Pure: neither changes the model given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import onnx
import onnx.helper

__all__ = ["cone_digests", "cone_model", "node_reads"]

_GRAPH_KINDS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _outer_reads(node: onnx.NodeProto) -> list[str]:
    """The names a node's subgraphs read (an If / Loop body may read the outer graph's tensors
    without naming them as the node's inputs)."""
    out: list[str] = []
    for a in node.attribute:
        if a.type not in _GRAPH_KINDS:
            continue
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for sub in g.node:
                out.extend(sub.input)
                out.extend(_outer_reads(sub))
    return sorted(set(out))


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Every name a node's value depends on: its inputs, then its subgraphs' reads."""
    return [*node.input, *(n for n in _outer_reads(node) if n not in node.input)]


def cone_digests(model: onnx.ModelProto) -> dict[str, bytes]:
    """Per tensor of the main graph, a digest of what computes it: the serialized nodes
    upstream (op, attributes, names), the initializers they read (values), the graph inputs
    by name. Equal digests on the same feeds mean equal values (the same computation on the
    same runtime); a changed weight changes the digest of every tensor downstream of it."""
    graph = model.graph
    digest: dict[str, bytes] = {}
    for t in graph.initializer:
        digest[t.name] = hashlib.blake2b(b"initializer" + t.SerializeToString(), digest_size=16).digest()
    for t in graph.sparse_initializer:
        digest[t.values.name] = hashlib.blake2b(b"sparse" + t.SerializeToString(), digest_size=16).digest()
    for v in graph.input:
        digest.setdefault(v.name, hashlib.blake2b(b"input" + v.name.encode(), digest_size=16).digest())
    for node in graph.node:  # graph order is topological (ONNX)
        h = hashlib.blake2b(node.SerializeToString(), digest_size=16)
        for name in node_reads(node):
            h.update(digest.get(name, b"?" + name.encode()))  # "": an absent optional input
        for i, name in enumerate(node.output):
            out = h.copy()
            out.update(i.to_bytes(4, "little"))
            digest[name] = out.digest()
    return digest


def cone_model(model: onnx.ModelProto, names: Iterable[str], given: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are ``names`` and whose nodes and initializers are
    those they need (the graph inputs all stay: the same feeds run it). ``given`` (tensor name
    -> ONNX element type): tensors fed as inputs instead of computed, values computed before;
    those the asked ones need become graph inputs and the nodes only they needed go."""
    wanted = list(dict.fromkeys(names))
    given = {n: t for n, t in (given or {}).items() if n not in wanted}  # an asked tensor is computed
    graph = model.graph
    needed = set(wanted)
    keep = []
    for node in reversed(graph.node):
        if any(o in needed and o not in given for o in node.output):
            keep.append(node)
            needed.update(n for n in node_reads(node) if n)
    out = onnx.ModelProto()
    out.CopyFrom(model)  # opsets, functions, metadata
    g = out.graph
    del g.node[:]
    g.node.extend(reversed(keep))
    inputs = {v.name for v in graph.input}  # an initializer listed as an input (IR < 4) stays with it
    inits = [t for t in graph.initializer if t.name in needed or t.name in inputs]
    del g.initializer[:]
    g.initializer.extend(inits)
    sparse = [t for t in graph.sparse_initializer if t.values.name in needed]
    del g.sparse_initializer[:]
    g.sparse_initializer.extend(sparse)
    # The model's own outputs keep their declared types; inner tensors are asked for by name
    # (value_info may predate a surgery's channel counts).
    known: Mapping[str, onnx.ValueInfoProto] = {v.name: v for v in graph.output}
    del g.output[:]
    g.output.extend([known[n] if n in known else onnx.ValueInfoProto(name=n) for n in wanted])
    known_inputs = {v.name for v in graph.input} | {o for n in keep for o in n.output}  # fed or computed already
    g.input.extend(
        [
            onnx.helper.make_tensor_value_info(n, t, None)
            for n, t in given.items()
            if n in needed and n not in known_inputs
        ]
    )
    vi = [v for v in graph.value_info if v.name in needed and v.name not in given]
    del g.value_info[:]
    g.value_info.extend(vi)
    return out
