"""Loading a model safely: from a path (external data only from inside the model's folder) or
a caller's ModelProto (copied), checked before anything reads it."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from .errors import LoadError, UsageError, first_line
from .node_names import name_nodes
from .params import InitializerCache
from .validation import check_dataflow, check_opsets, check_structure, check_wellformed
from .wire import raw_data_offsets

__all__ = ["load_model"]


def _check_external_data(model: onnx.ModelProto, base: Path, source: str) -> dict[str, Path]:
    """Refuse external data outside the model's folder or missing; return the files it names
    by their locations."""
    base = base.resolve()
    files: dict[str, Path] = {}
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not isinstance(location, str) or not isinstance(tensor.name, str):  # protobuf's bytes: not UTF-8
            continue  # named by check_wellformed
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents:
            raise LoadError(
                f"{source}: tensor {tensor.name!r} has external data at {location!r}, outside the model's folder; refused"
            )
        if not target.is_file():
            raise LoadError(f"{source}: tensor {tensor.name!r}: external data file {location!r} not found")
        files[location] = target
    return files


def load_model(
    model: onnx.ModelProto | str | os.PathLike[str],
) -> tuple[onnx.ModelProto, str, int | None, InitializerCache]:
    """Load and check a model; return it with a name for messages (its path or '<ModelProto>')
    and its size on disk with its external data (None for a ModelProto), and the cache its
    weights are read through (views of the file's bytes where they are stored in it).

    A ModelProto given by the caller is copied, so the caller's object is never modified.
    Every node of the returned model has a unique name (see node_names).
    """
    size, serialized = None, None
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        source = "<ModelProto>"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        source = str(path)
        if not path.exists():
            raise LoadError(f"{source}: no such file")
        if not path.is_file():
            raise LoadError(f"{source}: not a file")
        if path.stat().st_size == 0:
            raise LoadError(f"{source}: empty file")
        serialized = path.read_bytes()
        try:
            proto = onnx.load_model_from_string(serialized)
        except Exception as exc:  # protobuf raises several unrelated types
            raise LoadError(f"{source}: not an ONNX model ({first_line(exc)})") from None
        external = _check_external_data(proto, path.parent, source)
        data_sizes = {location: f.stat().st_size for location, f in external.items()}
        size = path.stat().st_size + sum(f.stat().st_size for f in set(external.values()))
        try:
            offsets = raw_data_offsets(serialized)
        except (ValueError, IndexError):  # not what protobuf parsed: lengths are asked of protobuf
            offsets = {}
        # Before external data is read: nothing is allocated on a size the files do not back.
        check_wellformed(proto, source, {name: length for name, (_, length) in offsets.items()}, data_sizes)
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise LoadError(f"{source}: cannot read external data ({first_line(exc)})") from None
    else:
        raise UsageError(f"expected a path or onnx.ModelProto, got {type(model).__name__}")
    if not proto.HasField("graph") or len(proto.graph.node) == 0:
        raise LoadError(f"{source}: not an ONNX model (no graph nodes)")
    if serialized is None:
        check_wellformed(proto, source)
    check_opsets(proto, source)
    check_dataflow(proto, source)
    try:
        check_structure(proto, full_check=True)
    except Exception as exc:
        raise LoadError(f"{source}: invalid model: {first_line(exc)}") from None
    name_nodes(proto)  # every step refers to a node by its name (see node_names)
    return proto, source, size, InitializerCache(proto, serialized)
