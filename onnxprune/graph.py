"""Loading models safely and reading what the analysis needs from them.

The model is held as an onnx-graphsurgeon ``Graph``; this module adds what graphsurgeon does
not know: parameters hidden behind ``Constant``/``Identity``/``DequantizeLinear`` nodes, static
shapes for the analysis, and safe loading of files with external data.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .errors import LoadError, UnsupportedModel, UsageError
from .wire import RAW_DTYPES, raw_data_offsets

__all__ = [
    "load_model",
    "check_structure",
    "Param",
    "ParamResolver",
    "InitializerCache",
    "infer_static_shapes",
    "model_opset",
    "dynamic_batch_inputs",
]

Shape = tuple[int | None, ...]


def _check_external_data(model: onnx.ModelProto, base: Path, source: str) -> set[Path]:
    """Refuse external data outside the model's folder or missing; return the files it names."""
    base = base.resolve()
    files: set[Path] = set()
    for tensor in onnx.external_data_helper._get_all_tensors(model):  # noqa: SLF001 - onnx has no public walker
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents:
            raise LoadError(
                f"{source}: tensor {tensor.name!r} has external data at {location!r}, outside the model's folder; refused"
            )
        if not target.is_file():
            raise LoadError(f"{source}: tensor {tensor.name!r}: external data file {location!r} not found")
        files.add(target)
    return files


def load_model(model: onnx.ModelProto | str | os.PathLike[str]) -> tuple[onnx.ModelProto, str, int | None, InitializerCache]:
    """Load and check a model; return it with a name for messages (its path or '<ModelProto>')
    and its size on disk with its external data (None for a ModelProto), and the cache its
    weights are read through (views of the file's bytes where they are stored in it).

    A ModelProto given by the caller is copied, so the caller's object is never modified.
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
            raise LoadError(f"{source}: not an ONNX model ({_first_line(exc)})") from None
        external = _check_external_data(proto, path.parent, source)
        size = path.stat().st_size + sum(f.stat().st_size for f in external)
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise LoadError(f"{source}: cannot read external data ({_first_line(exc)})") from None
    else:
        raise UsageError(f"expected a path or onnx.ModelProto, got {type(model).__name__}")
    if not proto.HasField("graph") or len(proto.graph.node) == 0:
        raise LoadError(f"{source}: not an ONNX model (no graph nodes)")
    _check_opsets(proto, source)
    _check_dataflow(proto, source)
    try:
        check_structure(proto)
    except Exception as exc:
        raise LoadError(f"{source}: invalid model: {_first_line(exc)}") from None
    return proto, source, size, InitializerCache(proto, serialized)


def check_structure(model: onnx.ModelProto, full_check: bool = False) -> None:
    """onnx.checker on the model without its big weights: the same graph, types and shapes are
    checked, the weights are not serialised again (fast, and fine for models over 2 GB)."""
    onnx.checker.check_model(_without_big_initializers(model, keep_metadata=True), full_check=full_check)


def _check_opsets(model: onnx.ModelProto, source: str) -> None:
    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > newest:
            raise LoadError(f"{source}: opset {imp.version} is newer than the installed onnx supports ({newest})")


def _check_dataflow(model: onnx.ModelProto, source: str) -> None:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # onnx's checker puts the useful sentence first, then a context dump.
    return lines[0] if lines else type(exc).__name__


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _dims(value_info: onnx.ValueInfoProto) -> Shape | None:
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.tensor_type.shape.dim)


def dynamic_batch_inputs(model: onnx.ModelProto) -> list[str]:
    """Graph inputs whose first dimension is symbolic (a dynamic batch)."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = _dims(vi)
        if dims and dims[0] is None:
            out.append(vi.name)
    return out


def concrete_input_shapes(
    model: onnx.ModelProto, overrides: Mapping[str, tuple[int, ...]], source: str, batch: int = 1
) -> dict[str, Shape]:
    """Input shapes for analysis: the user's --input-shape, a dynamic batch set to ``batch``,
    other dynamic dimensions left unknown (None)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    for name in overrides:
        if name not in inputs:
            raise UsageError(f"{source}: --input-shape names {name!r}, but the model's inputs are {sorted(inputs)}")
    shapes: dict[str, Shape] = {}
    for name, vi in inputs.items():
        dims = _dims(vi)
        if name in overrides:
            given = overrides[name]
            if dims is not None and len(dims) != len(given):
                raise UsageError(f"{source}: --input-shape {name}: rank {len(given)} but the model's input has rank {len(dims)}")
            if dims is not None:
                for i, (have, want) in enumerate(zip(dims, given)):
                    if have is not None and have != want:
                        raise UsageError(f"{source}: --input-shape {name}: dimension {i} is fixed to {have} in the model, not {want}")
            shapes[name] = tuple(given)
        elif dims is None:
            shapes[name] = ()
        else:
            shapes[name] = tuple((batch if (i == 0 and d is None) else d) for i, d in enumerate(dims))
    return shapes


def infer_static_shapes(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Shape],
    known_values: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Shape]:
    """Shape of every tensor with the given input shapes (None for unknown dimensions).

    ``known_values``: run-time computed tensors (shape expressions) whose value is known for
    these input shapes; shape inference is told them, so it can see through ``x.chunk()``.
    """
    # Shape inference only needs initializer shapes and the values of small (shape-like) tensors;
    # copying the big weights would double the memory for nothing.
    m = _without_big_initializers(model)
    if known_values:
        renamed = {name: f"{name}__onnxprune_value" for name in known_values}
        for name, value in known_values.items():
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(value), renamed[name]))
        for node in m.graph.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
    inits = {i.name for i in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits or vi.name not in input_shapes:
            continue
        shape = input_shapes[vi.name]
        if not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for d, v in zip(dims, shape):
            if v is not None:
                d.Clear()
                d.dim_value = int(v)
    del m.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise UnsupportedModel(f"shape inference failed: {_first_line(exc)}") from None
    shapes: dict[str, Shape] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = _dims(vi)
        if dims is not None:
            shapes[vi.name] = dims
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


_SMALL = 64  # elements; initializers this small are kept for data propagation (shapes, axes)


def _without_big_initializers(model: onnx.ModelProto, keep_metadata: bool = False) -> onnx.ModelProto:
    """A shallow stand-in of the model whose big initializers are replaced by graph inputs.

    Shape inference sees the same shapes; the weights are not copied.
    """
    m = onnx.ModelProto()
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    if keep_metadata:
        m.metadata_props.extend(model.metadata_props)
        m.graph.value_info.extend(model.graph.value_info)
    g = m.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    input_names = {vi.name for vi in model.graph.input}
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        if (n <= _SMALL or init.data_type == onnx.TensorProto.INT64) and _has_data(init):
            g.initializer.append(init)
        elif init.name not in input_names:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return m


def _has_data(t: onnx.TensorProto) -> bool:
    """False for a hollow tensor (saving.DeferredModel: its values wait as an array)."""
    return (
        t.HasField("raw_data")
        or t.data_location == onnx.TensorProto.EXTERNAL
        or any(len(getattr(t, f)) for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"))
        or (len(t.dims) > 0 and int(np.prod(t.dims)) == 0)
    )


@dataclass(frozen=True)
class Param:
    """A constant operand as the analysis sees it: float values, plus the chain it comes from.

    ``chain`` lists the nodes between the consumer and the stored tensor (Identity, DequantizeLinear,
    QuantizeLinear); ``storage`` is the graphsurgeon Constant (initializer) or the Constant node.
    """

    values: np.ndarray
    chain: tuple[gs.Node, ...]
    storage: object


class InitializerCache:
    """The arrays of one loaded model's initializers, each read once and shared by the steps
    that read it (the analysis, then the surgery): reading a TensorProto copies its data, which
    on a big model costs about as much as loading it. The arrays are read-only.

    Given the bytes the model was parsed from, the main graph's raw-data weights are numpy
    views of those bytes (found by wire.raw_data_offsets): no copy at all."""

    def __init__(self, model: onnx.ModelProto | None = None, serialized: bytes | None = None) -> None:
        self._arrays: dict[int, tuple[onnx.TensorProto, np.ndarray]] = {}
        self._views: dict[int, tuple[onnx.TensorProto, int, int]] | None = None  # found on first use
        self._model = model
        self._buffer = serialized

    def _find_views(self) -> dict[int, tuple[onnx.TensorProto, int, int]]:
        views: dict[int, tuple[onnx.TensorProto, int, int]] = {}
        if self._model is None or self._buffer is None or sys.byteorder != "little":  # raw data is little-endian
            return views
        try:
            offsets = raw_data_offsets(self._buffer)
        except (ValueError, IndexError):  # not what protobuf parsed? then read through protobuf
            return views
        for t in self._model.graph.initializer:
            hit = offsets.get(t.name)
            if hit is not None:
                views[id(t)] = (t, *hit)  # holding t keeps its id its own
        return views

    def array(self, tensor: onnx.TensorProto) -> np.ndarray:
        hit = self._arrays.get(id(tensor))
        if hit is None or hit[0] is not tensor:  # the tensor is held, so its id stays its own
            values = self._view(tensor)
            if values is None:
                values = numpy_helper.to_array(tensor)
            values.flags.writeable = False
            hit = self._arrays[id(tensor)] = (tensor, values)
        return hit[1]

    def _view(self, tensor: onnx.TensorProto) -> np.ndarray | None:
        if self._views is None:
            self._views = self._find_views()
        entry = self._views.get(id(tensor))
        dtype = RAW_DTYPES.get(tensor.data_type)
        if entry is None or entry[0] is not tensor or dtype is None:
            return None
        _, offset, length = entry
        count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
        if count * dtype.itemsize != length:
            return None
        return np.frombuffer(self._buffer, dtype=dtype, count=count, offset=offset).reshape(tuple(tensor.dims))

    def forget(self, tensor: onnx.TensorProto) -> None:
        """Drop the array of ``tensor`` (read again if asked for)."""
        self._arrays.pop(id(tensor), None)


class ParamResolver:
    """Finds the constant value behind a tensor (initializer, Constant node, Identity, Q/DQ).

    ``initializers``: a cache shared with other readers of the same model (see InitializerCache)."""

    def __init__(self, initializers: InitializerCache | None = None) -> None:
        self._cache: dict[int, Param | None] = {}
        self._initializers = initializers

    def __call__(self, tensor: gs.Tensor | None) -> Param | None:
        if tensor is None:
            return None
        key = id(tensor)
        if key not in self._cache:
            self._cache[key] = self._resolve(tensor)
        return self._cache[key]

    def forget(self, tensor: gs.Tensor) -> None:
        """Drop what was read for ``tensor``: the surgery calls it once a weight is sliced, so
        the original and its sliced copy are not both kept for every weight of the model."""
        from onnx_graphsurgeon.ir.tensor import LazyValues

        self._cache.pop(id(tensor), None)
        lazy = getattr(tensor, "_values", None)
        if self._initializers is not None and isinstance(lazy, LazyValues) and isinstance(lazy.tensor, onnx.TensorProto):
            self._initializers.forget(lazy.tensor)

    def _resolve(self, tensor: gs.Tensor) -> Param | None:
        if isinstance(tensor, gs.Constant):
            return Param(constant_values(tensor, self._initializers), (), tensor)
        if len(tensor.inputs) != 1:
            return None
        node = tensor.inputs[0]
        if node.op == "Constant" and (node.domain or "") in ("", "ai.onnx"):
            value = _constant_node_value(node)
            return None if value is None else Param(value, (), node)
        if node.op == "Identity":
            inner = self(node.inputs[0])
            return None if inner is None else Param(inner.values, (node, *inner.chain), inner.storage)
        if node.op in ("DequantizeLinear", "QuantizeLinear"):
            x = self(node.inputs[0])
            scale = self(node.inputs[1]) if len(node.inputs) > 1 else None
            zp = self(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
            if x is None or scale is None or node.attrs.get("block_size", 0):
                return None
            axis = int(node.attrs.get("axis", 1))
            values = _qdq(node.op, x.values, scale.values, None if zp is None else zp.values, axis)
            return Param(values, (node, *x.chain), x.storage)
        return None


def constant_values(t: gs.Constant, initializers: InitializerCache | None = None) -> np.ndarray:
    """A graphsurgeon constant's array without graphsurgeon's extra copy, and without caching
    it on the tensor (that would keep every weight of the model alive a second time); read
    through ``initializers`` when given."""
    from onnx_graphsurgeon.ir.tensor import LazyValues

    lazy = t._values  # noqa: SLF001 - graphsurgeon's lazy holder; .values would copy and cache
    if isinstance(lazy, LazyValues) and isinstance(lazy.tensor, onnx.TensorProto):
        return initializers.array(lazy.tensor) if initializers is not None else numpy_helper.to_array(lazy.tensor)
    return np.asarray(t.values)


def _constant_node_value(node: gs.Node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        v = attrs["value"]
        return constant_values(v) if isinstance(v, gs.Constant) else np.asarray(v)
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    return None


def _broadcast_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if v.ndim != 1 or ndim == 0:
        return v
    axis = axis % ndim
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _qdq(op: str, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    s = _broadcast_axis(scale.astype(np.float64), x.ndim, axis)
    z = np.zeros(1) if zp is None else _broadcast_axis(zp.astype(np.float64), x.ndim, axis)
    if op == "DequantizeLinear":
        return ((x.astype(np.float64) - z) * s).astype(np.float32)
    if zp is not None:
        info = np.iinfo(zp.dtype)
        lo, hi = info.min, info.max
    else:
        lo, hi = 0, 255
    return np.clip(np.rint(x.astype(np.float64) / s) + z, lo, hi).astype(np.float32)
