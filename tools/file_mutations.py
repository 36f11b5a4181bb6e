"""Seeded mutations of ONNX files for tools/fuzz_files.py (and the seeded run in the tests):
bit flips and truncations; protobuf fields deleted, duplicated or given another wire type;
dims and data types rewritten (negative, zero, huge, overflowing products); raw data resized;
a weight value changed (the file stays valid); strings made invalid UTF-8; node inputs pointed
at missing tensors, at the node's own output or at a later node's output; attributes of another
type; external-data offsets, lengths and locations past the file's end, outside the folder or
nowhere; opset and IR versions rewritten.

Protobuf fields are found by walking the wire format with onnx's descriptors, and edited in
place, the lengths of the enclosing messages rewritten (``splice``).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from onnxprune.wire import field_spans, read_varint

__all__ = ["MUTATIONS", "Model", "Mutant", "Site", "field_bytes", "mutate", "splice", "varint", "walk"]


# ---------------------------------------------------------------- the wire format


def varint(n: int) -> bytes:
    """A varint; negative numbers as protobuf encodes int64 (ten bytes, two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True)
class Site:
    """One protobuf field in the file: where its key, length and payload lie, what it is
    (``Message.field`` from onnx's descriptors) and the fields that enclose it."""

    parents: tuple[Site, ...]
    key_start: int
    len_start: int  # the length varint of a length-delimited field (else = payload_start)
    payload_start: int
    end: int
    number: int
    wire: int
    name: str  # e.g. "TensorProto.dims"

    @property
    def payload(self) -> slice:
        return slice(self.payload_start, self.end)


def walk(
    buf: bytes,
    descriptor=onnx.ModelProto.DESCRIPTOR,
    skip_payloads: frozenset[str] = frozenset({"TensorProto.raw_data"}),
) -> list[Site]:
    """Every field of the serialised message ``buf``, recursing into sub-messages that onnx's
    descriptors know. Raises ValueError on a malformed message."""
    view = memoryview(buf)
    sites: list[Site] = []

    def rec(start: int, end: int, desc, parents: tuple[Site, ...]) -> None:
        for number, wire, key_start, len_start, payload_start, after in field_spans(view, start, end):
            fd = desc.fields_by_number.get(number)
            site = Site(
                parents,
                key_start,
                len_start,
                payload_start,
                after,
                number,
                wire,
                f"{desc.name}.{fd.name if fd else number}",
            )
            sites.append(site)
            if (
                fd is not None
                and fd.message_type is not None
                and wire == 2
                and site.name not in skip_payloads
                and len(parents) < 16
            ):
                rec(payload_start, after, fd.message_type, (*parents, site))

    rec(0, len(view), descriptor, ())
    return sites


def splice(buf: bytes, site: Site, new: bytes) -> bytes:
    """``buf`` with the whole field ``site`` (key, length, payload) replaced by ``new`` (empty:
    deleted), the lengths of the enclosing messages rewritten to match."""
    out, start, end = new, site.key_start, site.end
    for parent in reversed(site.parents):
        payload = buf[parent.payload_start : start] + out + buf[end : parent.end]
        out = buf[parent.key_start : parent.len_start] + varint(len(payload)) + payload
        start, end = parent.key_start, parent.end
    return buf[:start] + out + buf[end:]


def field_bytes(
    buf: bytes, site: Site, payload: bytes | None = None, number: int | None = None, wire: int | None = None
) -> bytes:
    """The field re-encoded with a new payload (and optionally a new number or wire type)."""
    number = site.number if number is None else number
    wire = site.wire if wire is None else wire
    payload = buf[site.payload] if payload is None else payload
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


# ---------------------------------------------------------------- mutations


@dataclass
class Mutant:
    kind: str
    data: bytes
    detail: str
    valid: bool = False  # expected to stay a valid model (prunes normally)


class Model:
    """A model file to mutate: its bytes and fields, found once."""

    def __init__(self, path: Path, extra_args: Sequence[str] = ()) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.sites = walk(self.data)
        self.extra_args = list(extra_args)
        self.by_name: dict[str, list[Site]] = {}
        for s in self.sites:
            self.by_name.setdefault(s.name, []).append(s)
        self.external = bool(self.by_name.get("TensorProto.external_data"))
        self.share = 1  # of the files in a run

    def pick(self, rng: random.Random, *names: str) -> Site | None:
        pool = [s for n in names for s in self.by_name.get(n, ())]
        return rng.choice(pool) if pool else None


_HUGE_DIMS = (-1, -7, -(2**63), 0, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1, 3, 7, 1000)
_STRINGS = (
    "NodeProto.input",
    "NodeProto.output",
    "NodeProto.name",
    "NodeProto.op_type",
    "TensorProto.name",
    "ValueInfoProto.name",
    "AttributeProto.name",
    "AttributeProto.s",
    "StringStringEntryProto.value",
    "StringStringEntryProto.key",
    "GraphProto.name",
    "OperatorSetIdProto.domain",
    "NodeProto.domain",
)
_INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80abc", b"name\xfe")


def m_flip(m: Model, rng: random.Random) -> Mutant:
    data = bytearray(m.data)
    spots = []
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        spots.append(i)
    return Mutant("byte flip", bytes(data), f"bits at {spots}")


def m_truncate(m: Model, rng: random.Random) -> Mutant:
    n = rng.randrange(1, len(m.data))
    return Mutant("truncation", m.data[:n], f"cut at {n}")


def m_delete(m: Model, rng: random.Random) -> Mutant:
    s = rng.choice(m.sites)
    return Mutant("field deleted", splice(m.data, s, b""), s.name)


def m_duplicate(m: Model, rng: random.Random) -> Mutant:
    s = rng.choice(m.sites)
    whole = m.data[s.key_start : s.end]
    return Mutant("field duplicated", splice(m.data, s, whole + whole), s.name)


def m_dims(m: Model, rng: random.Random) -> Mutant:
    s = m.pick(rng, "TensorProto.dims", "Dimension.dim_value", "TensorProto.dims")
    if s is None or s.wire != 0:
        return m_flip(m, rng)
    value = rng.choice(_HUGE_DIMS) if rng.random() < 0.8 else rng.randrange(1, 5000)
    return Mutant("dims rewritten", splice(m.data, s, field_bytes(m.data, s, varint(value))), f"{s.name} = {value}")


def m_data_type(m: Model, rng: random.Random) -> Mutant:
    s = m.pick(rng, "TensorProto.data_type", "Tensor.elem_type", "AttributeProto.type")
    if s is None or s.wire != 0:
        return m_flip(m, rng)
    value = rng.choice((0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 13, 16, 17, 21, 23, 25, 99, -1, 2**40))
    return Mutant(
        "data type rewritten", splice(m.data, s, field_bytes(m.data, s, varint(value))), f"{s.name} = {value}"
    )


def m_raw_size(m: Model, rng: random.Random) -> Mutant:
    s = m.pick(rng, "TensorProto.raw_data")
    if s is None:
        return m_flip(m, rng)
    raw = m.data[s.payload]
    choice = rng.random()
    if choice < 0.4 and raw:
        new = raw[: rng.randrange(len(raw))]
    elif choice < 0.7:
        new = raw + bytes(rng.choice((1, 3, 4, 64, 4096)))
    else:
        new = b""
    return Mutant("raw data resized", splice(m.data, s, field_bytes(m.data, s, new)), f"{len(raw)} -> {len(new)} bytes")


def m_weight_value(m: Model, rng: random.Random) -> Mutant:
    """A changed weight value: the file stays a valid model."""
    pool = list(m.by_name.get("GraphProto.initializer", ()))  # float tensors with raw data, below
    rng.shuffle(pool)
    for t in pool[:50]:
        raw_site = data_type = None
        for s in m.by_name.get("TensorProto.raw_data", ()):
            if s.parents and s.parents[-1] is t:
                raw_site = s
        for s in m.by_name.get("TensorProto.data_type", ()):
            if s.parents and s.parents[-1] is t:
                data_type = read_varint(m.data, s.payload_start)[0]
        if raw_site is None or data_type != onnx.TensorProto.FLOAT or raw_site.end - raw_site.payload_start < 16:
            continue
        count = (raw_site.end - raw_site.payload_start) // 4
        i = raw_site.payload_start + 4 * rng.randrange(count)
        value = struct.pack("<f", rng.uniform(-2.0, 2.0))
        return Mutant("weight value changed", m.data[:i] + value + m.data[i + 4 :], f"float at {i}", valid=True)
    return m_flip(m, rng)


def m_utf8(m: Model, rng: random.Random) -> Mutant:
    s = m.pick(rng, *_STRINGS)
    if s is None:
        return m_flip(m, rng)
    old = m.data[s.payload]
    bad = rng.choice(_INVALID_UTF8)
    at = rng.randrange(len(old) + 1)
    return Mutant("invalid UTF-8 string", splice(m.data, s, field_bytes(m.data, s, old[:at] + bad + old[at:])), s.name)


def _node_sites(m: Model) -> list[Site]:
    return m.by_name.get("GraphProto.node", [])


def _edit_node(
    m: Model, rng: random.Random, kind: str, edit: Callable[[onnx.NodeProto, list[onnx.NodeProto]], str | None]
) -> Mutant:
    nodes = [n for n in _node_sites(m) if len(n.parents) == 1]  # the main graph's nodes
    if not nodes:
        return m_flip(m, rng)
    for _ in range(20):
        i = rng.randrange(len(nodes))
        node = onnx.NodeProto.FromString(m.data[nodes[i].payload])
        later = [onnx.NodeProto.FromString(m.data[n.payload]) for n in nodes[i + 1 : i + 40]]
        detail = edit(node, later)
        if detail is not None:
            return Mutant(
                kind,
                splice(m.data, nodes[i], field_bytes(m.data, nodes[i], node.SerializeToString())),
                f"node {node.name!r}: {detail}",
            )
    return m_flip(m, rng)


def m_missing_ref(m: Model, rng: random.Random) -> Mutant:
    def edit(node: onnx.NodeProto, later: list[onnx.NodeProto]) -> str | None:
        if rng.random() < 0.5 and node.input:
            j = rng.randrange(len(node.input))
            node.input[j] = f"missing_{rng.randrange(1000)}"
            return f"input {j}"
        node.input.append(f"missing_{rng.randrange(1000)}")
        return "extra input"

    return _edit_node(m, rng, "reference to a missing tensor", edit)


def m_self_ref(m: Model, rng: random.Random) -> Mutant:
    def edit(node: onnx.NodeProto, later: list[onnx.NodeProto]) -> str | None:
        if not node.input or not node.output:
            return None
        j = rng.randrange(len(node.input))
        node.input[j] = node.output[0]
        return f"input {j} is its own output"

    return _edit_node(m, rng, "self-referencing node", edit)


def m_loop(m: Model, rng: random.Random) -> Mutant:
    def edit(node: onnx.NodeProto, later: list[onnx.NodeProto]) -> str | None:
        outs = [o for n in later for o in n.output if o]
        if not node.input or not outs:
            return None
        j = rng.randrange(len(node.input))
        node.input[j] = rng.choice(outs)
        return f"input {j} read from a later node"

    return _edit_node(m, rng, "loop in references", edit)


def m_dup_output(m: Model, rng: random.Random) -> Mutant:
    def edit(node: onnx.NodeProto, later: list[onnx.NodeProto]) -> str | None:
        outs = [o for n in later for o in n.output if o]
        if not node.output or not outs:
            return None
        node.output[0] = rng.choice(outs)
        return "output also produced by a later node"

    return _edit_node(m, rng, "tensor produced twice", edit)


_OTHER_ATTRS = (
    lambda name: helper.make_attribute(name, "text"),
    lambda name: helper.make_attribute(name, 1.5),
    lambda name: helper.make_attribute(name, 7),
    lambda name: helper.make_attribute(name, [1, 2, 3]),
    lambda name: helper.make_attribute(name, [0.5, 2.0]),
    lambda name: helper.make_attribute(name, ["a", "b"]),
    lambda name: helper.make_attribute(name, -(2**40)),
    lambda name: helper.make_attribute(name, [2**40, -(2**40)]),
)


def m_attr(m: Model, rng: random.Random) -> Mutant:
    def edit(node: onnx.NodeProto, later: list[onnx.NodeProto]) -> str | None:
        if not node.attribute:
            return None
        j = rng.randrange(len(node.attribute))
        a = node.attribute[j]
        if rng.random() < 0.35:  # the type field lies about the value it holds
            a.type = rng.choice([t for t in range(1, 15) if t != a.type])
            return f"attribute {a.name!r} type field = {a.type}"
        new = rng.choice(_OTHER_ATTRS)(a.name)
        a.CopyFrom(new)
        return f"attribute {a.name!r} now {onnx.AttributeProto.AttributeType.Name(new.type)}"

    return _edit_node(m, rng, "attribute of the wrong type", edit)


def m_external(m: Model, rng: random.Random) -> Mutant:
    s = m.pick(rng, "TensorProto.external_data")
    if s is None:
        return m_flip(m, rng)
    entry = onnx.StringStringEntryProto.FromString(m.data[s.payload])
    big = 45_000_000
    choices = {
        "offset": [str(big * 2), str(2**63), "-5", "abc", "", "0", str(2**64)],
        "length": [str(big * 2), str(2**62), "-1", "0", "4", "1e9", ""],
        "location": ["missing.bin", "../outside.bin", "/etc/hostname", "", "dir/", ".", "\u00e9.data"],
        "checksum": ["x"],
    }
    if entry.key not in choices or rng.random() < 0.2:
        entry.key = rng.choice(("offset", "length", "bogus", "location"))
    entry.value = rng.choice(choices.get(entry.key, ["1"]))
    return Mutant(
        "external data reference",
        splice(m.data, s, field_bytes(m.data, s, entry.SerializeToString())),
        f"{entry.key} = {entry.value!r}",
    )


def m_version(m: Model, rng: random.Random) -> Mutant:
    s = m.pick(rng, "OperatorSetIdProto.version", "ModelProto.ir_version")
    if s is None:
        return m_flip(m, rng)
    value = rng.choice((0, 1, 2, 5, 7, 9, 11, 100, -1, 2**40))
    return Mutant("version rewritten", splice(m.data, s, field_bytes(m.data, s, varint(value))), f"{s.name} = {value}")


def m_wire_type(m: Model, rng: random.Random) -> Mutant:
    s = rng.choice(m.sites)
    wire = rng.choice([w for w in (0, 1, 2, 5) if w != s.wire])
    payload = {0: varint(rng.randrange(2**20)), 1: bytes(8), 2: b"xx", 5: bytes(4)}[wire]
    return Mutant("field of the wrong wire type", splice(m.data, s, field_bytes(m.data, s, payload, wire=wire)), s.name)


MUTATIONS: dict[str, tuple[Callable[[Model, random.Random], Mutant], float]] = {
    "flip": (m_flip, 3),
    "truncate": (m_truncate, 1.5),
    "delete": (m_delete, 2),
    "duplicate": (m_duplicate, 2),
    "dims": (m_dims, 2),
    "data_type": (m_data_type, 1.5),
    "raw_size": (m_raw_size, 1.5),
    "weight_value": (m_weight_value, 0.7),
    "utf8": (m_utf8, 1.5),
    "missing_ref": (m_missing_ref, 1),
    "self_ref": (m_self_ref, 0.7),
    "loop": (m_loop, 0.7),
    "dup_output": (m_dup_output, 0.5),
    "attr": (m_attr, 1.5),
    "version": (m_version, 0.5),
    "wire_type": (m_wire_type, 0.7),
}


def mutate(m: Model, rng: random.Random) -> Mutant:
    """One seeded mutation of ``m`` (external-data references get extra weight where present)."""
    names = list(MUTATIONS)
    weights = [MUTATIONS[n][1] for n in names]
    if m.external:
        names.append("external")
        weights.append(6.0)
    name = rng.choices(names, weights)[0]
    fn = m_external if name == "external" else MUTATIONS[name][0]
    return fn(m, rng)
