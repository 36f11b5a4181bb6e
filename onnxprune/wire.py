"""Where each initializer's raw data lies in a serialised model, found by walking the protobuf
wire format (tags and lengths only; payloads are skipped, not read).

Reading ``TensorProto.raw_data`` copies the bytes out of protobuf; on a model of hundreds of MB
that copy costs about as much as loading it. With the offsets, the weights are numpy views of
the file's bytes, which protobuf's parser already keeps (see graph.InitializerCache).
"""

from __future__ import annotations

import onnx

__all__ = ["raw_data_offsets"]

_GRAPH = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
_NAME = onnx.TensorProto.DESCRIPTOR.fields_by_name["name"].number
_RAW_DATA = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
_LENGTH_DELIMITED = 2


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
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


def _fields(buf: bytes | memoryview, start: int, end: int):  # noqa: ANN202 - yields (number, wire type, start, end)
    """The fields of the message in ``buf[start:end]``: (number, wire type, payload start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(buf, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:  # groups (3, 4) are not used by ONNX
            raise ValueError(f"unexpected wire type {wire}")
        if after > end:
            raise ValueError("field runs past its message")
        yield number, wire, pos, after
        pos = after


def raw_data_offsets(buf: bytes) -> dict[str, tuple[int, int]]:
    """For every initializer of the main graph stored as raw data: (offset, length) of that
    data in ``buf``, the serialised ModelProto. Names seen twice are left out (the reader then
    falls back to protobuf). Raises ValueError when ``buf`` is not a well-formed message."""
    found: dict[str, tuple[int, int]] = {}
    twice: set[str] = set()
    view = memoryview(buf)
    for number, wire, start, end in _fields(view, 0, len(view)):
        if number != _GRAPH or wire != _LENGTH_DELIMITED:
            continue
        for g_number, g_wire, t_start, t_end in _fields(view, start, end):
            if g_number != _INITIALIZER or g_wire != _LENGTH_DELIMITED:
                continue
            name, data = None, None
            for t_number, t_wire, f_start, f_end in _fields(view, t_start, t_end):
                if t_wire != _LENGTH_DELIMITED:
                    continue
                if t_number == _NAME:
                    name = bytes(view[f_start:f_end]).decode("utf-8")
                elif t_number == _RAW_DATA:
                    data = (f_start, f_end - f_start)  # the last one wins, as in protobuf
            if name is None or data is None:
                continue
            if name in found:
                twice.add(name)
            found[name] = data
    for name in twice:
        del found[name]
    return found
