"""What a rule's ``apply`` edits a model through (rules.base.ApplyContext): the surgery's
context collects the edits of every rule (slice a parameter, set an attribute, rewrite a shape
constant) and commits them with copy-on-write, so a parameter shared by several readers (torch
dedups equal tensors) is only changed for the readers whose edit it is. surgery.py runs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .analysis import ChannelAnalysis
from .edits import Edit, GroupColumns, SetValue, SliceAxis, apply_edits, edit_key
from .errors import UnsupportedModel
from .fake_quantize import is_fake_quantize
from .params import ARITHMETIC_OPS, SHAPE_OPS, ParamResolver, is_quantized_chain

__all__ = ["SurgeryContext"]


@dataclass
class SurgeryContext:
    """What a rule's ``apply`` uses to describe its edits."""

    graph: gs.Graph
    analysis: ChannelAnalysis
    removed_ids: np.ndarray  # bool per channel id
    fills: Mapping[tuple[str, int], np.ndarray]  # (sink node, input index) -> fill per position
    opset: int
    params: ParamResolver = field(default_factory=ParamResolver)
    edits: dict[tuple[int, int], list[Edit]] = field(default_factory=lambda: defaultdict(list))
    nodes: dict[int, gs.Node] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)

    # -- reading ---------------------------------------------------------------------------
    def keep(self, t: gs.Tensor, axis: int, n: int) -> np.ndarray:
        """Which positions of ``t`` along ``axis`` stay (all of them if the axis has no ids)."""
        lay = self.analysis.layouts.get(t.name)
        if lay is None or axis not in lay.axes:
            return np.ones(n, dtype=bool)
        ids = lay.axes[axis]
        if len(ids) != n:
            raise UnsupportedModel(f"internal: {t.name} axis {axis} has {len(ids)} ids but {n} positions")
        return ~self.removed_ids[ids]

    def param(self, t: gs.Tensor | None):
        return self.params(t)

    def param_values(self, node: gs.Node, index: int) -> np.ndarray:
        p = self.params(node.inputs[index])
        if p is None:
            raise UnsupportedModel(f"internal: input {index} of {node.name or node.op} is not a constant")
        return p.values

    def param_values_or_none(self, node: gs.Node, index: int) -> np.ndarray | None:
        p = self.params(node.inputs[index]) if index < len(node.inputs) else None
        return None if p is None else p.values

    def fold_delta(self, node: gs.Node, index: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
        """``fn(fill)`` where ``fill`` holds, per position of the node's input ``index``, the value
        a removed channel is replaced by (0 where kept); None when there is nothing to fold."""
        fill = self.fills.get((node.name, index))  # nodes are named as in the analysis
        if fill is None or not np.any(fill):
            return None
        return np.asarray(fn(fill), dtype=np.float64)

    # -- edits -----------------------------------------------------------------------------
    def _edit(self, node: gs.Node, index: int, edit: Edit) -> None:
        self.nodes[id(node)] = node
        self.edits[(id(node), index)].append(edit)

    def slice_param(self, node: gs.Node, index: int, axis: int, keep: np.ndarray) -> None:
        if not np.all(keep):
            self._edit(node, index, SliceAxis(axis, np.asarray(keep, dtype=bool)))

    def group_columns(self, node: gs.Node, index: int, groups: int, keep: np.ndarray) -> None:
        if not np.all(keep):
            self._edit(node, index, GroupColumns(groups, np.asarray(keep, dtype=bool)))

    def set_param(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        if index >= len(node.inputs) or not node.inputs[index].name:
            self.add_input(node, index, values, "param")
            return
        self._edit(node, index, SetValue(np.asarray(values)))

    def set_attr(self, node: gs.Node, name: str, value: object) -> None:
        node.attrs[name] = value

    def drop_attr(self, node: gs.Node, name: str) -> None:
        node.attrs.pop(name, None)

    def add_input(self, node: gs.Node, index: int, values: np.ndarray, hint: str) -> None:
        const = gs.Constant(self.unique_name(f"{node.name or node.op}_{hint}"), np.asarray(values))
        while len(node.inputs) < index:
            node.inputs.append(gs.Variable.empty())
        if index < len(node.inputs):
            node.inputs[index] = const
        else:
            node.inputs.append(const)

    def append_bias(self, node: gs.Node, bias: np.ndarray) -> None:
        """Add ``bias`` to the node's first output with a new Add node; readers keep the name."""
        out = node.outputs[0]
        inner = gs.Variable(self.unique_name(f"{out.name}_before_bias"), dtype=out.dtype)
        node.outputs[0] = inner
        const = gs.Constant(self.unique_name(f"{node.name or node.op}_folded_bias"), np.asarray(bias))
        self.graph.nodes.append(
            gs.Node("Add", name=self.unique_name(f"{node.name or node.op}_bias"), inputs=[inner, const], outputs=[out])
        )

    def unique_name(self, base: str) -> str:
        if not self._names:
            self._names = set(self.graph.tensors().keys()) | {n.name for n in self.graph.nodes}
        name, k = base, 0
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    # -- commit ----------------------------------------------------------------------------
    def commit(self) -> None:
        """Materialise the collected parameter edits, copying shared tensors on write."""
        by_tensor: dict[int, list[tuple[gs.Node, int, tuple]]] = defaultdict(list)
        tensors: dict[int, gs.Tensor] = {}
        for (nid, index), edits in self.edits.items():
            node = self.nodes[nid]
            t = node.inputs[index]
            tensors[id(t)] = t
            by_tensor[id(t)].append((node, index, edit_key(edits)))
        for tid, readers in by_tensor.items():
            t = tensors[tid]
            signatures = {sig for _, _, sig in readers}
            exclusive = len(signatures) == 1 and len(readers) == len(t.outputs) and _chain_exclusive(t)
            made: dict[tuple, gs.Tensor] = {}
            for node, index, sig in readers:
                if sig not in made:
                    made[sig] = self._materialize(t, self.edits[(id(node), index)], keep_names=exclusive)
                node.inputs[index] = made[sig]

    def _retire(self, t: gs.Tensor) -> str:
        """Rename a tensor that is being replaced, so its successor can take its name."""
        name = t.name
        t.name = self.unique_name(f"{name}__replaced")
        return name

    def _materialize(self, t: gs.Tensor, edits: list[Edit], keep_names: bool) -> gs.Tensor:
        if edits and isinstance(edits[0], SetValue):
            # A new value replaces the whole chain; only Identity may stand between (a quantized
            # value cannot be overwritten exactly, and the analysis never asks for it).
            base = self.params(t)
            if base is not None and is_quantized_chain(base):
                raise UnsupportedModel(f"internal: cannot overwrite {t.name}: it is computed by {base.chain[0].op}")
            dtype = np.asarray(base.values).dtype if base is not None else np.asarray(edits[0].values).dtype
            name = self._retire(t) if keep_names else self.unique_name(f"{t.name}_pruned")
            return gs.Constant(name, apply_edits(np.asarray(edits[0].values).astype(dtype), edits[1:]))
        original = t.name
        name = self._retire(t) if keep_names else self.unique_name(f"{t.name}_pruned")
        if isinstance(t, gs.Constant):  # the resolver's array: rules have read it already
            sliced = gs.Constant(name, apply_edits(self.params(t).values, edits))
            self.params.forget(t)
            return sliced
        producer = t.inputs[0]
        if producer.op == "Constant":
            value = self.params(t).values
            return gs.Constant(name, apply_edits(np.asarray(value), edits))
        if producer.op == "Identity":
            return self._materialize(producer.inputs[0], edits, keep_names)
        if producer.op in ("DequantizeLinear", "QuantizeLinear"):
            x = producer.inputs[0]
            ndim = len(self.params(x).values.shape)
            axis = int(producer.attrs.get("axis", 1)) % max(ndim, 1)
            new_x = self._materialize(x, edits, keep_names)
            inputs = [new_x]
            for extra in producer.inputs[1:]:
                p = self.params(extra) if extra.name else None
                if p is not None and p.values.ndim == 1 and p.values.size > 1:
                    sub: list[Edit] = [
                        SliceAxis(0, o.keep) for o in edits if isinstance(o, SliceAxis) and o.axis == axis
                    ]
                    inputs.append(self._materialize(extra, sub, keep_names) if sub else extra)
                else:
                    inputs.append(extra)
            return self._rebuild(producer, inputs, name, t, keep_names)
        if producer.op in SHAPE_OPS:
            # Folded: the result has the stored tensor's type and size (a bias [C] reshaped to
            # [1, C, 1, 1] becomes a [1, C', 1, 1] initializer), so nothing grows.
            return gs.Constant(name, apply_edits(np.asarray(self.params(t).values), edits))
        if producer.op == "Cast":
            # Kept as a Cast of the sliced stored tensor: an int8 weight stays int8 in the file.
            return self._rebuild(
                producer, [self._materialize(producer.inputs[0], edits, keep_names)], name, t, keep_names
            )
        if producer.op in ARITHMETIC_OPS:
            # Each operand sliced on its own axes (the int8 weight and its per-channel scale of
            # Cast -> Mul together); a broadcast (size-1) axis needs nothing.
            rank = len(self._shape(t, original))
            inputs = []
            for operand in producer.inputs:
                sub = _operand_edits(self._shape(operand, operand.name), rank, edits, original)
                inputs.append(self._materialize(operand, sub, keep_names) if sub else operand)
            return self._rebuild(producer, inputs, name, t, keep_names)
        if is_fake_quantize(producer.op, producer.domain):
            return self._materialize_fake_quantize(producer, t, edits, name, keep_names)
        raise UnsupportedModel(f"internal: cannot edit {t.name}: produced by {producer.op}")

    def _shape(self, t: gs.Tensor, name: str) -> tuple[int, ...]:
        """A constant's shape, or a run-time operand's static one (a scale computed at run time
        by a constant subgraph that is sliced, see rules.elementwise.scaled_constant); ``name``
        is the tensor's name in the analysis (it may have been retired since)."""
        p = self.params(t)
        if p is not None:
            return tuple(np.asarray(p.values).shape)
        shape = self.analysis.shapes.get(name)
        if shape is None or any(d is None for d in shape):
            raise UnsupportedModel(f"internal: cannot edit a value computed from {name}: its shape is unknown")
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]

    def _materialize_fake_quantize(
        self, producer: gs.Node, t: gs.Tensor, edits: list[Edit], name: str, keep_names: bool
    ) -> gs.Tensor:
        """A weight behind FakeQuantize: the stored weight and every range that spans an edited
        axis (per output channel, [C,1,1,1]) are sliced with it; broadcast ranges are kept. A
        Constant passed as both input_low and output_low (NNCF's export) is sliced once, and a
        range shared with other nodes is copied, never changed for them (copy-on-write)."""
        x = producer.inputs[0]
        rank = np.asarray(self.params(x).values).ndim
        inputs = [self._materialize(x, edits, keep_names)]
        made: dict[int, gs.Tensor] = {}
        for extra in producer.inputs[1:5]:
            sub = _range_edits(np.asarray(self.params(extra).values).shape, rank, edits, t.name)
            if not sub:
                inputs.append(extra)
                continue
            if id(extra) not in made:
                exclusive = keep_names and all(c is producer for c in extra.outputs) and _chain_exclusive(extra)
                made[id(extra)] = self._materialize(extra, sub, exclusive)
            inputs.append(made[id(extra)])
        return self._rebuild(producer, inputs, name, t, keep_names)

    def _rebuild(
        self, producer: gs.Node, inputs: list[gs.Tensor], name: str, t: gs.Tensor, keep_names: bool
    ) -> gs.Tensor:
        """A copy of ``producer`` reading ``inputs``, its output named ``name``; with
        ``keep_names`` it takes the original node's name and the original is disconnected."""
        out = gs.Variable(name, dtype=t.dtype)
        node_name = self.unique_name(f"{producer.name or producer.op}_pruned")
        if keep_names and producer.name:
            node_name, producer.name = producer.name, node_name
        self.graph.nodes.append(
            gs.Node(
                producer.op,
                name=node_name,
                attrs=dict(producer.attrs),
                inputs=inputs,
                outputs=[out],
                domain=producer.domain,
            )
        )
        if keep_names:
            producer.outputs.clear()
        return out


def _range_edits(shape: tuple[int, ...], rank: int, edits: list[Edit], name: str) -> list[Edit]:
    """The edits of a FakeQuantize result of rank ``rank`` as they apply to one of its ranges
    (broadcast numpy-style): an axis the range has in full is sliced, a size-1 axis is not."""
    out: list[Edit] = []
    offset = rank - len(shape)
    for edit in edits:
        if isinstance(edit, SliceAxis):
            local = edit.axis - offset
            if local < 0 or shape[local] == 1:
                continue
            if shape[local] != len(edit.keep):
                raise UnsupportedModel(
                    f"internal: cannot edit {name}: a FakeQuantize range has {shape[local]} positions on axis {edit.axis}"
                )
            out.append(SliceAxis(local, edit.keep))
        elif isinstance(edit, GroupColumns):
            if offset == 0 and len(shape) > 1 and int(np.prod(shape[1:])) == 1:
                continue  # one range per output row: the columns are broadcast
            raise UnsupportedModel(
                f"internal: cannot edit {name}: a FakeQuantize range spans the weight's input channels"
            )
        else:
            raise UnsupportedModel(f"internal: cannot overwrite {name}: it is computed by FakeQuantize")
    return out


def _operand_edits(shape: tuple[int, ...], rank: int, edits: list[Edit], name: str) -> list[Edit]:
    """The edits of a broadcast result of rank ``rank`` as they apply to one operand of
    ``shape``: a sliced axis the operand has in full is sliced, a size-1 (broadcast) one is not."""
    out: list[Edit] = []
    offset = rank - len(shape)
    for edit in edits:
        if isinstance(edit, SliceAxis):
            local = edit.axis - offset
            if local < 0 or shape[local] == 1:
                continue
            if shape[local] != len(edit.keep):
                raise UnsupportedModel(
                    f"internal: cannot edit {name}: an operand has {shape[local]} positions on axis {edit.axis}, not {len(edit.keep)}"
                )
            out.append(SliceAxis(local, edit.keep))
        elif isinstance(edit, GroupColumns):
            if offset == 0 and len(shape) > 1 and shape[1] == 1:
                continue  # one value per output row: the columns are broadcast
            if offset != 0 or shape[1] != edit.keep.shape[1]:
                raise UnsupportedModel(f"internal: cannot edit {name}: an operand does not span the grouped columns")
            out.append(edit)
        else:
            raise UnsupportedModel(f"internal: cannot edit {name}: a value computed from constants is only sliced")
    return out


_CHAIN_OPS = frozenset({"Identity", "DequantizeLinear", "QuantizeLinear", "Cast"}) | SHAPE_OPS | ARITHMETIC_OPS


def _chain_exclusive(t: gs.Tensor) -> bool:
    """True when no tensor upstream in ``t``'s parameter chain (every operand of the constant
    subgraph that computes it) is read by anything else."""
    stack = [t]
    while stack:
        t = stack.pop()
        if isinstance(t, gs.Constant) or not t.inputs:
            continue
        producer = t.inputs[0]
        if producer.op not in _CHAIN_OPS and not is_fake_quantize(producer.op, producer.domain):
            continue
        # Only the operands that are edited: a Reshape's shape or a per-tensor scale is not.
        operands = producer.inputs if producer.op in ARITHMETIC_OPS else producer.inputs[:1]
        for x in operands:
            if not x.name:
                continue
            if len(x.outputs) > 1:
                return False
            stack.append(x)
    return True
