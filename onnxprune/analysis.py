"""Channel analysis: which channel positions of which tensors are the same channel.

Every channel axis of every tensor carries a vector of channel ids. Source ops (Conv, Gemm, ...)
create fresh ids, rules map them through the graph, and union-find joins the ids that must be
removed together. Anything a rule cannot map pins the ids it touches, with a reason.
The result is a frozen ``ChannelAnalysis``; nothing here mutates the model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ._core import Layout, NotApplicable, UnionFind
from .node_names import name_graph_nodes
from .params import InitializerCache, Param, ParamResolver
from .rules import RuleRegistry, default_registry
from .shape_values import ShapeEvaluator, is_shape_arithmetic
from .shapes import Shape, concrete_input_shapes, infer_static_shapes
from .validation import model_opset

__all__ = [
    "Balance",
    "ChannelAnalysis",
    "ChannelGroup",
    "Sink",
    "Source",
    "analyze",
    "import_graph",
    "quiet_graphsurgeon",
    "static_shapes",
]


@dataclass(frozen=True)
class Source:
    """A layer whose output channels are created here (Conv, ConvTranspose, Gemm, MatMul)."""

    node: str
    op: str
    ids: np.ndarray


@dataclass(frozen=True)
class Sink:
    """A place where channels are read and leave the channel flow (a Conv's input channels...).

    ``fold_blocker`` is None when a known constant channel read here can be folded into the
    reader's bias, else the reason it cannot (e.g. zero padding over the input).
    """

    node: str
    input_index: int
    tensor: str
    axis: int
    fold_blocker: str | None


@dataclass(frozen=True)
class Balance:
    """Removal must take the same number of channels from every row (grouped Conv groups),
    except from rows whose ``whole`` group (a grouped Conv's input and output channels of one
    group) goes entirely: the surgery drops that group and lowers ``group``."""

    node: str
    rows: tuple[np.ndarray, ...]
    reason: str
    whole: tuple[np.ndarray, ...] = ()  # per row: the ids that, all removed, drop the row's group


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together or not at all."""

    id: int
    members: tuple[tuple[str, int], ...]  # (source node, output channel)
    pinned_by: tuple[str, ...]

    @property
    def pinned(self) -> bool:
        return bool(self.pinned_by)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "channels": len(self.members),
            "members": [{"node": n, "channel": c} for n, c in self.members],
            "pinned_by": list(self.pinned_by),
        }


@dataclass(frozen=True, eq=False)
class ChannelAnalysis:
    """The channel groups of a model and everything surgery and criteria need to use them."""

    groups: tuple[ChannelGroup, ...]
    layouts: Mapping[str, Layout]
    sources: tuple[Source, ...]
    sinks: tuple[Sink, ...]
    balances: tuple[Balance, ...]
    root_of: np.ndarray  # channel id -> group id
    shapes: Mapping[str, Shape]
    node_labels: tuple[str, ...]  # every node's unique name, in graph order (see node_names)
    # Weight-bearing layers inside subgraphs (If/Loop/Scan bodies), which are not analysed: one
    # line per node holding them, saying so (they are left untouched).
    not_analysed: tuple[str, ...] = ()

    def group(self, group_id: int) -> ChannelGroup:
        return self._by_id[group_id]

    @property
    def _by_id(self) -> dict[int, ChannelGroup]:
        cached = self.__dict__.get("_by_id_cache")
        if cached is None:
            cached = {g.id: g for g in self.groups}
            object.__setattr__(self, "_by_id_cache", cached)
        return cached

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return self.root_of[np.asarray(ids, dtype=np.int64)]

    def summary(self) -> dict:
        pinned = [g for g in self.groups if g.pinned]
        return {
            "groups": len(self.groups),
            "channels": int(sum(len(s.ids) for s in self.sources)),
            "pinned_groups": len(pinned),
            "pinned_channels": int(sum(len(g.members) for g in pinned)),
            "not_analysed": list(self.not_analysed),
        }


@dataclass
class AnalysisContext:
    """What a rule sees while propagating: layouts, shapes, parameters, ids, pins."""

    graph: gs.Graph
    shapes: Mapping[str, Shape]
    opset: int
    params: ParamResolver = field(default_factory=ParamResolver)
    uf: UnionFind = field(default_factory=UnionFind)
    layouts: dict[str, Layout] = field(default_factory=dict)
    pins: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    sources: list[Source] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    balances: list[Balance] = field(default_factory=list)
    node: gs.Node | None = None
    label: str = ""
    source: str = "<model>"
    shape_values: ShapeEvaluator | None = None
    validated_shape_inputs: set[tuple[int, int]] = field(default_factory=set)

    # -- reading -------------------------------------------------------------------------
    def layout(self, t: gs.Tensor | None) -> Layout | None:
        if t is None or not t.name:
            return None
        return self.layouts.get(t.name)

    def shape(self, t: gs.Tensor | None) -> Shape | None:
        if t is None or not t.name:
            return None
        if isinstance(t, gs.Constant):
            return tuple(t.shape)
        return self.shapes.get(t.name)

    def rank(self, t: gs.Tensor | None) -> int | None:
        s = self.shape(t)
        if s is not None:
            return len(s)
        lay = self.layout(t)
        return lay.rank if lay is not None else None

    def param(self, t: gs.Tensor | None) -> Param | None:
        return self.params(t)

    # -- writing -------------------------------------------------------------------------
    def set_layout(self, t: gs.Tensor, layout: Layout) -> None:
        if layout.axes:
            self.layouts[t.name] = layout

    def fresh(self, n: int) -> np.ndarray:
        return self.uf.fresh(n)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        self.uf.union_arrays(a, b)

    def pin(self, ids: np.ndarray, reason: str) -> None:
        text = f"{self.label} ({self.node.op}): {reason}" if self.node is not None else reason
        for i in np.unique(np.asarray(ids, dtype=np.int64)):
            self.pins[int(i)].append(text)

    def ids_for(self, t: gs.Tensor, axis: int, n: int, why: str) -> np.ndarray:
        """The ids of ``t`` along ``axis``; for a tensor without channel ids, fresh pinned ids."""
        lay = self.layout(t)
        if lay is not None and axis in lay.axes:
            return lay.axes[axis]
        ids = self.fresh(n)
        self.pin(ids, why)
        return ids

    def invalid(self, reason: str) -> None:
        """The model contradicts itself here (e.g. a weight's shape does not fit its input)."""
        from .errors import LoadError

        op = self.node.op if self.node is not None else "?"
        raise LoadError(f"{self.source}: node {self.label!r} ({op}): {reason}")

    def add_source(self, node: gs.Node, n: int) -> np.ndarray:
        ids = self.fresh(n)
        self.sources.append(Source(self.label, node.op, ids))
        return ids

    def add_sink(self, node: gs.Node, input_index: int, axis: int, fold_blocker: str | None) -> None:
        self.sinks.append(Sink(self.label, input_index, node.inputs[input_index].name, axis, fold_blocker))

    def runtime_value(self, t: gs.Tensor, overrides: Mapping[str, tuple[int, ...]] | None = None) -> np.ndarray | None:
        """Value of a tensor computed at run time from Shape() and constants (see shape_values)."""
        return None if self.shape_values is None else self.shape_values.value(t, overrides)

    def runtime_sources(self, t: gs.Tensor) -> frozenset[str] | None:
        return None if self.shape_values is None else self.shape_values.sources(t)

    def validate_shape_input(self, node: gs.Node, index: int) -> None:
        """Declare that the rule proved this run-time shape input stays right after pruning."""
        self.validated_shape_inputs.add((id(node), index))

    def add_balance(self, rows: list[np.ndarray], reason: str, whole: list[np.ndarray] | None = None) -> None:
        self.balances.append(
            Balance(self.label, tuple(np.asarray(r) for r in rows), reason, tuple(np.asarray(w) for w in whole or ()))
        )

    def pin_all_inputs(self, node: gs.Node, reason: str) -> None:
        for t in node.inputs:
            lay = self.layout(t)
            if lay is not None:
                self.pin(lay.all_ids(), reason)


@contextmanager
def quiet_graphsurgeon() -> Iterator[None]:
    """graphsurgeon's logger prints its warnings on stdout ('Could not convert: BFLOAT16 to a
    corresponding NumPy type' for a bfloat16 output); the library never prints, so they are
    silenced while it works for us (its critical errors still raise). Also a decorator."""
    logger = gs.logger.G_LOGGER
    with logger.suppress(logger.CRITICAL + 1):
        yield


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """The model as a graphsurgeon Graph (weights are loaded lazily), every node named as
    ``load_model`` names it (a no-op for a loaded model)."""
    with quiet_graphsurgeon():
        graph = gs.import_onnx(model)
    name_graph_nodes(graph)
    return graph


def _subgraph_attrs(node: gs.Node) -> bool:
    return bool(_subgraphs(node))


def _subgraphs(node: gs.Node) -> list[tuple[str, gs.Graph]]:
    """(attribute name, graph) of every subgraph a node holds (If branches, Loop/Scan bodies)."""
    out = []
    for name, v in node.attrs.items():
        if isinstance(v, gs.Graph):
            out.append((name, v))
        elif isinstance(v, list):
            out += [(name, g) for g in v if isinstance(g, gs.Graph)]
    return out


def _layers_inside(node: gs.Node, registry: RuleRegistry, opset: int) -> str | None:
    """What a node with subgraphs holds that the analysis would prune, as one line (None if
    nothing): the subgraphs are not analysed, so those layers are left untouched."""
    counts: dict[str, int] = defaultdict(int)
    attrs = []
    stack = [g for _, g in _subgraphs(node)]
    for name, _ in _subgraphs(node):
        if name not in attrs:
            attrs.append(name)
    while stack:
        graph = stack.pop()
        for inner in graph.nodes:
            if registry.layer(inner, opset) is not None:
                counts[inner.op] += 1
            stack += [g for _, g in _subgraphs(inner)]
    if not counts:
        return None
    n = sum(counts.values())
    what = ", ".join(f"{c} {op}" for op, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return (
        f"{what} node{'s are' if n > 1 else ' is'} inside the subgraphs of {node.op} {node.name!r} "
        f"({', '.join(sorted(attrs))}), which are not analysed: left untouched"
    )


@quiet_graphsurgeon()
def analyze(
    model: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    registry: RuleRegistry | None = None,
    source: str = "<model>",
    graph: gs.Graph | None = None,
    initializers: InitializerCache | None = None,
) -> ChannelAnalysis:
    """Find the channel groups of a loaded model (see ``onnxprune.load`` / ``prune``).
    ``initializers``: keeps the weight arrays read here for a later step (the surgery)."""
    registry = registry or default_registry()
    in_shapes = concrete_input_shapes(model, input_shapes or {}, source)
    if graph is None:
        graph = import_graph(model)
    else:
        name_graph_nodes(graph)
    if initializers is None or not initializers.reads(model):
        initializers = InitializerCache(model)
    params = ParamResolver(initializers, graph)
    shapes = static_shapes(model, in_shapes, graph, params)
    ctx = AnalysisContext(graph=graph, shapes=shapes, opset=model_opset(model), params=params, source=source)
    ctx.shape_values = ShapeEvaluator(shapes, params)

    labels = tuple(n.name for n in graph.nodes)
    not_analysed: list[str] = []
    visited: set[int] = set()
    for node in graph.nodes:
        visited.add(id(node))
        ctx.node, ctx.label = node, node.name
        tracked = any(ctx.layout(t) is not None for t in node.inputs)
        if _subgraph_attrs(node):
            inside = _layers_inside(node, registry, ctx.opset)
            if inside:
                not_analysed.append(inside)
            if tracked:
                ctx.pin_all_inputs(node, "has a subgraph; channels entering it are never changed")
            continue
        rule = registry.lookup(node.op, node.domain or "", ctx.opset)
        if rule is None:
            if tracked:
                domain = f" of domain {node.domain!r}" if node.domain not in (None, "", "ai.onnx") else ""
                ctx.pin_all_inputs(
                    node, f"op {node.op}{domain} has no rule; an op without one is never assumed element-wise"
                )
            continue
        written_before = {t.name for t in node.outputs if t.name in ctx.layouts}
        result = rule.propagate(node, ctx)
        if isinstance(result, NotApplicable):
            ctx.pin_all_inputs(node, result.reason)
            for t in node.outputs:
                if t.name not in written_before:
                    ctx.layouts.pop(t.name, None)
    ctx.node = None

    # Channels that reach a graph output or a node we did not visit (inside a subgraph) stay.
    for out in graph.outputs:
        lay = ctx.layout(out)
        if lay is not None:
            ctx.pin(lay.all_ids(), f"reaches graph output {out.name!r}")
    _pin_channel_counts_read_at_run_time(ctx)
    tensors = graph.tensors()
    for name, lay in ctx.layouts.items():
        t = tensors.get(name)
        if t is None:
            continue
        for consumer in t.outputs:
            if id(consumer) not in visited:
                ctx.pin(lay.all_ids(), f"tensor {name!r} is read inside a subgraph ({consumer.op} {consumer.name})")

    # No gc.collect() here: graphsurgeon's node <-> tensor cycles hold no weights (constants are
    # read without caching them on the graph), so the cyclic collector may take its time.
    return _freeze(ctx, shapes, labels, tuple(not_analysed))


def static_shapes(
    model: onnx.ModelProto,
    in_shapes: Mapping[str, Shape],
    graph: gs.Graph | None = None,
    params: ParamResolver | None = None,
) -> dict[str, Shape]:
    """Shape inference, repeated while run-time shape expressions become computable (each
    round can unlock the next block of a network that computes its reshapes from shapes)."""
    graph = graph if graph is not None else import_graph(model)
    params = params if params is not None else ParamResolver()
    known: dict[str, np.ndarray] = {}
    shapes = infer_static_shapes(model, in_shapes)
    for _ in range(len(graph.nodes)):
        evaluator = ShapeEvaluator(shapes, params)
        new = {}
        for node in graph.nodes:
            if is_shape_arithmetic(node, evaluator):
                continue
            for t in node.inputs:
                if not t.name or t.name in known or isinstance(t, gs.Constant) or params(t) is not None:
                    continue
                if evaluator.sources(t):
                    value = evaluator.value(t)
                    if value is not None:
                        new[t.name] = value
        if not new:
            break
        known.update(new)
        shapes = infer_static_shapes(model, in_shapes, known)
    return shapes


def _pin_channel_counts_read_at_run_time(ctx: AnalysisContext) -> None:
    """A run-time shape expression that reads a channel count and reaches an op whose rule did
    not prove it safe (an Expand, a ConstantOfShape, an unvalidated Reshape...) pins those
    channels: removing one would change what the expression computes."""
    assert ctx.shape_values is not None
    for node in ctx.graph.nodes:
        if is_shape_arithmetic(node, ctx.shape_values):
            continue
        for index, t in enumerate(node.inputs):
            if not t.name or (id(node), index) in ctx.validated_shape_inputs:
                continue
            sources = ctx.runtime_sources(t)
            if not sources:
                continue
            base = ctx.runtime_value(t)
            for name in sources:
                lay = ctx.layouts.get(name)
                shape = ctx.shapes.get(name)
                if lay is None or shape is None or any(d is None for d in shape):
                    continue
                for axis, ids in lay.axes.items():
                    probe = list(shape)
                    probe[axis] -= 1
                    changed = ctx.runtime_value(t, {name: tuple(probe)})
                    if base is None or changed is None or not np.array_equal(base, changed):
                        ctx.node, ctx.label = node, node.name
                        ctx.pin(ids, f"reads the channel count of {name!r} at run time")
    ctx.node = None


def _freeze(
    ctx: AnalysisContext, shapes: Mapping[str, Shape], labels: tuple[str, ...], not_analysed: tuple[str, ...] = ()
) -> ChannelAnalysis:
    n = len(ctx.uf)
    root_of = ctx.uf.roots(np.arange(n)) if n else np.zeros(0, np.int64)
    members: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for src in ctx.sources:
        for ch, i in enumerate(src.ids):
            members[int(root_of[i])].append((src.node, ch))
    reasons: dict[int, list[str]] = defaultdict(list)
    for i, rs in ctx.pins.items():
        bucket = reasons[int(root_of[i])]
        for r in rs:
            if r not in bucket:
                bucket.append(r)
    groups = tuple(
        ChannelGroup(root, tuple(mem), tuple(reasons.get(root, ()))) for root, mem in sorted(members.items())
    )
    return ChannelAnalysis(
        groups=groups,
        layouts=MappingProxyType(dict(ctx.layouts)),
        sources=tuple(ctx.sources),
        sinks=tuple(ctx.sinks),
        balances=tuple(ctx.balances),
        root_of=root_of,
        shapes=MappingProxyType(dict(shapes)),
        node_labels=labels,
        not_analysed=not_analysed,
    )
