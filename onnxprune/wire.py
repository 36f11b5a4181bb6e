"""The protobuf wire format, as far as onnxprune needs it: where each initializer's raw data
lies in a serialised model (tags and lengths are walked; payloads are skipped, not read), and
the keys and lengths saving.DeferredModel writes around raw data of its own.

Reading ``TensorProto.raw_data`` copies the bytes out of protobuf; on a model of hundreds of MB
that copy costs about as much as loading it. With the offsets, the weights are numpy views of
the file's bytes, which protobuf's parser already keeps (see params.InitializerCache).
"""

from __future__ import annotations

import numpy as np
import onnx

__all__ = [
    "GRAPH_FIELD",
    "INITIALIZER_FIELD",
    "RAW_DATA_FIELD",
    "RAW_DTYPES",
    "encode_varint",
    "field_key",
    "field_spans",
    "raw_data_offsets",
    "read_varint",
]

# Field numbers, read from onnx's own descriptors.
GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
RAW_DATA_FIELD = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
_NAME = onnx.TensorProto.DESCRIPTOR.fields_by_name["name"].number
_LENGTH_DELIMITED = 2

# The tensor types whose raw data is a plain little-endian array numpy reads and writes as is
# (not strings, nor the 4-bit, 8-bit-float and bfloat16 types only onnx's converter handles).
RAW_DTYPES: dict[int, np.dtype] = {
    code: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code)).newbyteorder("<")
    for code in (
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.UINT64,
        onnx.TensorProto.BOOL,
    )
}


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_key(number: int) -> bytes:
    """The key of a length-delimited field (a message, bytes or a string)."""
    return encode_varint(number << 3 | _LENGTH_DELIMITED)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos``: (value, position after it)."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def field_spans(buf: bytes | memoryview, start: int, end: int):
    """The fields of the message in ``buf[start:end]``: (number, wire type, key start, value
    start, payload start, end); the value of a length-delimited field starts with its length,
    its payload after it. Raises ValueError on a field that is not well formed."""
    pos = start
    while pos < end:
        key_start = pos
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        value_start = payload_start = pos
        if wire == 0:
            _, after = read_varint(buf, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, payload_start = read_varint(buf, pos)
            after = payload_start + length
        elif wire == 5:
            after = pos + 4
        else:  # groups (3, 4) are not used by ONNX
            raise ValueError(f"unexpected wire type {wire}")
        if after > end:
            raise ValueError("field runs past its message")
        yield number, wire, key_start, value_start, payload_start, after
        pos = after


def _fields(buf: bytes | memoryview, start: int, end: int):
    """The fields of the message in ``buf[start:end]``: (number, wire type, payload start, end)."""
    for number, wire, _, _, payload_start, after in field_spans(buf, start, end):
        yield number, wire, payload_start, after


def raw_data_offsets(buf: bytes) -> dict[str, tuple[int, int]]:
    """For every initializer of the main graph stored as raw data: (offset, length) of that
    data in ``buf``, the serialised ModelProto. Names seen twice are left out (the reader then
    falls back to protobuf). Raises ValueError when ``buf`` is not a well-formed message."""
    found: dict[str, tuple[int, int]] = {}
    twice: set[str] = set()
    view = memoryview(buf)
    for number, wire, start, end in _fields(view, 0, len(view)):
        if number != GRAPH_FIELD or wire != _LENGTH_DELIMITED:
            continue
        for g_number, g_wire, t_start, t_end in _fields(view, start, end):
            if g_number != INITIALIZER_FIELD or g_wire != _LENGTH_DELIMITED:
                continue
            name, data = None, None
            for t_number, t_wire, f_start, f_end in _fields(view, t_start, t_end):
                if t_wire != _LENGTH_DELIMITED:
                    continue
                if t_number == _NAME:
                    name = bytes(view[f_start:f_end]).decode("utf-8")
                elif t_number == RAW_DATA_FIELD:
                    data = (f_start, f_end - f_start)  # the last one wins, as in protobuf
            if name is None or data is None:
                continue
            if name in found:
                twice.add(name)
            found[name] = data
    for name in twice:
        del found[name]
    return found
