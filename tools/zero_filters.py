"""Zero filters of an ONNX model the way NNCF's filter pruning leaves them (for benchmarks).

NNCF prunes *clusters* of convolutions whose output channels are tied (by Add, Mul, Concat...)
with the same filter indices in every member, ranked by the cluster's summed filter norm, and
zeroes the filter weights, the bias and the following BatchNormalization's gamma and beta.
Here the clusters come from onnxprune's channel groups (computed whether or not a group is
pinned, so pinned channels are zeroed too and show up as kept-with-a-reason). Depthwise
convolutions follow their input channels, as in NNCF.

Source layers whose channels reach a graph output are skipped (``skip_outputs``).

    python tools/zero_filters.py IN.onnx OUT.onnx [--ratio 0.25]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

import onnxprune


def zero_filters(
    model: onnx.ModelProto,
    ratio: float = 0.25,
    skip_gemm: bool = True,
    skip_outputs: bool = True,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[onnx.ModelProto, int, int]:
    """Return (model with zeroed filters, channels zeroed, channels considered).

    With ``skip_outputs`` a source layer with a channel that reaches a graph output (the
    prediction conv of SqueezeNet or of a segmentation head) is left alone, like a classifier.
    """
    analysis = onnxprune.analyze(model, input_shapes=input_shapes)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    producers = {o: n for n in model.graph.node for o in n.output}
    users: dict[str, int] = defaultdict(int)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
            users[i] += 1

    def resolve(name: str) -> str:
        """Follow Identity nodes (the torch exporter shares equal initializers through them)."""
        while name not in inits and name in producers and producers[name].op_type == "Identity":
            name = producers[name].input[0]
        return name

    def stored(name: str) -> onnx.TensorProto | None:
        """The tensor holding a parameter's values row for row: an initializer, a Constant
        node's value, the int8 initializer of weight-only int8 (Cast -> Mul(scale)), or a
        bias [C] behind Reshape (paddle2onnx's Add(conv, Reshape(bias)))."""
        name = resolve(name)
        if name in inits:
            return inits[name]
        producer = producers.get(name)
        if producer is None:
            return None
        if producer.op_type == "Constant" and producer.attribute and producer.attribute[0].name == "value":
            return producer.attribute[0].t
        if producer.op_type == "Mul":
            for x in producer.input:
                cast = producers.get(x)
                if cast is not None and cast.op_type == "Cast":
                    return stored(cast.input[0])
        if producer.op_type == "Reshape":
            inner = stored(producer.input[0])
            return inner if inner is not None and len(inner.dims) == 1 else None
        return None

    def zero_point(node: onnx.NodeProto) -> np.ndarray | None:
        if node.op_type != "ConvInteger" or len(node.input) < 4 or not node.input[3]:
            return None
        t = stored(node.input[3])
        return None if t is None else numpy_helper.to_array(t)

    def weight(node: onnx.NodeProto) -> np.ndarray | None:
        init = stored(node.input[1]) if len(node.input) > 1 else None
        if init is None:
            return None
        w = numpy_helper.to_array(init).astype(np.float64)
        zp = zero_point(node)
        return w if zp is None else w - zp.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1))

    def bias_after(node: onnx.NodeProto) -> str | None:
        """ConvInteger's bias: Add(Mul(Cast(ConvInteger), scale), Reshape(bias))."""
        name = node.output[0]
        for op in ("Cast", "Mul", "Add"):
            nxt = [c for c in consumers[name] if c.op_type == op]
            if len(nxt) != 1:
                return None
            if op == "Add":
                other = [x for x in nxt[0].input if x != name]
                return other[0] if other and stored(other[0]) is not None else None
            name = nxt[0].output[0]
        return None

    def zero_rows(node: onnx.NodeProto, pos: int, rows) -> None:
        """Zero rows of the node's pos-th input; an initializer shared with other nodes is copied first."""
        if len(node.input) <= pos or not node.input[pos]:
            return
        name = resolve(node.input[pos])
        if name not in inits:
            t = stored(name)  # behind Constant / Cast -> Mul / Reshape: zeroed in place
            if t is None:
                return
            arr = numpy_helper.to_array(t).copy()
            zp = zero_point(node) if pos == 1 else None
            arr[rows] = 0 if zp is None else zp.reshape(-1)[rows] if zp.size > 1 else zp
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
            return
        arr = numpy_helper.to_array(inits[name])
        zp = zero_point(node) if pos == 1 else None
        fill = 0 if zp is None else (zp.reshape(-1)[rows].reshape((-1,) + (1,) * (arr.ndim - 1)) if zp.size > 1 else zp)
        if np.all(arr[rows] == fill):
            return
        arr = arr.copy()
        arr[rows] = fill
        if name == node.input[pos] and users[name] == 1:
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
            return
        new, k = f"{node.input[pos]}__zeroed", 0
        while new in inits or new in producers:
            k += 1
            new = f"{node.input[pos]}__zeroed{k}"
        model.graph.initializer.append(numpy_helper.from_array(arr, new))
        inits[new] = model.graph.initializer[-1]
        users[name] -= 1
        users[new] = 1
        node.input[pos] = new

    output_roots = np.asarray(
        [g.id for g in analysis.groups if any(r.startswith("reaches graph output") for r in g.pinned_by)],
        dtype=np.int64,
    )
    sources = [
        s for s in analysis.sources if s.op in ("Conv", "ConvInteger") or (not skip_gemm and s.op in ("Gemm", "MatMul"))
    ]
    if skip_outputs:
        sources = [s for s in sources if not np.isin(analysis.roots(s.ids), output_roots).any()]
    # clusters: source layers joined by a shared channel group
    parent = {s.node: s.node for s in sources}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    by_group: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for s in sources:
        for ch, root in enumerate(analysis.roots(s.ids)):
            by_group[int(root)].append((s.node, ch))
    for members in by_group.values():
        for (a, _), (b, _) in zip(members, members[1:]):
            parent[find(a)] = find(b)
    clusters: dict[str, list[int]] = defaultdict(list)
    for root, members in by_group.items():
        clusters[find(members[0][0])].append(root)

    zeroed_rows: dict[str, set[int]] = defaultdict(set)
    considered = 0
    for roots in clusters.values():
        scores = []
        for root in roots:
            total = 0.0
            for node_name, ch in by_group[root]:
                w = weight(nodes[node_name])
                if w is not None:
                    total += float(np.square(w[ch].astype(np.float64)).sum())
            scores.append((total, root))
        considered += sum(len(by_group[r]) for r in roots)
        k = int(len(roots) * ratio)
        if len(roots) - k < 1:
            continue
        for _, root in sorted(scores)[:k]:
            for node_name, ch in by_group[root]:
                zeroed_rows[node_name].add(ch)

    # NNCF masks a pruned channel everywhere it flows: also the depthwise convs and the
    # BatchNormalizations that carry it (not only the BN right after the pruned conv).
    zeroed_groups = np.asarray(
        sorted(
            {
                int(r)
                for n, rows in zeroed_rows.items()
                for r in analysis.roots(next(s.ids for s in sources if s.node == n)[sorted(rows)])
            }
        ),
        dtype=np.int64,
    )
    for node in model.graph.node:
        if node.op_type not in ("BatchNormalization", "Conv") or node.name in zeroed_rows:
            continue
        tensor = node.input[0] if node.op_type == "BatchNormalization" else node.output[0]
        lay = analysis.layouts.get(tensor)
        if lay is None or 1 not in lay.axes:
            continue
        rows = np.flatnonzero(np.isin(analysis.roots(lay.axes[1]), zeroed_groups))
        if len(rows) == 0:
            continue
        if node.op_type == "Conv":
            if int(next((a.i for a in node.attribute if a.name == "group"), 1)) == 1:
                continue  # a plain conv reading the channel is a sink, not a member
            positions = (1, 2)
        else:
            positions = (1, 2)  # gamma, beta
        for pos in positions:
            zero_rows(node, pos, rows)

    count = 0
    for node_name, rows in zeroed_rows.items():
        node = nodes[node_name]
        idx = sorted(rows)
        for pos in (1, 2):
            zero_rows(node, pos, idx)
        if node.op_type == "ConvInteger":
            bias = bias_after(node)
            if bias is not None:
                t = stored(bias)
                arr = numpy_helper.to_array(t).copy()
                arr[idx] = 0
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
        count += len(idx)
        for reader in consumers[node.output[0]]:
            if reader.op_type == "BatchNormalization":
                for pos in (1, 2):  # gamma, beta
                    zero_rows(reader, pos, idx)
    return model, count, considered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:d0,d1,...",
        help="static shape of an input with dynamic dimensions (as in onnxprune)",
    )
    args = parser.parse_args()
    from onnxprune.config import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in args.input_shape)
    model = onnx.load(args.model)
    model, count, considered = zero_filters(model, args.ratio, input_shapes=shapes)
    onnx.save(model, args.output)
    print(f"{args.output}: zeroed {count} of {considered} conv filters")


if __name__ == "__main__":
    main()
