"""The patterns issue 11 describes in NNCF's exports, checked independently of onnxprune (onnx +
numpy; FakeQuantize weight outputs computed by OpenVINO, f32): unfolded BatchNormalization after
masked convs, zero filters before and after their FakeQuantize, per-channel ranges, shared
Constants, the QDQ weight chain. Used by tools/bench_nncf_baseline.py."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


class Graph:
    """Constants (initializers and Constant nodes, through Identity), producers and consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                self.consumers[i].append(n)

    def resolve(self, name: str) -> str:
        while name not in self.consts and name in self.producer and self.producer[name].op_type == "Identity":
            name = self.producer[name].input[0]
        return name

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(self.resolve(name))

    def op(self, name: str) -> str:
        p = self.producer.get(name)
        return "input" if p is None else p.op_type


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _zero_rows(w: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.any(w.reshape(len(w), -1) != 0, axis=1))


def fq_weight_outputs(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The values of the given (weight FakeQuantize) tensors, computed by OpenVINO in f32."""
    import openvino as ov

    if not names:
        return {}
    model = onnx.load(path)
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.onnx"
        onnx.save(model, p)
        compiled = ov.Core().compile_model(ov.convert_model(str(p)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        feeds = {i.get_any_name(): np.zeros([int(d) for d in i.get_shape()], np.float32) for i in compiled.inputs}
        res = compiled(feeds)
        return {name: np.asarray(res[compiled.output(name)]) for name in names}


def fq_reference(
    x: np.ndarray, il: np.ndarray, ih: np.ndarray, ol: np.ndarray, oh: np.ndarray, levels: int
) -> np.ndarray:
    """FakeQuantize's reference formula, evaluated in float32 the way an expansion into
    standard ONNX ops (Sub, Div, Mul, Round, Add) would run it."""
    f = np.float32
    q = np.round((x - il) / (ih - il) * f(levels - 1))
    y = q / f(levels - 1) * (oh - ol) + ol
    return np.where(x <= np.minimum(il, ih), ol, np.where(x > np.maximum(il, ih), oh, y)).astype(np.float32)


def patterns(path: Path) -> dict[str, Any]:
    """Structural facts of one export, for the patterns issue 11 lists."""
    model = onnx.load(path)
    g = Graph(model)
    ops = collections.Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}") for n in model.graph.node
    )
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    facts: dict[str, Any] = {
        "ops": dict(sorted(ops.items())),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "input": {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input},
        "convs": len(convs),
        "depthwise_convs": sum(1 for n in convs if _group(n) > 1),
    }
    try:
        onnx.checker.check_model(model, full_check=True)
        facts["checker"] = "ok"
    except Exception as e:
        facts["checker"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"

    # weights: how each conv gets them, and which filters are exactly zero in the stored constant
    layers = []
    fq_names = []
    for n in convs:
        src, chain = n.input[1], []
        while g.const(src) is None and src in g.producer:
            p = g.producer[src]
            chain.append(p.op_type)
            src = p.input[0]
        w = g.const(src)
        stored = g.resolve(src)
        store = "initializer" if any(i.name == stored for i in model.graph.initializer) else "Constant node"
        rec: dict[str, Any] = {"node": n.name, "group": _group(n), "weight_chain": "<-".join(chain + [store])}
        rec["filters"] = int(w.shape[0]) if w is not None else None
        rec["zero_filters"] = _zero_rows(w).tolist() if w is not None else None
        if chain[:1] == ["FakeQuantize"]:
            fq = g.producer[n.input[1]]
            rec["fq_range_shapes"] = [list(g.const(i).shape) for i in fq.input[1:5]]
            rec["fq_shared_low_high"] = fq.input[1] == fq.input[3] and fq.input[2] == fq.input[4]
            levels = next(int(a.i) for a in fq.attribute if a.name == "levels")
            lo, hi = g.const(fq.input[1]), g.const(fq.input[2])
            rec["fq_levels"], rec["fq_low_over_high"] = levels, sorted({round(float(v), 6) for v in (lo / hi).ravel()})
            if w is not None and len(rec["zero_filters"]):
                ref = fq_reference(w, *(g.const(i) for i in fq.input[1:5]), levels)[rec["zero_filters"]]
                rec["fq_reference_zero_filter_max_abs"] = float(np.abs(ref).max())
                rec["fq_reference_zero_filters_still_zero"] = int(
                    (~np.any(ref.reshape(len(ref), -1) != 0, axis=1)).sum()
                )
            fq_names.append(n.input[1])
        if chain[:2] == ["DequantizeLinear", "QuantizeLinear"]:
            dq = g.producer[n.input[1]]
            rec["qdq_axis"] = next((int(a.i) for a in dq.attribute if a.name == "axis"), 1)
            rec["qdq_scale_shape"] = list(g.const(dq.input[1]).shape)
            rec["qdq_zero_point"] = f"{g.const(dq.input[2]).dtype}{list(g.const(dq.input[2]).shape)}"
            rec["qdq_zero_point_via_identity"] = g.op(dq.input[2]) == "Identity"
        # the BatchNormalization right after the conv (possibly behind nothing else)
        readers = g.consumers[n.output[0]]
        bn = readers[0] if len(readers) == 1 and readers[0].op_type == "BatchNormalization" else None
        if bn is not None:
            vals = [g.const(i) for i in bn.input[1:5]]
            rec["bn"] = {k: np.flatnonzero(v == 0).tolist() for k, v in zip(("scale", "bias", "mean", "var"), vals)}
        layers.append(rec)
    if fq_names:
        out = fq_weight_outputs(path, fq_names)
        for rec, name in zip((r for r in layers if "fq_range_shapes" in r), fq_names):
            w = out[name]
            rows = rec["zero_filters"]
            if rows:
                vals = w[rows].ravel()
                rec["fq_zero_filter_max_abs"] = float(np.abs(vals).max())
                rec["fq_zero_filter_values"] = sorted({float(v) for v in vals})[:4]
            rec["fq_zero_filters_after"] = _zero_rows(w).tolist()
    facts["layers"] = layers

    # activation FakeQuantize / QuantizeLinear: per-tensor or per-channel, shared Constants
    acts = []
    for n in model.graph.node:
        if n.op_type == "FakeQuantize" and g.const(n.input[0]) is None:
            shapes = [list(g.const(i).shape) for i in n.input[1:5]]
            feeds = [
                f"{c.op_type}(group={_group(c)})" if c.op_type == "Conv" else c.op_type
                for c in g.consumers[n.output[0]]
            ]
            acts.append(
                {
                    "node": n.name,
                    "range_shapes": shapes,
                    "shared_low": n.input[1] == n.input[3],
                    "shared_high": n.input[2] == n.input[4],
                    "readers": feeds,
                }
            )
        if n.op_type == "QuantizeLinear" and g.const(n.input[0]) is None:
            acts.append(
                {
                    "node": n.name,
                    "scale_shape": list(g.const(n.input[1]).shape),
                    "zero_point": str(g.const(n.input[2]).dtype),
                }
            )
    facts["activation_quantizers"] = acts
    # Constants used by more than one FakeQuantize (across nodes)
    users: dict[str, set[str]] = collections.defaultdict(set)
    for n in model.graph.node:
        if n.op_type == "FakeQuantize":
            for i in n.input[1:5]:
                users[i].add(n.name)
    facts["fq_constants_shared_across_nodes"] = sum(1 for v in users.values() if len(v) > 1)
    facts["identity_nodes"] = ops.get("Identity", 0)
    return facts
