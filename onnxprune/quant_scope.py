"""Which nodes int8 quantization leaves in float, and which nodes it quantized.

The user names nodes as the ONNX model names them (``--ignored-scope``: exact names or regular
expressions). NNCF's OpenVINO backend knows the converted model's op names instead, and
``convert_model`` renames the convolutions it fuses with a BatchNormalization or a bias: those
are found again by the tensor names that survive conversion.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import onnx

from .errors import UnsupportedModel, UsageError

__all__ = ["WEIGHTED_OPS", "onnx_float_nodes", "openvino_float_ops", "openvino_names", "resolve_ignored_scope"]

# The ops whose weights NNCF quantizes (ONNX spellings).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_OV_WEIGHTED = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")
# What convert_model folds into a weighted op's output (a BatchNormalization, a bias).
_FOLDED_ONNX = ("BatchNormalization", "Add", "Mul", "Sub", "Div")
_FOLDED_OV = ("Add", "Multiply", "Subtract")


def resolve_ignored_scope(model: onnx.ModelProto, scope: Sequence[str], source: str) -> tuple[str, ...]:
    """The node names ``scope`` selects: an entry equal to a node name is that node, any other
    is a regular expression searched in node names. An entry that selects nothing is a
    UsageError (a typo would otherwise quantize the node silently)."""
    names = [n.name for n in model.graph.node if n.name]
    known = set(names)
    chosen: list[str] = []
    for entry in scope:
        if entry in known:
            chosen.append(entry)
            continue
        pattern = re.compile(entry)
        hits = [n for n in names if pattern.search(n)]
        if not hits:
            examples = ", ".join(repr(n) for n in [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS][:3])
            raise UsageError(
                f"{source}: --ignored-scope {entry!r} names no node and matches none (node names look like {examples})"
            )
        chosen.extend(hits)
    return tuple(dict.fromkeys(chosen))


def _onnx_chain_tensors(model: onnx.ModelProto, node: onnx.NodeProto) -> set[str]:
    """The node's output and the outputs of what convert_model folds into it (a following
    BatchNormalization, an Add/Mul with a constant), as long as each has one reader."""
    consts = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    names = set(node.output[:1])
    tensor = node.output[0] if node.output else ""
    while len(readers.get(tensor, [])) == 1:
        nxt = readers[tensor][0]
        if nxt.op_type not in _FOLDED_ONNX or (
            nxt.op_type != "BatchNormalization" and not any(i in consts for i in nxt.input if i != tensor)
        ):
            break
        tensor = nxt.output[0]
        names.add(tensor)
    return names


def _ov_first_names(op: Any) -> set[str]:
    """Tensor names on the op's output, or on the first output downstream of the elementwise
    constant ops convert_model fused into it."""
    for _ in range(8):
        names = set(op.output(0).get_names())
        if names:
            return names
        targets = list(op.output(0).get_target_inputs())
        if len(targets) != 1:
            return set()
        op = targets[0].get_node()
        if op.get_type_name() not in _FOLDED_OV:
            return set(op.output(0).get_names())
    return set()


def openvino_names(model: onnx.ModelProto, ov_model: Any, onnx_names: Iterable[str], source: str) -> dict[str, str]:
    """ONNX node name -> the converted OpenVINO op's friendly name, for NNCF's OpenVINO backend."""
    ops = {op.get_friendly_name(): op for op in ov_model.get_ops()}
    by_name = {n.name: n for n in model.graph.node}
    weighted = [op for op in ov_model.get_ops() if op.get_type_name() in _OV_WEIGHTED]
    out: dict[str, str] = {}
    for name in onnx_names:
        node = by_name[name]
        same = ops.get(name)
        if (
            same is not None
            and same.get_type_name() != "Constant"
            and (node.op_type not in WEIGHTED_OPS or same.get_type_name() in _OV_WEIGHTED)
        ):
            out[name] = name
            continue
        if node.op_type not in WEIGHTED_OPS:
            if name in ops:
                out[name] = name
                continue
            raise UnsupportedModel(
                f"{source}: node {name!r} ({node.op_type}) has no counterpart in the OpenVINO model (folded by convert_model); leave it out of --ignored-scope"
            )
        prefixed = [op for op in weighted if op.get_friendly_name().startswith(name + "/")]
        chain = _onnx_chain_tensors(model, node)
        matched = prefixed or [op for op in weighted if _ov_first_names(op) & chain]
        if len(matched) != 1:
            raise UnsupportedModel(
                f"{source}: cannot find node {name!r} ({node.op_type}) in the OpenVINO model converted from it; use the ONNX output (-o OUT.onnx) to keep it in float"
            )
        out[name] = matched[0].get_friendly_name()
    return out


def onnx_float_nodes(model: onnx.ModelProto) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(quantized, float) names of the weighted nodes of a QDQ model: quantized when the weight
    comes through a DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    quantized, floating = [], []
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1:
            p = producers.get(n.input[1])
            while p is not None and p.op_type in ("Transpose", "Reshape", "Identity"):
                p = producers.get(p.input[0])
            (quantized if p is not None and p.op_type == "DequantizeLinear" else floating).append(n.name)
    return tuple(quantized), tuple(floating)


def openvino_float_ops(ov_model: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(quantized, float) friendly names of the weighted ops of an OpenVINO model: quantized
    when a FakeQuantize or an 8-bit constant lies on the weights' path."""
    quantized, floating = [], []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in _OV_WEIGHTED or op.get_input_size() < 2:
            continue
        stack, seen, found = [op.input_value(1).get_node()], 0, False
        while stack and seen < 12 and not found:
            cur = stack.pop()
            seen += 1
            kind = cur.get_type_name()
            if kind == "FakeQuantize" or (
                kind == "Constant" and cur.get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4")
            ):
                found = True
            elif kind != "Constant":
                stack.extend(cur.input_value(i).get_node() for i in range(cur.get_input_size()))
        (quantized if found else floating).append(op.get_friendly_name())
    return tuple(quantized), tuple(floating)
