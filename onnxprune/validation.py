"""What a loaded model must satisfy before the analysis reads it: well-formed fields (UTF-8
strings, known data types, tensor data that matches its dims), onnx.checker (without
re-serialising big weights), supported opsets, every tensor defined before it is read."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from google.protobuf.message import Message

from .errors import LoadError
from .shapes import without_big_initializers

__all__ = ["check_dataflow", "check_opsets", "check_structure", "check_wellformed", "model_opset", "tensor_nbytes"]


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
    """Every node input defined before use: name the node that breaks it (a cycle or a typo);
    at least one graph output."""
    g = model.graph
    if not g.output:  # nothing it computes is used: everything would be pruned away
        raise LoadError(f"{source}: the graph has no outputs")
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


# ---------------------------------------------------------------- well-formedness
# What protobuf's parser lets through and onnx.checker does not look at (or looks at only after
# something has already read it): strings that are not UTF-8, unknown data types, negative
# dims, tensors whose data contradicts their dims and type, external data past its file's end.
# Checked once at load, so no later step reshapes, allocates or decodes on a lie.

_DATA_TYPES = frozenset(v for v in onnx.TensorProto.DataType.values() if v != onnx.TensorProto.UNDEFINED)
_SUB_BYTE_BITS = {
    onnx.TensorProto.INT4: 4,
    onnx.TensorProto.UINT4: 4,
    onnx.TensorProto.FLOAT4E2M1: 4,
    **{getattr(onnx.TensorProto, n): 2 for n in ("INT2", "UINT2") if hasattr(onnx.TensorProto, n)},
}
_COMPLEX = (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
_INT64_MAX = 2**63 - 1
_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})


def _type_name(data_type: int) -> str:
    return onnx.TensorProto.DataType.Name(data_type) if data_type in _DATA_TYPES else str(data_type)


def tensor_nbytes(data_type: int, count: int) -> int | None:
    """Bytes of raw data ``count`` elements of ``data_type`` take (None for strings)."""
    if data_type == onnx.TensorProto.STRING:
        return None
    bits = _SUB_BYTE_BITS.get(data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize


def _typed_count(data_type: int, count: int) -> int:
    """Entries ``count`` elements take in the tensor's typed field (float_data, int32_data ...)."""
    if data_type in _COMPLEX:
        return 2 * count
    bits = _SUB_BYTE_BITS.get(data_type)
    return (count * bits + 7) // 8 if bits is not None else count


class _Refused(Exception):
    """A malformed field, with the place it was found (turned into a LoadError)."""


def check_wellformed(
    model: onnx.ModelProto,
    source: str,
    raw_lengths: Mapping[str, int] | None = None,
    data_sizes: Mapping[str, int] | None = None,
) -> None:
    """Refuse (LoadError) a model with a string that is not UTF-8, an unknown data type, a
    negative or overflowing dim, a tensor whose data contradicts its dims and type, or external
    data that its file cannot hold. Runs before external data is read, so nothing is allocated
    on a size the file does not back.

    ``raw_lengths``: the raw-data length of main-graph initializers by name, as found in the
    serialised file (wire.raw_data_offsets; asking protobuf would copy the data).
    ``data_sizes``: the size of each external-data file by its location.
    """
    # Places are kept as (parent place, field, index, message) and only spelt out for a refusal.
    stack: list[tuple[Message, tuple | None]] = [(model, None)]
    mains = list(model.graph.initializer)  # held, so their ids stay their own during the walk
    main_graph_initializers = {id(t) for t in mains}
    place: tuple | None = None
    try:
        while stack:
            msg, place = stack.pop()
            desc = msg.DESCRIPTOR
            if desc is _TENSOR:
                lengths = raw_lengths if id(msg) in main_graph_initializers else None
                _check_tensor(msg, lengths, data_sizes)
                continue  # its fields are checked there (listing them would copy the data)
            if desc is _VALUE_INFO:
                if _plain_tensor_info(msg):
                    continue  # the common case, checked without a walk (models have thousands)
                if msg.HasField("type") and msg.type.WhichOneof("value") is None:  # graphsurgeon cannot write it back
                    raise _Refused("its type holds no tensor, sequence, map, optional or sparse type")
            if desc is _SHAPE:
                _check_shape(msg)
                continue  # its dims too
            if desc is _ATTRIBUTE:
                _check_attribute_bytes(msg)
            if desc is _TENSOR_TYPE and msg.HasField("elem_type") and msg.elem_type not in _DATA_TYPES:
                raise _Refused(f"unknown element type {msg.elem_type}")
            for fd, value in msg.ListFields():
                if fd.type == fd.TYPE_STRING:
                    _check_strings(fd.name, value)
                elif fd.message_type is not None:
                    if _repeated(fd):
                        stack.extend((child, (place, fd.name, i, child)) for i, child in enumerate(value))
                    else:
                        stack.append((value, (place, fd.name, None, value)))
    except _Refused as exc:
        raise LoadError(f"{source}: {_spell(place)}: {exc}") from None


def _spell(place: tuple | None) -> str:
    chain = []
    while place is not None:
        chain.append(place)
        place = place[0]
    where = "model"
    for _, field, index, msg in reversed(chain):
        where = _place(where, field, index, msg)
    return where


_TENSOR = onnx.TensorProto.DESCRIPTOR
_VALUE_INFO = onnx.ValueInfoProto.DESCRIPTOR
_SHAPE = onnx.TensorShapeProto.DESCRIPTOR
_TENSOR_TYPE = onnx.TypeProto.Tensor.DESCRIPTOR
_ATTRIBUTE = onnx.AttributeProto.DESCRIPTOR


def _check_attribute_bytes(a: onnx.AttributeProto) -> None:
    """String attributes are bytes in protobuf, but text to onnx and graphsurgeon (a Pad's mode,
    a Conv's auto_pad): they must decode."""
    for field, values in (("s", [a.s] if a.HasField("s") else []), ("strings", a.strings)):
        for v in values:
            try:
                v.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(f"{field} is not valid UTF-8 ({v[:40]!r})") from None


def _plain_tensor_info(vi: onnx.ValueInfoProto) -> bool:
    """Check a value info that is a name and a tensor type only; False if it holds more."""
    fields = vi.ListFields()
    if len(fields) != 2 or fields[0][0].name != "name" or fields[1][0].name != "type":
        return False
    t = vi.type
    if t.WhichOneof("value") != "tensor_type" or len(t.ListFields()) != 1:
        return False
    _check_strings("name", vi.name)
    tt = t.tensor_type
    if tt.elem_type not in _DATA_TYPES and tt.HasField("elem_type"):
        raise _Refused(f"unknown element type {tt.elem_type}")
    _check_shape(tt.shape)
    return True


def _repeated(fd: object) -> bool:
    # protobuf 6 dropped FieldDescriptor.label for is_repeated
    return fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED  # type: ignore[attr-defined]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None  # protobuf gives bytes for a string that is not UTF-8


def _place(where: str, field: str, index: int | None, child: Message) -> str:
    """A readable name for a sub-message: the node, tensor or attribute by its name where it
    has a readable one, else its field and index."""
    kind = child.DESCRIPTOR.name
    within = "" if where in ("graph", "model") else f"{where}: "  # the main graph goes unsaid
    if kind == "NodeProto":
        name, op = _text(child.name), _text(child.op_type)
        label = f"node {name!r}" if name else f"node #{index}"
        return f"{within}{label} ({op})" if op else f"{within}{label}"
    if kind == "TensorProto" and _text(child.name):
        return f"{within}tensor {child.name!r}"
    if kind == "AttributeProto" and _text(child.name):
        return f"{where}, attribute {child.name!r}"
    if kind == "ValueInfoProto" and _text(child.name):
        return f"{within}{field.replace('_', ' ')} {child.name!r}"
    if kind == "GraphProto" and where == "model":
        return "graph"
    at = field if index is None else f"{field}[{index}]"
    return at if where == "model" else f"{where}: {at}"


def _check_strings(field: str, value: object) -> None:
    single = isinstance(value, (str, bytes))
    for i, v in enumerate([value] if single else value):  # type: ignore[arg-type]
        if isinstance(v, bytes):
            raise _Refused(f"{field if single else f'{field}[{i}]'} is not valid UTF-8 ({v[:40]!r})")


def _check_shape(shape: Message) -> None:
    count = 1
    for i, d in enumerate(shape.dim):
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise _Refused(f"dimension {i} is negative ({d.dim_value})")
            count *= d.dim_value
        if d.HasField("dim_param"):
            _check_strings(f"dimension {i}", d.dim_param)
    if count > _INT64_MAX:
        raise _Refused("its dims multiply to more than int64 can count")


def _check_tensor(
    t: onnx.TensorProto, raw_lengths: Mapping[str, int] | None, data_sizes: Mapping[str, int] | None
) -> None:
    name = _text(t.name)
    if name is None:
        raise _Refused(f"tensor name is not valid UTF-8 ({bytes(t.name)[:40]!r})")
    _check_strings("doc_string", t.doc_string)
    for e in t.external_data:
        _check_strings("external_data key", e.key)
        _check_strings("external_data value", e.value)
    if t.data_type not in _DATA_TYPES:
        raise _Refused(f"unknown data type {t.data_type}")
    dims = tuple(t.dims)
    if any(d < 0 for d in dims):
        raise _Refused(f"negative dim in {dims}")
    count = 1
    for d in dims:
        count *= d  # Python ints: no overflow
    if count > _INT64_MAX:
        raise _Refused(f"its dims {dims} multiply to more than int64 can count")
    what = f"its dims {dims} and type {_type_name(t.data_type)}"
    nbytes = tensor_nbytes(t.data_type, count)
    if t.data_location == onnx.TensorProto.EXTERNAL:
        _check_external(t, what, nbytes, data_sizes)
        return
    if t.HasField("raw_data"):
        have = raw_lengths.get(name) if raw_lengths is not None else None
        if have is None:
            have = len(t.raw_data)
        if nbytes is None:
            raise _Refused("a STRING tensor cannot hold raw data")
        if have != nbytes:
            raise _Refused(f"raw data holds {have} bytes, {what} need {nbytes}")
        return
    field = onnx.helper.tensor_dtype_to_field(t.data_type)
    need = _typed_count(t.data_type, count)
    have = len(getattr(t, field))
    if have != need:
        stray = next((f for f in _TYPED_FIELDS if f != field and len(getattr(t, f))), None)
        if have == 0 and stray is not None:
            raise _Refused(f"its data is in {stray}, but type {_type_name(t.data_type)} keeps it in {field}")
        raise _Refused(f"{field} holds {have} values, {what} need {need}")
    if t.data_type == onnx.TensorProto.STRING:
        return  # string_data is bytes in protobuf: any content is allowed


def _check_external(t: onnx.TensorProto, what: str, nbytes: int | None, data_sizes: Mapping[str, int] | None) -> None:
    info = {e.key: e.value for e in t.external_data}
    unknown = sorted(set(info) - _EXTERNAL_KEYS)
    if unknown:  # onnx would ignore it with a warning, onnxruntime refuses the model
        raise _Refused(f"external data key {unknown[0]!r} is not one of {', '.join(sorted(_EXTERNAL_KEYS))}")
    if nbytes is None:
        raise _Refused("a STRING tensor cannot be stored as external data")
    numbers = {}
    for key in ("offset", "length"):
        if key in info:
            text = info[key].strip()
            if not text.isdigit() or not text.isascii():
                raise _Refused(f"external data {key} {info[key]!r} is not a non-negative integer")
            numbers[key] = int(text)
    if data_sizes is None:
        return  # a caller's ModelProto: its external data is not read here
    size = data_sizes.get(info.get("location", ""))
    if size is None:
        return  # the location is refused by the loader
    offset = numbers.get("offset", 0)
    length = numbers.get("length", size - offset)
    if offset + length > size:
        raise _Refused(
            f"external data {offset}+{length} bytes runs past the end of {info.get('location')!r} ({size} bytes)"
        )
    if length != nbytes:
        raise _Refused(f"external data holds {length} bytes, {what} need {nbytes}")
