"""Sensitivity trials that run only the part of the model a trial changes.

A trial masks the readers of one unit's channels; every node before the first of those readers
computes what the original computes. The sensitivity analysis runs its units in graph order,
so those activations are carried forward: the *frontier* holds, for every calibration batch,
the tensors that cross a cut in the (topologically sorted) node list, and a trial runs the nodes
after the cut only. Moving the frontier to a later cut runs the nodes in between once. A unit's
trials then cost the nodes from its first reader on, instead of the whole model.

The parts are sub-models of the instrumented model (the same nodes, weights and keep/fill
inputs), one onnxruntime session per cut; their outputs equal the whole model's up to the
float rounding of a fusion that a cut splits (onnxruntime fuses e.g. a Conv with the Add after
it only when both are in one part). A part leaves out the ``x * keep + fill`` of every port its
trials never mask (the carried and side parts: all of them; a unit's part: all but the unit's):
there keep is 1 and fill 0, so it computes x, and the masking Mul and Add over every read
activation cost a fifth of an early unit's part on PicoDet (paired: 16.4 s -> 12.7 s), the same
outputs bit for bit."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .masking import Ports
from .runtime import ModelRunner, session

__all__ = ["Segments"]


class Segments:
    """The instrumented model cut in two at a movable frontier (see the module doc)."""

    def __init__(
        self,
        instrumented: onnx.ModelProto,
        ports: Ports,
        batches: Sequence[Mapping[str, np.ndarray]],
        names: Sequence[str],
        reference: Sequence[Sequence[np.ndarray]],
        *,
        source: str = "<model>",
        per_sample: bool = False,
    ) -> None:
        self.model, self.ports, self.names, self.source = instrumented, ports, list(names), source
        self.per_sample = per_sample  # batches of one sample: parts run several at once (runtime.session)
        self.reference = reference  # per batch, the original's outputs
        graph = instrumented.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name for t in graph.initializer}
        mask_inputs = {name for keep, fill, _ in ports.values() for name in (keep, fill)}
        self.mask_inputs = mask_inputs
        keep_of = {keep: key for key, (keep, _, _) in ports.items()}
        self.port_at: dict[tuple[str, int], int] = {}
        self.last_use: dict[str, int] = {}
        end = len(self.nodes)
        for i, node in enumerate(self.nodes):
            for name in node.input:
                if name in keep_of:
                    self.port_at.setdefault(keep_of[name], i)
                if name:
                    self.last_use[name] = i
        for name in self.names:
            self.last_use[name] = end  # a graph output lives to the end
        self.produced_at = {out: i for i, node in enumerate(self.nodes) for out in node.output if out}
        # Per port, its masking nodes' indices and the tensor it masks (masking.instrument_readers:
        # Mul(x, keep) then Add(_, fill) makes the reader's input), for the parts that leave them out.
        self.masking: dict[tuple[str, int], tuple[int, int, str, str]] = {}
        for key, (_, fill, _) in ports.items():
            mul = self.port_at.get(key)
            if mul is None:
                continue
            add = next((i for i in range(mul + 1, end) if fill in self.nodes[i].input), None)
            if add is not None:
                self.masking[key] = (mul, add, self.nodes[mul].input[0], self.nodes[add].output[0])
        self.types = _elem_types(instrumented)
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers | mask_inputs]
        # Subgraphs (If/Loop/Scan) read outer tensors without naming them as inputs: no cuts then.
        nested = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        self.usable = not any(a.type in nested for n in self.nodes for a in n.attribute) and all(
            t in self.types for t in [*self.produced_at, *self.graph_inputs]
        )
        self.batches = batches
        self.at = 0
        self.frontier: list[dict[str, np.ndarray]] | None = [
            {k: v for k, v in b.items() if k in self.graph_inputs} for b in batches
        ]
        self._suffix: dict[int, tuple[ModelRunner, list[str]]] = {}
        self._focus: _Focus | None = None

    def cut(self, masks: Mapping[tuple[str, int], object]) -> int:
        """Index of the first node a trial with these masks changes (the end: none)."""
        return min((self.port_at[k] for k in masks if k in self.port_at), default=len(self.nodes))

    def advance(self, cut: int) -> None:
        """Move the frontier forward to ``cut``, running the nodes in between once (a cut
        before the frontier leaves it)."""
        if not self.usable or self.frontier is None or cut <= self.at:
            return
        live_now, live_then = self._live(self.at), self._live(cut)
        outputs = [n for n in live_then if n not in live_now]
        if outputs:
            nodes = self._unmasked(range(self.at, cut), outputs)
            runner = self._session(nodes, live_now, outputs, "a segment of the instrumented model")
            needs = set(_sub_inputs(nodes, self.initializers))
            masks = _identity_masks(self.ports, needs)
            feeds = [{**{k: v for k, v in values.items() if k in needs}, **masks} for values in self.frontier]
            for values, got in zip(self.frontier, runner.run_each(feeds, outputs)):
                values.update(zip(outputs, got))
        for values in self.frontier:
            for k in [k for k in values if k not in live_then]:
                del values[k]
        self.at = cut
        self._suffix.clear()
        self._focus = None

    def focus(self, keys: Collection[tuple[str, int]]) -> None:
        """The next trials mask only the ports ``keys`` (one unit's readers, after the
        frontier): they run the nodes downstream of those ports only. What those nodes read
        from the other nodes after the frontier is computed here, once; the outputs they do not
        reach are the original's."""
        self._focus = None
        ports = frozenset(k for k in keys if k in self.port_at)
        if not self.usable or self.frontier is None or not ports or min(self.port_at[k] for k in ports) < self.at:
            return
        muls = {self.port_at[k] for k in ports}
        tainted: set[str] = set()
        down: list[int] = []
        for i in range(min(muls), len(self.nodes)):
            node = self.nodes[i]
            if i in muls or any(n in tainted for n in node.input):
                down.append(i)
                tainted.update(o for o in node.output if o)
        downstream = [self.nodes[i] for i in down]
        reads = [n for n in _sub_inputs(downstream, self.initializers) if n not in self.mask_inputs]
        have = set(self.frontier[0]) if self.frontier else set()
        # The other nodes after the frontier that make what the downstream nodes read.
        need = {n for n in reads if n not in have}
        down_set = set(down)
        side: list[int] = []
        for i in range(len(self.nodes) - 1, self.at - 1, -1):
            node = self.nodes[i]
            if i not in down_set and any(o in need for o in node.output):
                side.append(i)
                need.update(n for n in node.input if n and n not in have and n not in self.initializers)
        side_out = [n for n in reads if n not in have]
        side_values: list[dict[str, np.ndarray]] = [{} for _ in self.frontier]
        if side_out:
            nodes = self._unmasked(sorted(side), side_out)
            ins = [n for n in _sub_inputs(nodes, self.initializers) if n not in self.mask_inputs]
            runner = self._session(nodes, ins, side_out, "a branch of the instrumented model")
            masks = _identity_masks(self.ports, set(_sub_inputs(nodes, self.initializers)))
            feeds = [{**{k: values[k] for k in ins}, **masks} for values in self.frontier]
            for got, ran in zip(side_values, runner.run_each(feeds, side_out)):
                got.update(zip(side_out, ran))
        produced = [n for n in self.names if self.produced_at.get(n, -1) in down_set]
        downstream = self._unmasked(down, produced, ports)
        reads = [n for n in _sub_inputs(downstream, self.initializers) if n not in self.mask_inputs]
        runner = self._session(downstream, reads, produced, "the part of the instrumented model a unit changes")
        mask_reads = {n for n in _sub_inputs(downstream, self.initializers) if n in self.mask_inputs}
        self._focus = _Focus(ports, runner, reads, produced, mask_reads, side_values)

    def run(
        self, masks: Mapping[tuple[str, int], object], extra: Mapping[str, np.ndarray], which: Sequence[int]
    ) -> list[list[np.ndarray]] | None:
        """Per batch in ``which``, the graph outputs of a trial (``extra``: every keep/fill
        input's value), computed from the frontier; None when the trial changes a node before it."""
        if not self.usable or self.frontier is None or self.cut(masks) < self.at:
            return None
        focus = self._focus
        if focus is not None and set(masks) <= focus.ports:
            feeds = [
                {
                    **{n: focus.side[k][n] if n in focus.side[k] else self.frontier[k][n] for n in focus.reads},
                    **{n: extra[n] for n in focus.masks},
                }
                for k in which
            ]
            ran = focus.runner.run_each(feeds, focus.produced) if focus.produced else [[] for _ in feeds]
            out = []
            for k, got_list in zip(which, ran):
                got = dict(zip(focus.produced, got_list))
                out.append([got[n] if n in got else self.reference[k][i] for i, n in enumerate(self.names)])
            return out
        if self.at not in self._suffix:
            live = self._live(self.at)
            produced = [n for n in self.names if n not in live]
            runner = self._session(self.nodes[self.at :], live, produced, "the tail of the instrumented model")
            self._suffix[self.at] = (runner, produced)
        runner, produced = self._suffix[self.at]
        needs = set(_sub_inputs(self.nodes[self.at :], self.initializers))
        frontier = [self.frontier[k] for k in which]
        feeds = [
            {**{k: v for k, v in values.items() if k in needs}, **{k: v for k, v in extra.items() if k in needs}}
            for values in frontier
        ]
        ran = runner.run_each(feeds, produced) if produced else [[] for _ in feeds]
        out = []
        for values, got_list in zip(frontier, ran):
            got = dict(zip(produced, got_list))
            out.append([got[n] if n in got else values[n] for n in self.names])
        return out

    def release(self) -> None:
        """Drop the frontier's activations and the sessions (trials run whole from now on)."""
        self.frontier = None
        self._suffix.clear()
        self._focus = None

    def _unmasked(
        self, indices: Collection[int], outputs: Collection[str], keep: Collection[tuple[str, int]] = ()
    ) -> list[onnx.NodeProto]:
        """The nodes at ``indices`` without the masking of the ports not in ``keep`` (x * 1 + 0
        is x, but for the sign of a zero): its Mul and Add go and the reader reads x. A port whose masked tensor leaves
        the part (``outputs``) or is made outside it keeps its nodes. Without STRIP, the nodes."""
        at = set(indices)
        drop: set[int] = set()
        rename: dict[str, str] = {}
        for key, (mul, add, x, masked) in self.masking.items():
            if STRIP and key not in keep and mul in at and add in at and masked not in outputs:
                drop.update((mul, add))
                rename[masked] = x
        out = []
        for i in sorted(at - drop):
            node = self.nodes[i]
            if any(n in rename for n in node.input):
                node = _renamed(node, rename)
            out.append(node)
        return out

    def _live(self, cut: int) -> list[str]:
        """The tensors crossing ``cut``: graph inputs or produced before it, read at or after it
        (or graph outputs), in a fixed order."""
        if cut == 0:
            return list(self.graph_inputs)
        live = [n for n in self.graph_inputs if self.last_use.get(n, -1) >= cut]
        for node in self.nodes[:cut]:
            live.extend(o for o in node.output if o and self.last_use.get(o, -1) >= cut)
        return live

    def _session(
        self, nodes: Sequence[onnx.NodeProto], inputs: Sequence[str], outputs: Sequence[str], what: str
    ) -> ModelRunner:
        from onnx import helper

        needed = set(_sub_inputs(nodes, self.initializers)) | set(n for node in nodes for n in node.input)
        graph = helper.make_graph(
            nodes,
            "part",
            [
                *(helper.make_tensor_value_info(n, self.types[n], None) for n in inputs if n in needed),
                *(
                    helper.make_tensor_value_info(keep, onnx.TensorProto.FLOAT, shape)
                    for keep, _, shape in self.ports.values()
                    if keep in needed
                ),
                *(
                    helper.make_tensor_value_info(fill, onnx.TensorProto.FLOAT, shape)
                    for _, fill, shape in self.ports.values()
                    if fill in needed
                ),
            ],
            [helper.make_tensor_value_info(n, self.types[n], None) for n in outputs],
            [t for t in self.model.graph.initializer if t.name in needed],
        )
        part = onnx.ModelProto()
        part.CopyFrom(self.model)
        part.graph.CopyFrom(graph)
        return session(part, source=self.source, what=what, optimize=True, per_sample=self.per_sample)


@dataclass(frozen=True)
class _Focus:
    """One unit's part: its ports, the session of the nodes downstream of them, what those
    read (from the frontier or ``side``: per batch, made once by the other nodes), the graph
    outputs they make and the keep/fill inputs they read."""

    ports: frozenset[tuple[str, int]]
    runner: ModelRunner
    reads: list[str]
    produced: list[str]
    masks: set[str]
    side: list[dict[str, np.ndarray]]


def _renamed(node: onnx.NodeProto, rename: Mapping[str, str]) -> onnx.NodeProto:
    """A copy of ``node`` reading ``rename[n]`` where it read ``n``."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for k, name in enumerate(copy.input):
        if name in rename:
            copy.input[k] = rename[name]
    return copy


# Parts leave out the masking of the ports their trials never mask (see the module doc; tests
# turn it off to compare).
STRIP = True


def _sub_inputs(nodes: Sequence[onnx.NodeProto], initializers: set[str]) -> list[str]:
    """The tensors ``nodes`` read that none of them makes (initializers excluded)."""
    made = {o for n in nodes for o in n.output}
    seen: dict[str, None] = {}
    for n in nodes:
        for name in n.input:
            if name and name not in made and name not in initializers:
                seen.setdefault(name)
    return list(seen)


def _identity_masks(ports: Ports, needs: set[str]) -> dict[str, np.ndarray]:
    """keep = 1, fill = 0 for the ports a part reads (nothing masked there)."""
    out = {}
    for keep, fill, shape in ports.values():
        if keep in needs:
            out[keep] = np.ones(shape, np.float32)
        if fill in needs:
            out[fill] = np.zeros(shape, np.float32)
    return out


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type that shape inference (or the model) declares."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot read: no cuts (see usable)
        inferred = model
    g = inferred.graph
    types = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types
