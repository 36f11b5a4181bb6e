"""The only code that mutates a model: a PruningPlan applied to a copy of the model.

Rules describe their edits through ``SurgeryContext`` (surgery_context.py: slice a parameter,
set an attribute, rewrite a shape constant); the edits are collected and then committed with
copy-on-write, so a parameter shared by several readers (torch dedups equal tensors) is only
changed for the readers whose edit it is, and names are kept wherever the original tensor is
not needed. Here: the run over the plan, and the export of the edited graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .analysis import ChannelAnalysis, import_graph, quiet_graphsurgeon
from .compensation import removed_id_mask, sink_fills
from .errors import UsageError
from .params import InitializerCache, ParamResolver
from .planning import PruningPlan
from .rules import RuleRegistry, default_registry
from .saving import DeferredModel, copy_fields, plain_array
from .surgery_context import SurgeryContext
from .validation import model_opset

__all__ = ["SurgeryContext", "apply_pruning", "prune_deferred"]


def apply_pruning(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    *,
    registry: RuleRegistry | None = None,
    estimates: Mapping[str, np.ndarray] | None = None,
    consume: bool = False,
) -> onnx.ModelProto:
    """Return a new model with the plan's channel groups removed. ``model`` is not modified,
    unless ``consume``: then the result is built *in* ``model`` (untouched weights are moved,
    not copied: no second copy of a big model), and ``model`` must not be used afterwards.

    ``estimates``: per sink tensor, the value to fold for removed non-constant channels
    (compensation); see compensation.sink_fills."""
    return prune_deferred(model, analysis, plan, registry=registry, estimates=estimates, consume=consume).complete()


@quiet_graphsurgeon()
def prune_deferred(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    *,
    registry: RuleRegistry | None = None,
    estimates: Mapping[str, np.ndarray] | None = None,
    consume: bool = False,
    initializers: InitializerCache | None = None,
) -> DeferredModel:
    """``apply_pruning``, with the big new weights kept as arrays until the model is written or
    completed (see saving.DeferredModel). ``initializers``: the arrays the analysis read."""
    registry = registry or default_registry()
    graph = import_graph(model)
    if initializers is None or not initializers.reads(model):
        initializers = InitializerCache(model)
    if tuple(n.name for n in graph.nodes) != analysis.node_labels:  # edits and fills go by node name
        raise UsageError("the analysis was made for another model: the nodes differ")
    removed_ids = removed_id_mask(analysis, plan)
    if not removed_ids.any():
        # Nothing to remove: the model as it was (a round trip through graphsurgeon would
        # renumber, clean up and re-type it for nothing).
        if consume:
            return DeferredModel(model)
        same = onnx.ModelProto()
        same.CopyFrom(model)
        return DeferredModel(same)
    fills = sink_fills(analysis, removed_ids, estimates)
    ctx = SurgeryContext(
        graph=graph,
        analysis=analysis,
        removed_ids=removed_ids,
        fills=fills,
        opset=model_opset(model),
        params=ParamResolver(initializers, graph),
    )
    layouts = analysis.layouts
    changed: set[str] = set()
    for name, lay in layouts.items():
        if any(removed_ids[ids].any() for ids in lay.axes.values()):
            changed.add(name)
    for node in list(graph.nodes):
        if not any(t.name in changed for t in list(node.inputs) + list(node.outputs)):
            continue
        rule = registry.lookup(node.op, node.domain or "", ctx.opset)
        if rule is not None:
            rule.apply(node, ctx)
    ctx.commit()
    for t in graph.tensors().values():
        if t.name in changed and isinstance(t, gs.Variable):
            t.shape = None
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return _export(graph, model, ctx.params, into_model=consume, changed=changed)


def _export(
    graph: gs.Graph,
    model: onnx.ModelProto,
    params: ParamResolver,
    *,
    into_model: bool,
    changed: frozenset[str] | set[str] = frozenset(),
) -> DeferredModel:
    """Write the edited ``graph`` out as a model with ``model``'s fields (opsets, metadata,
    functions). Weights are written here, not by graphsurgeon's exporter (which copies each
    one four times): untouched initializers are copied once from ``model`` or, ``into_model``,
    left where they are; big new arrays are deferred (see saving.DeferredModel). ``params``:
    the resolver made with ``graph`` when it was imported (it knows which Constants are
    ``model``'s initializers)."""
    untouched: set[str] = set()
    fresh: list[tuple[str, np.ndarray]] = []
    for t in list(graph.tensors().values()):
        if not isinstance(t, gs.Constant):
            continue
        stored = params.initializer(t)
        if stored is not None and stored.name == t.name:
            untouched.add(t.name)
        else:  # made by the surgery (an array), or an initializer under a new name
            fresh.append((t.name, params(t).values if stored is not None else np.asarray(t.values)))
        # Stand in for it by name only, so the exporter leaves its data alone.
        stand_in = gs.Variable(t.name)
        for consumer in list(t.outputs):
            for i, x in enumerate(list(consumer.inputs)):
                if x is t:
                    consumer.inputs[i] = stand_in
    exported = gs.export_onnx(graph, do_type_check=False).graph  # nodes and value infos only

    if into_model:
        out = model
        g = out.graph
        for i in reversed(range(len(g.initializer))):
            if g.initializer[i].name not in untouched:
                del g.initializer[i]
    else:
        out = onnx.ModelProto()
        copy_fields(out, model, exclude=("graph",))
        g = out.graph
        copy_fields(g, model.graph, exclude=("node", "initializer", "input", "output", "value_info"))
        for t in model.graph.initializer:
            if t.name in untouched:
                g.initializer.add().CopyFrom(t)
    deferred: list[tuple[str, np.ndarray]] = []
    for name, values in fresh:
        plain = plain_array(values)
        if plain is not None and plain.dtype.kind == "f" and plain.nbytes >= _DEFER_BYTES:  # weights, not shapes
            deferred.append((name, plain))
        else:
            g.initializer.add().CopyFrom(onnx.numpy_helper.from_array(values, name))
    arrays: dict[str, np.ndarray] = {}
    for name, values in deferred:  # hollow ones last: DeferredModel.encode sets them aside
        DeferredModel.add_hollow(g, arrays, name, values)
    # The graph's inputs and outputs keep their declarations (types, shapes, dim names,
    # metadata): graphsurgeon's export loses metadata and may lose symbolic dims, and pruning
    # never changes them (inputs and outputs pin their channels).
    declared = {vi.name: vi for vi in (*model.graph.input, *model.graph.output) if vi.name not in changed}
    kept_io = {f: [_declared(vi, declared) for vi in getattr(exported, f)] for f in ("input", "output")}
    for field_name in ("node", "value_info", "input", "output"):
        container = getattr(g, field_name)
        del container[:]
        container.extend(kept_io.get(field_name, getattr(exported, field_name)))
    return DeferredModel(out, arrays)


def _declared(vi: onnx.ValueInfoProto, declared: Mapping[str, onnx.ValueInfoProto]) -> onnx.ValueInfoProto:
    """The original declaration of a graph input or output, copied, or ``vi`` if it has none."""
    original = declared.get(vi.name)
    if original is None:
        return vi
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(original)
    return copy


_DEFER_BYTES = 1 << 16  # smaller arrays are cheaper to write at once than to track
