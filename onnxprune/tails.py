"""Discontinuous tails: graph outputs computed through an index chosen from values.

TopK's indices, ArgMax/ArgMin, NonMaxSuppression and NonZero turn values into decisions; a
Gather, GatherElements or GatherND (or anything else) fed by such a decision is a
discontinuous function of the model's inputs: a correct lossy prune moves values by float
noise, a near-tie flips, and a YOLO end-to-end head's rows reorder by the whole output scale.
Such an output is verified at the last continuous tensors before the decisions (exposed as
extra outputs in the verification copies only), and compared itself on the samples where
every decision it depends on came out equal.

Comparisons and rounding (Equal, Greater, Where, Round, Cast to an integer) are not counted as
decisions: real models use them for continuous things (``div_no_nan``, spelled-out
LeakyRelu), and their outputs keep being compared in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

__all__ = ["DECISION_OPS", "Tail", "Tails", "find_tails", "with_outputs"]

# op type -> the outputs that are decisions (indices chosen from values)
DECISION_OPS: dict[str, tuple[int, ...]] = {
    "TopK": (1,),  # its values (output 0) are order statistics: continuous
    "ArgMax": (0,),
    "ArgMin": (0,),
    "NonMaxSuppression": (0,),
    "NonZero": (0,),
}
# Ops whose output depends on their input's shape only, never on its values.
_SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class Tail:
    """One graph output behind decisions: where it is verified instead, and on what it hangs."""

    output: str
    ops: tuple[str, ...]  # the deciding nodes, as "TopK '/model.23/TopK'"
    decisions: tuple[str, ...]  # their decision tensors: the output is compared where these are equal
    frontier: tuple[str, ...]  # the last continuous tensors before them: always compared

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "behind": list(self.ops),
            "decisions": list(self.decisions),
            "verified_at": list(self.frontier),
        }


@dataclass(frozen=True)
class Tails:
    """Every discontinuous graph output of a model (empty for almost every CNN)."""

    tails: tuple[Tail, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tails)

    def of(self, output: str) -> Tail | None:
        return next((t for t in self.tails if t.output == output), None)

    @property
    def extra_outputs(self) -> tuple[str, ...]:
        """The tensors to expose (frontier and decisions), each once, in a stable order."""
        seen: dict[str, None] = {}
        for t in self.tails:
            for name in (*t.frontier, *t.decisions):
                seen.setdefault(name, None)
        return tuple(seen)

    def computed_by(self, model: onnx.ModelProto) -> Tails:
        """The tails whose frontier and decision tensors ``model`` computes (a pruned model may
        have folded some away): only those can be judged at their frontier."""
        produced = {o for n in model.graph.node for o in n.output}
        return Tails(tuple(t for t in self.tails if all(n in produced for n in (*t.frontier, *t.decisions))))

    def stands_in_for(self, tensor: str) -> tuple[str, ...]:
        """The outputs a frontier tensor is verified for."""
        return tuple(t.output for t in self.tails if tensor in t.frontier)


def find_tails(model: onnx.ModelProto) -> Tails:
    """The discontinuous outputs of ``model``'s main graph. A tensor depends on values when it
    is computed from a graph input through anything but Shape/Size; it is discontinuous when it
    is a decision about such values, or is computed from one. Subgraphs are not looked into (an
    If or Loop is an ordinary node here: its outputs are compared as they are)."""
    g = model.graph
    constant = {i.name for i in g.initializer}
    valued = {vi.name for vi in g.input if vi.name not in constant}
    inputs = set(valued)
    discontinuous: set[str] = set()
    decided_by: dict[str, str] = {}  # decision tensor -> "Op 'node'"
    producer: dict[str, onnx.NodeProto] = {}
    for index, node in enumerate(g.node):  # graph order is topological (onnx.checker holds it to that)
        for o in node.output:
            if o:
                producer[o] = node
        ins = [i for i in node.input if i]
        if node.op_type in _SHAPE_ONLY or not any(i in valued for i in ins):
            continue
        valued.update(o for o in node.output if o)
        if any(i in discontinuous for i in ins):
            discontinuous.update(o for o in node.output if o)
        if node.op_type in DECISION_OPS and node.domain in ("", "ai.onnx"):
            for k in DECISION_OPS[node.op_type]:
                if k < len(node.output) and node.output[k]:
                    discontinuous.add(node.output[k])
                    decided_by[node.output[k]] = (
                        f"{node.op_type} {node.name or f'{node.op_type}#{index}'!r}"  # as load_model names it
                    )
    out: list[Tail] = []
    for vi in g.output:
        if vi.name not in discontinuous:
            continue
        frontier: dict[str, None] = {}
        decisions: dict[str, None] = {}
        stack, seen = [vi.name], set()
        while stack:  # back through the discontinuous cone
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in decided_by:
                decisions.setdefault(t, None)
            node = producer.get(t)
            if node is None:
                continue
            for i in node.input:
                if not i or i not in valued or i in inputs:
                    continue  # constants, shape-only values and the inputs themselves need no check
                if i in discontinuous:
                    stack.append(i)
                else:
                    frontier.setdefault(i, None)
        ops = tuple(decided_by[d] for d in decisions)
        out.append(Tail(vi.name, ops, tuple(decisions), tuple(frontier)))
    return Tails(tuple(out))


def with_outputs(model: onnx.ModelProto, names: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of ``model`` with the tensors ``names`` added as graph outputs (untyped: the
    runtime infers them), for verification only."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    return m
