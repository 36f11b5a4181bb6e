"""OpenVINO's ``FakeQuantize`` (domain ``org.openvinotoolkit``, as NNCF exports int8 models):
its values on constants, and the model with every FakeQuantize expanded to standard ONNX ops
so that onnxruntime, which has no kernel for it, runs the model exactly as the op is specified.

The op (OpenVINO's specification), per element with the ranges broadcast numpy-style::

    x <= min(input_low, input_high):  output_low
    x >  max(input_low, input_high):  output_high
    otherwise: round((x - input_low) / (input_high - input_low) * (levels - 1))
               / (levels - 1) * (output_high - output_low) + output_low

``round`` is to nearest, ties to even (OpenVINO's reference uses ``nearbyint``, as ONNX's
Round). Evaluated in float32 this is what OpenVINO's reference and the expansion compute; its
CPU plugin may compute a quantized weight's value through an integer zero point instead, so a
zero filter is exactly 0 there and a few 1e-8 here: the difference is below any tolerance, but
it is why the zero criterion never relies on FakeQuantize keeping a zero exactly zero.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

__all__ = [
    "FQ_DOMAIN",
    "FQ_OP",
    "expand_fake_quantize",
    "fake_quantize_values",
    "has_fake_quantize",
    "is_fake_quantize",
]

FQ_DOMAIN = "org.openvinotoolkit"
FQ_OP = "FakeQuantize"


def is_fake_quantize(op: str, domain: str | None) -> bool:
    return op == FQ_OP and (domain or "") == FQ_DOMAIN


def has_fake_quantize(model: onnx.ModelProto) -> bool:
    """Does the main graph hold an OpenVINO FakeQuantize (what onnxruntime cannot load)?"""
    return any(is_fake_quantize(n.op_type, n.domain) for n in model.graph.node)


def fake_quantize_values(
    x: np.ndarray, in_low: np.ndarray, in_high: np.ndarray, out_low: np.ndarray, out_high: np.ndarray, levels: int
) -> np.ndarray:
    """The op on arrays, in float32 (as the expansion and OpenVINO's reference compute it)."""
    f = np.float32
    x, il, ih, ol, oh = (np.asarray(a, dtype=f) for a in (x, in_low, in_high, out_low, out_high))
    steps = f(levels - 1)
    with np.errstate(all="ignore"):
        q = np.rint((x - il) / (ih - il) * steps)
        y = q / steps * (oh - ol) + ol
        y = np.where(x <= np.minimum(il, ih), ol, np.where(x > np.maximum(il, ih), oh, y))
    return np.asarray(y, dtype=f)


def expand_fake_quantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose FakeQuantize nodes are standard ops computing the same
    formula (Min/Max of the ranges, Sub, Div, Mul, Round, Where); names of graph tensors and
    of every other node are kept. The copy shares nothing mutable with ``model``. A model
    below opset 11 (no Round) is returned as it is: raising its opset would change other ops."""
    if _default_opset(model) < 11:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    nodes = list(g.node)
    del g.node[:]
    taken = (
        {n.name for n in nodes} | {t for n in nodes for t in (*n.input, *n.output)} | {i.name for i in g.initializer}
    )
    counter = [0]

    def fresh(base: str) -> str:
        while True:
            counter[0] += 1
            name = f"{base}__fq{counter[0]}"
            if name not in taken:
                taken.add(name)
                return name

    for node in nodes:
        if not is_fake_quantize(node.op_type, node.domain):
            g.node.append(node)
            continue
        levels = next((int(a.i) for a in node.attribute if a.name == "levels"), 256)
        x, il, ih, ol, oh = node.input[:5]
        base = node.name or node.output[0]
        steps = fresh(base + "_steps")
        g.initializer.append(onnx.numpy_helper.from_array(np.array(levels - 1, dtype=np.float32), steps))
        t = {
            k: fresh(f"{base}_{k}")
            for k in ("lo", "hi", "span", "oso", "a", "b", "c", "q", "d", "e", "y", "le", "gt", "y2")
        }
        add = g.node.append
        add(helper.make_node("Min", [il, ih], [t["lo"]], name=fresh(base)))
        add(helper.make_node("Max", [il, ih], [t["hi"]], name=fresh(base)))
        add(helper.make_node("Sub", [ih, il], [t["span"]], name=fresh(base)))
        add(helper.make_node("Sub", [oh, ol], [t["oso"]], name=fresh(base)))
        add(helper.make_node("Sub", [x, il], [t["a"]], name=fresh(base)))
        add(helper.make_node("Div", [t["a"], t["span"]], [t["b"]], name=fresh(base)))
        add(helper.make_node("Mul", [t["b"], steps], [t["c"]], name=fresh(base)))
        add(helper.make_node("Round", [t["c"]], [t["q"]], name=fresh(base)))
        add(helper.make_node("Div", [t["q"], steps], [t["d"]], name=fresh(base)))
        add(helper.make_node("Mul", [t["d"], t["oso"]], [t["e"]], name=fresh(base)))
        add(helper.make_node("Add", [t["e"], ol], [t["y"]], name=fresh(base)))
        add(helper.make_node("LessOrEqual", [x, t["lo"]], [t["le"]], name=fresh(base)))
        add(helper.make_node("Greater", [x, t["hi"]], [t["gt"]], name=fresh(base)))
        add(helper.make_node("Where", [t["gt"], oh, t["y"]], [t["y2"]], name=fresh(base)))
        # The last node takes the FakeQuantize's name and output: readers and reports see it.
        add(helper.make_node("Where", [t["le"], ol, t["y2"]], [node.output[0]], name=node.name or fresh(base)))
    if not any(is_fake_quantize(n.op_type, n.domain) for n in g.node):
        for i in reversed(range(len(out.opset_import))):
            if out.opset_import[i].domain == FQ_DOMAIN:
                del out.opset_import[i]
    return out


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if (o.domain or "") in ("", "ai.onnx")), 0)
