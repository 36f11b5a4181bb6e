"""A unit's isolated subgraph: its layers and every node its channels pass through (norms,
activations, depthwise convs, Add/Mul, the readers' convs), cut out of the model with the real
shapes of the tensors that enter it, and that subgraph with some of the unit's channels removed.

Tensors entering a subgraph become its inputs, with the shapes and types one onnxruntime run of
the whole model gave them; integer ones (shapes, indices) are baked in as constants with the
values of that run, as are those computed from constants alone (a Clip's bounds), so the
cut-out computes what it did in the model. Tensors leaving it (read
outside, or graph outputs, or read by nobody) are its outputs, so nothing in it is dead code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..analysis import ChannelAnalysis, analyze
from ..errors import UnsupportedModel
from ..planning import PruningPlan, enforce_constraints
from ..rules import RuleRegistry
from ..runtime import session
from ..sensitivity_analysis import Unit
from ..surgery import prune_deferred

__all__ = [
    "BoundaryTensor",
    "UnitGraph",
    "UnitVariants",
    "constant_tensors",
    "probe_boundaries",
    "submodel",
    "unit_graphs",
]

_PROBE_BYTES = 256 << 20  # outputs one probe run may hold at once


@dataclass(frozen=True)
class UnitGraph:
    """Where a unit's channels live in the model: its groups (all, and the removable ones
    lowest score first), the nodes they pass through (graph order) and the tensors that enter
    and leave those nodes."""

    unit: Unit
    groups: tuple[int, ...]
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def channels(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class BoundaryTensor:
    shape: tuple[int, ...]
    elem_type: int
    value: np.ndarray | None  # kept for integer / boolean tensors and those computed from constants


def _tensor_groups(analysis: ChannelAnalysis) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for name, lay in analysis.layouts.items():
        ids = [np.asarray(v) for v in lay.axes.values()]
        if ids:
            out[name] = set(int(g) for g in analysis.roots(np.concatenate(ids)))
    return out


def unit_graphs(model: onnx.ModelProto, analysis: ChannelAnalysis, units: Sequence[Unit]) -> list[UnitGraph]:
    """The subgraph of every unit (``model``: the one the analysis was made of, nodes named)."""
    by_tensor = _tensor_groups(analysis)
    initializers = {t.name for t in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    readers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(model.graph.node):
        for t in node.input:
            if t:
                readers[t].append(i)
    roots_of_source = {s.node: set(int(g) for g in analysis.roots(s.ids)) for s in analysis.sources}
    out = []
    for unit in units:
        all_groups: set[int] = set()
        for layer in unit.layers:
            all_groups |= roots_of_source.get(layer, set())
        mine = set(unit.groups)
        chosen = [
            i
            for i, node in enumerate(model.graph.node)
            if any(mine & by_tensor.get(t, set()) for t in list(node.input) + list(node.output) if t)
        ]
        inside = set(chosen)
        produced = {t for i in chosen for t in model.graph.node[i].output if t}
        inputs, outputs = [], []
        for i in chosen:
            for t in model.graph.node[i].input:
                if t and t not in produced and t not in initializers and t not in inputs:
                    inputs.append(t)
        for i in chosen:
            for t in model.graph.node[i].output:
                if t and (t in graph_outputs or not readers[t] or any(r not in inside for r in readers[t])):
                    outputs.append(t)
        groups = tuple(sorted(all_groups, key=lambda g: (g not in mine, g)))
        out.append(
            UnitGraph(unit, groups, tuple(model.graph.node[i].name for i in chosen), tuple(inputs), tuple(outputs))
        )
    return out


def constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors computed from constants only (Constant nodes, initializers and what follows
    from them alone): baked into a cut-out, never fed random values (a Clip's bounds)."""
    const = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in _RANDOM:
            continue
        if all(not t or t in const for t in node.input):
            const.update(t for t in node.output if t)
    return const


_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def probe_boundaries(
    model: onnx.ModelProto,
    names: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    shapes: Mapping[str, Sequence[int | None]],
    source: str,
) -> dict[str, BoundaryTensor]:
    """Shapes and types of ``names`` from onnxruntime runs of ``model`` on ``feeds``, and the
    values of the integer ones and of those computed from constants only; a few at a time so
    no run holds more than a bounded amount of memory."""
    out: dict[str, BoundaryTensor] = {}
    given = {k: np.asarray(v) for k, v in feeds.items()}
    const = constant_tensors(model)

    def kept(name: str, v: np.ndarray) -> np.ndarray | None:
        return v if name in const or not np.issubdtype(v.dtype, np.floating) else None

    for name in names:  # graph inputs need no run
        if name in given:
            v = given[name]
            out[name] = BoundaryTensor(v.shape, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), kept(name, v))
    rest = [n for n in names if n not in out]
    chunks: list[list[str]] = []
    size = 0
    for name in rest:
        dims = shapes.get(name)
        n = 4 * int(np.prod([d or 1 for d in dims])) if dims is not None else _PROBE_BYTES
        if not chunks or size + n > _PROBE_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += n
    for chunk in chunks:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.output[:]
        m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in chunk)
        run = session(m, source=source, what="the model with the latency subgraphs' inputs as outputs")
        for name, value in zip(chunk, run.run(given, chunk)):
            v = np.asarray(value)
            out[name] = BoundaryTensor(tuple(v.shape), onnx.helper.np_dtype_to_tensor_dtype(v.dtype), kept(name, v))
    return out


def submodel(model: onnx.ModelProto, graph: UnitGraph, boundary: Mapping[str, BoundaryTensor]) -> onnx.ModelProto:
    """The unit's nodes as a model of their own (see the module docstring)."""
    keep = set(graph.nodes)
    nodes = [n for n in model.graph.node if n.name in keep]
    for node in nodes:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise UnsupportedModel(f"node {node.name!r} ({node.op_type}) has subgraphs; not cut out for timing")
    used = {t for n in nodes for t in n.input if t}
    inits = [t for t in model.graph.initializer if t.name in used]
    inputs, consts = [], []
    for name in graph.inputs:
        b = boundary[name]
        if b.value is not None:
            consts.append(numpy_helper.from_array(b.value, name))
        else:
            inputs.append(onnx.helper.make_tensor_value_info(name, b.elem_type, list(b.shape)))
    g = onnx.helper.make_graph(
        nodes,
        f"{graph.unit.name}_latency",
        inputs,
        [onnx.ValueInfoProto(name=t) for t in graph.outputs],
        initializer=[*inits, *consts],
    )
    sub = onnx.helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sub.functions.extend(model.functions)
    return sub


class UnitVariants:
    """Makes the unit's subgraph with some of its channels removed: the groups the whole
    model's plan would remove (lowest score first, within the model's constraints), found in
    the subgraph by their members and removed there by the package's own surgery."""

    def __init__(
        self,
        full: ChannelAnalysis,
        graph: UnitGraph,
        sub: onnx.ModelProto,
        registry: RuleRegistry,
        source: str,
    ) -> None:
        self.full, self.graph, self.sub, self.registry = full, graph, sub, registry
        self.analysis = analyze(sub, registry=registry, source=source)
        member_group = {m: g.id for g in self.analysis.groups for m in g.members}
        self.to_sub: dict[int, int | None] = {}
        for gid in graph.unit.groups:
            found = {member_group.get(m) for m in full.group(gid).members}
            self.to_sub[gid] = found.pop() if len(found) == 1 else None

    def removal(self, kept: int) -> list[int]:
        """The whole model's groups removed to keep ``kept`` of the unit's channels (maybe
        fewer removed: constraints put some back)."""
        want = max(self.graph.channels - kept, 0)
        removed = self.graph.unit.groups[: min(want, len(self.graph.unit.groups))]
        return sorted(enforce_constraints(self.full, removed, {}))

    def model(self, removed: Sequence[int]) -> onnx.ModelProto:
        """The subgraph without these (whole-model) groups."""
        sub_groups = [self.to_sub.get(g) for g in removed]
        if any(g is None for g in sub_groups):
            raise UnsupportedModel(f"unit {self.graph.unit.name!r}: its channels are tied differently when cut out")
        chosen = enforce_constraints(self.analysis, [g for g in sub_groups if g is not None], {})
        if len(chosen) != len(removed):
            raise UnsupportedModel(f"unit {self.graph.unit.name!r}: the cut-out cannot lose the same channels")
        plan = PruningPlan("latency", tuple(chosen))
        return prune_deferred(self.sub, self.analysis, plan, registry=self.registry).complete()
