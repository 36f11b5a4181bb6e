"""Mutation fuzzing of model files: every malformed file must be refused with one line naming
the file and what is wrong (exit 2), never an internal error (exit 3), a traceback, a crash or
a hang, and with bounded memory; a mutated file that is still a valid model prunes normally.

Mutations (seeded): bit flips and truncations of the file; protobuf fields deleted or
duplicated; dims and data types rewritten (negative, zero, huge, overflowing products); raw
data shortened or lengthened; a weight value changed (the file stays valid); strings made
invalid UTF-8; node inputs pointed at missing tensors, at the node's own output or at a later
node's output; attributes given another type; external-data offsets, lengths and locations
pointing past the data file's end, outside the folder or nowhere; opset and IR versions
rewritten. Protobuf fields are found by walking the wire format with onnx's descriptors.

Each mutated file goes through ``onnxprune analyze`` then ``onnxprune prune`` (with
verification) in a forked child of this process (everything imported once; a 60 s alarm; the
child's peak memory from wait4), and every --subprocess-every'th file also through real
``python -m onnxprune`` subprocesses. Writes benchmarks/fuzz_files.md.

    PYTHONPATH=$PWD python tools/fuzz_files.py [--count 20000] [--seed 0] [--models a.onnx,...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import onnx
from onnx import helper

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("ONNXPRUNE_CORPUS", "/work/corpus"))
TIMEOUT = 60  # seconds per command

__all__ = ["Site", "walk", "splice", "mutate", "MUTATIONS", "run_inprocess", "run_forked", "run_subprocess", "classify"]


# ---------------------------------------------------------------- the wire format


def _read_varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
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

    parents: tuple["Site", ...]
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


def walk(buf: bytes, descriptor=onnx.ModelProto.DESCRIPTOR, skip_payloads: frozenset[str] = frozenset({"TensorProto.raw_data"})) -> list[Site]:  # noqa: ANN001
    """Every field of the serialised message ``buf``, recursing into sub-messages that onnx's
    descriptors know. Raises ValueError on a malformed message."""
    view = memoryview(buf)
    sites: list[Site] = []

    def rec(start: int, end: int, desc, parents: tuple[Site, ...]) -> None:  # noqa: ANN001
        pos = start
        while pos < end:
            key_start = pos
            key, pos = _read_varint(view, pos)
            number, wire = key >> 3, key & 7
            len_start = payload_start = pos
            if wire == 0:
                _, after = _read_varint(view, pos)
            elif wire == 1:
                after = pos + 8
            elif wire == 2:
                length, payload_start = _read_varint(view, pos)
                after = payload_start + length
            elif wire == 5:
                after = pos + 4
            else:
                raise ValueError(f"wire type {wire}")
            if after > end:
                raise ValueError("field runs past its message")
            fd = desc.fields_by_number.get(number)
            site = Site(parents, key_start, len_start, payload_start, after, number, wire, f"{desc.name}.{fd.name if fd else number}")
            sites.append(site)
            if fd is not None and fd.message_type is not None and wire == 2 and site.name not in skip_payloads and len(parents) < 16:
                rec(payload_start, after, fd.message_type, (*parents, site))
            pos = after

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


def field_bytes(buf: bytes, site: Site, payload: bytes | None = None, number: int | None = None, wire: int | None = None) -> bytes:
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

    def pick(self, rng: random.Random, *names: str) -> Site | None:
        pool = [s for n in names for s in self.by_name.get(n, ())]
        return rng.choice(pool) if pool else None


_HUGE_DIMS = (-1, -7, -(2**63), 0, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1, 3, 7, 1000)
_STRINGS = ("NodeProto.input", "NodeProto.output", "NodeProto.name", "NodeProto.op_type", "TensorProto.name", "ValueInfoProto.name",
            "AttributeProto.name", "AttributeProto.s", "StringStringEntryProto.value", "StringStringEntryProto.key", "GraphProto.name",
            "OperatorSetIdProto.domain", "NodeProto.domain")
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
    return Mutant("data type rewritten", splice(m.data, s, field_bytes(m.data, s, varint(value))), f"{s.name} = {value}")


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
    pool = []
    for t in m.by_name.get("GraphProto.initializer", ()):  # float tensors with raw data
        pool.append(t)
    rng.shuffle(pool)
    for t in pool[:50]:
        raw_site = data_type = None
        for s in m.by_name.get("TensorProto.raw_data", ()):
            if s.parents and s.parents[-1] is t:
                raw_site = s
        for s in m.by_name.get("TensorProto.data_type", ()):
            if s.parents and s.parents[-1] is t:
                data_type = _read_varint(m.data, s.payload_start)[0]
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


def _edit_node(m: Model, rng: random.Random, kind: str, edit: Callable[[onnx.NodeProto, list[onnx.NodeProto]], str | None]) -> Mutant:
    nodes = [n for n in _node_sites(m) if len(n.parents) == 1]  # the main graph's nodes
    if not nodes:
        return m_flip(m, rng)
    for _ in range(20):
        i = rng.randrange(len(nodes))
        node = onnx.NodeProto.FromString(m.data[nodes[i].payload])
        later = [onnx.NodeProto.FromString(m.data[n.payload]) for n in nodes[i + 1 : i + 40]]
        detail = edit(node, later)
        if detail is not None:
            return Mutant(kind, splice(m.data, nodes[i], field_bytes(m.data, nodes[i], node.SerializeToString())), f"node {node.name!r}: {detail}")
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
    size = _data_size(m, entry) if entry.key == "location" else 0
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
    del size
    return Mutant("external data reference", splice(m.data, s, field_bytes(m.data, s, entry.SerializeToString())), f"{entry.key} = {entry.value!r}")


def _data_size(m: Model, entry: onnx.StringStringEntryProto) -> int:
    p = m.path.parent / entry.value
    return p.stat().st_size if p.is_file() else 0


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


# ---------------------------------------------------------------- running


@dataclass
class Outcome:
    command: str
    code: int | None  # None: killed by a signal
    first_line: str
    lines: int
    peak_kb: int
    seconds: float
    signal: int = 0


def _commands(path: str, out: str, extra: Sequence[str]) -> list[tuple[str, list[str]]]:
    return [("analyze", ["analyze", path, "-q", *extra]), ("prune", ["prune", path, "-o", out, "-q", *extra])]


def run_inprocess(argv: list[str]) -> tuple[int, str]:
    """cli.main in this process; (exit code, stderr). Tracebacks escape as exceptions."""
    from onnxprune import cli

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = cli.main(argv)
    return code, err.getvalue()


def run_forked(argv: list[str], timeout: int = TIMEOUT) -> Outcome:
    """cli.main in a forked child (this process's imports are shared): exit code, stderr,
    the child's peak memory (wait4), killed after ``timeout`` seconds."""
    fd, errfile = tempfile.mkstemp(prefix="fuzzerr")
    start = time.time()
    pid = os.fork()
    if pid == 0:  # the child
        code = 99
        try:
            signal.alarm(timeout)
            os.dup2(fd, 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            code = run_inprocess_raw(argv)
        except BaseException:  # noqa: BLE001 - a traceback escaping cli.main is a finding
            import traceback

            traceback.print_exc(file=sys.stderr)
            code = 98
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.time() - start
    os.close(fd)
    text = Path(errfile).read_text(errors="replace")
    os.remove(errfile)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    code = os.waitstatus_to_exitcode(status)
    sig = -code if code < 0 else 0
    return Outcome(argv[0], None if sig else code, lines[0] if lines else "", len(lines), usage.ru_maxrss, seconds, sig)


def run_inprocess_raw(argv: list[str]) -> int:
    from onnxprune import cli

    code = cli.main(argv)
    sys.stdout.flush()
    return code


def run_subprocess(argv: list[str], timeout: int = TIMEOUT) -> Outcome:
    """``python -m onnxprune`` in a subprocess: exit code, first stderr line, peak memory."""
    with tempfile.TemporaryFile() as err:
        start = time.time()
        p = subprocess.Popen([sys.executable, "-m", "onnxprune", *argv], stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.time() - start
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    code = p.returncode
    sig = -code if code < 0 else 0
    return Outcome(argv[0], None if sig else code, lines[0] if lines else "", len(lines), usage.ru_maxrss, seconds, sig)


def classify(o: Outcome, path: str) -> str:
    """ok / verification failed / refused / bad message / internal error / crash / hang."""
    if o.signal == signal.SIGALRM or o.signal == signal.SIGKILL and o.seconds >= TIMEOUT - 1:
        return "hang"
    if o.signal:
        return "crash"
    if o.code == 0:
        return "ok"
    if o.code == 1:
        return "verification failed"
    if o.code == 2:
        return "refused" if o.lines == 1 and path in o.first_line and "Traceback" not in o.first_line else "bad message"
    return "internal error"


# ---------------------------------------------------------------- the benchmark


def _models(spec: str | None, workdir: Path) -> list[Model]:
    """The models to mutate, each copied into its own folder (with its external data)."""
    default = [
        (ROOT / "fixtures" / "residual.onnx", []),
        (CORPUS / "vcb_captcha_cnn_tf2onnx_nhwc.onnx", []),
        (CORPUS / "basic_pitch_nmp_tf2onnx.onnx", []),
        (CORPUS / "oww_speech_embedding_tf2onnx_nhwc.onnx", []),
        (CORPUS / "ppocrv6_det_tiny_paddle.onnx", ["--input-shape", "x:1,3,64,64"]),
        (CORPUS / "resnet18_malimg_torchdynamo_extdata.onnx", []),
    ]
    chosen = default if not spec else [(Path(p.split(":", 1)[0]), p.split(":", 1)[1].split() if ":" in p else []) for p in spec.split(",")]
    models = []
    for path, extra in chosen:
        folder = workdir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
        m = Model(folder / path.name, extra)
        for s in m.by_name.get("StringStringEntryProto.value", ()):
            parent = s.parents[-1] if s.parents else None
            if parent is None or parent.name != "TensorProto.external_data":
                continue
            entry = onnx.StringStringEntryProto.FromString(m.data[parent.payload])
            if entry.key == "location" and not (folder / entry.value).exists():
                shutil.copy(path.parent / entry.value, folder / entry.value)
        models.append(m)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", help="comma-separated model paths (PATH or 'PATH:--input-shape x:1,3,8,8')")
    parser.add_argument("--subprocess-every", type=int, default=200, help="also run every Nth file through python -m onnxprune")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "fuzz_files.md"))
    parser.add_argument("--log", help="JSON lines of every outcome")
    parser.add_argument("--workdir", help="where mutated files are written (default: a temporary folder)")
    args = parser.parse_args()

    # Everything the commands import, imported once: each forked child shares it.
    import onnxprune.api  # noqa: F401
    import onnxprune.cli  # noqa: F401
    import onnxprune.verification  # noqa: F401
    import onnxruntime  # noqa: F401

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fuzz_files-"))
    models = _models(args.models, workdir)
    log = open(args.log, "w") if args.log else None  # noqa: SIM115
    rng = random.Random(args.seed)
    counts: Counter[tuple[str, str]] = Counter()  # (model, outcome)
    kinds: Counter[tuple[str, str]] = Counter()  # (mutation, outcome)
    findings: list[str] = []
    clean: dict[str, Outcome] = {}
    worst: dict[str, tuple[int, str]] = {}
    slowest = (0.0, "")
    sub_runs = sub_agree = 0
    for m in models:
        out = str(m.path.parent / "out.onnx")
        for name, argv in _commands(str(m.path), out, m.extra_args):
            o = run_forked(argv)
            clean[f"{m.path.name} {name}"] = o
            print(f"clean {m.path.name} {name}: exit {o.code} {o.peak_kb / 1024:.0f} MB {o.seconds:.2f} s {o.first_line[:100]}", flush=True)
    start = time.time()
    for i in range(args.count):
        m = models[i % len(models)]
        mutant = mutate(m, rng)
        path = m.path.parent / f"mutant{m.path.suffix}"
        path.write_bytes(mutant.data)
        out = str(m.path.parent / "out.onnx")
        results = []
        for name, argv in _commands(str(path), out, m.extra_args):
            o = run_forked(argv)
            cls = classify(o, str(path))
            results.append((name, o, cls))
            if i % args.subprocess_every == 0:
                s = run_subprocess(argv)
                sub_runs += 1
                scls = classify(s, str(path))
                sub_agree += scls == cls or {scls, cls} <= {"ok", "verification failed"}
                if scls not in ("ok", "refused", "verification failed"):
                    findings.append(f"{m.path.name} #{i} {mutant.kind} ({mutant.detail}) subprocess {name}: {scls}: {s.first_line[:200]}")
            if cls == "refused" and name == "analyze":
                break  # refused at load: prune would refuse it the same way
        worst_cls = next((c for _, _, c in results if c not in ("ok", "refused", "verification failed")), results[-1][2])
        if mutant.valid and worst_cls != "ok":
            findings.append(f"{m.path.name} #{i} {mutant.kind} ({mutant.detail}): a valid model, but {worst_cls}: {results[-1][1].first_line[:200]}")
        counts[(m.path.name, worst_cls)] += 1
        kinds[(mutant.kind, worst_cls)] += 1
        for name, o, cls in results:
            if cls not in ("ok", "refused", "verification failed"):
                findings.append(f"{m.path.name} #{i} {mutant.kind} ({mutant.detail}) {name}: {cls}: {o.first_line[:200]}")
                keep = workdir / "findings"
                keep.mkdir(exist_ok=True)
                shutil.copy(path, keep / f"{m.path.stem}_{i}{m.path.suffix}")
            if o.peak_kb > worst.get(m.path.name, (0, ""))[0]:
                worst[m.path.name] = (o.peak_kb, f"#{i} {mutant.kind} ({mutant.detail}) {name}")
            if o.seconds > slowest[0]:
                slowest = (o.seconds, f"{m.path.name} #{i} {mutant.kind} {name}")
        if log:
            log.write(json.dumps({"i": i, "model": m.path.name, "kind": mutant.kind, "detail": mutant.detail,
                                  "results": [(n, o.code, o.signal, o.first_line[:300], o.peak_kb, round(o.seconds, 3), c) for n, o, c in results]}) + "\n")
            log.flush()
        if (i + 1) % 100 == 0:
            print(f"{i + 1} files, {time.time() - start:.0f} s, findings {len(findings)}", flush=True)
    seconds = time.time() - start
    _write_report(args, models, counts, kinds, findings, clean, worst, slowest, seconds, sub_runs, sub_agree)


def _write_report(args, models, counts, kinds, findings, clean, worst, slowest, seconds, sub_runs, sub_agree) -> None:  # noqa: ANN001
    outcomes = ["ok", "verification failed", "refused", "bad message", "internal error", "crash", "hang"]
    total = Counter()
    for (_, c), n in counts.items():
        total[c] += n
    lines = [
        "# Mutation fuzzing of model files (tools/fuzz_files.py)",
        "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Seed {args.seed}: {args.count} mutated files from "
        f"{len(models)} models, each through `onnxprune analyze` then `onnxprune prune` (with verification) in a forked "
        f"child (a {TIMEOUT} s limit; peak memory from wait4), every {args.subprocess_every}th also through "
        f"`python -m onnxprune` subprocesses ({sub_runs} runs, {sub_agree} with the same outcome). A file refused by "
        f"`analyze` is not pruned (it is refused at load). Time: {seconds:.0f} s ({seconds / max(args.count, 1):.3f} s per file).",
        "",
        "Outcomes: ok (exit 0), verification failed (exit 1), refused (exit 2, one line naming the file), bad message "
        "(exit 2 otherwise), internal error (exit 3 or a traceback), crash (a signal), hang (the time limit).",
        "",
        "| model | " + " | ".join(outcomes) + " | peak memory, clean (prune) | peak memory, worst mutant |",
        "|---|" + "---|" * (len(outcomes) + 2),
    ]
    for m in models:
        name = m.path.name
        c = clean.get(f"{name} prune")
        w = worst.get(name, (0, ""))
        lines.append(f"| {name} | " + " | ".join(str(counts[(name, o)]) for o in outcomes)
                     + f" | {c.peak_kb / 1024:.0f} MB (exit {c.code}) | {w[0] / 1024:.0f} MB ({w[1]}) |")
    lines.append("| **all** | " + " | ".join(f"**{total[o]}**" for o in outcomes) + " | | |")
    lines += ["", "By mutation:", "", "| mutation | " + " | ".join(outcomes) + " |", "|---|" + "---|" * len(outcomes)]
    for kind in sorted({k for k, _ in kinds}):
        lines.append(f"| {kind} | " + " | ".join(str(kinds[(kind, o)]) for o in outcomes) + " |")
    lines += ["", f"Slowest command: {slowest[0]:.1f} s ({slowest[1]}).", "", f"Findings: {len(findings)}"]
    lines += [f"- {f}" for f in findings[:200]]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
