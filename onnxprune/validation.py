"""What a loaded model must satisfy before the analysis reads it: onnx.checker (without
re-serialising big weights), supported opsets, every tensor defined before it is read."""

from __future__ import annotations

import onnx

from .errors import LoadError
from .shapes import without_big_initializers

__all__ = ["check_dataflow", "check_opsets", "check_structure", "model_opset"]


def check_structure(model: onnx.ModelProto, full_check: bool = False) -> None:
    """onnx.checker on the model without its big weights: the same graph, types and shapes are
    checked, the weights are not serialised again (fast, and fine for models over 2 GB)."""
    onnx.checker.check_model(without_big_initializers(model, keep_metadata=True), full_check=full_check)


def check_opsets(model: onnx.ModelProto, source: str) -> None:
    """Refuse a default-domain opset newer than the installed onnx knows."""
    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > newest:
            raise LoadError(f"{source}: opset {imp.version} is newer than the installed onnx supports ({newest})")


def check_dataflow(model: onnx.ModelProto, source: str) -> None:
    """Every node input defined before use: name the node that breaks it (a cycle or a typo)."""
    g = model.graph
    defined = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    produced_by = {o: (n.name or f"{n.op_type}#{i}") for i, n in enumerate(g.node) for o in n.output}
    for i, node in enumerate(g.node):
        for name in node.input:
            if name not in defined:
                label = node.name or f"{node.op_type}#{i}"
                if name in produced_by:
                    raise LoadError(
                        f"{source}: node {label!r} ({node.op_type}) reads {name!r} before {produced_by[name]!r} produces it: "
                        "the graph has a cycle or is not topologically sorted"
                    )
                raise LoadError(f"{source}: node {label!r} ({node.op_type}) reads undefined tensor {name!r}")
        defined.update(node.output)


def model_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset version (1 when it imports none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1
