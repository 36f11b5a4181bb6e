"""Constant operands as the analysis and the surgery read them: initializers (read once,
shared, views of the file's bytes where possible), ``Constant`` nodes, and values behind
``Identity`` and ``QuantizeLinear``/``DequantizeLinear`` chains."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .qdq import qdq_values
from .wire import RAW_DTYPES, raw_data_offsets

__all__ = ["InitializerCache", "Param", "ParamResolver", "constant_values"]


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


# Nodes (Identity, Q/DQ) a constant is followed through, at most: exporters put one to three
# between a weight and its reader. A longer chain is not read as a constant (its reader is then
# left alone): each step keeps its own chain and array, so a hostile file with 30,000 Identity
# nodes in a row took 90 s and 4.5 GB to analyse.
MAX_CHAIN = 8


class ParamResolver:
    """Finds the constant value behind a tensor (initializer, Constant node, Identity, Q/DQ).

    ``initializers``: a cache shared with other readers of the same model (see InitializerCache)."""

    def __init__(self, initializers: InitializerCache | None = None) -> None:
        self._cache: dict[int, Param | None] = {}
        self._initializers = initializers

    def __call__(self, tensor: gs.Tensor | None, _depth: int = 0) -> Param | None:
        if tensor is None:
            return None
        key = id(tensor)
        if key not in self._cache:
            if _depth > MAX_CHAIN:  # no deeper recursion than a chain may be long
                return None
            self._cache[key] = self._resolve(tensor, _depth)
        return self._cache[key]

    def forget(self, tensor: gs.Tensor) -> None:
        """Drop what was read for ``tensor``: the surgery calls it once a weight is sliced, so
        the original and its sliced copy are not both kept for every weight of the model."""
        from onnx_graphsurgeon.ir.tensor import LazyValues

        self._cache.pop(id(tensor), None)
        lazy = getattr(tensor, "_values", None)
        if self._initializers is not None and isinstance(lazy, LazyValues) and isinstance(lazy.tensor, onnx.TensorProto):
            self._initializers.forget(lazy.tensor)

    def _resolve(self, tensor: gs.Tensor, depth: int) -> Param | None:
        if isinstance(tensor, gs.Constant):
            return Param(constant_values(tensor, self._initializers), (), tensor)
        if len(tensor.inputs) != 1:
            return None
        node = tensor.inputs[0]
        if node.op == "Constant" and (node.domain or "") in ("", "ai.onnx"):
            value = _constant_node_value(node)
            return None if value is None else Param(value, (), node)
        if node.op == "Identity":
            inner = self(node.inputs[0], depth + 1)
            if inner is None or len(inner.chain) >= MAX_CHAIN:
                return None
            return Param(inner.values, (node, *inner.chain), inner.storage)
        if node.op in ("DequantizeLinear", "QuantizeLinear"):
            x = self(node.inputs[0], depth + 1)
            scale = self(node.inputs[1], depth + 1) if len(node.inputs) > 1 else None
            zp = self(node.inputs[2], depth + 1) if len(node.inputs) > 2 and node.inputs[2].name else None
            if x is None or scale is None or node.attrs.get("block_size", 0) or len(x.chain) >= MAX_CHAIN:
                return None
            axis = int(node.attrs.get("axis", 1))
            values = qdq_values(node.op, x.values, scale.values, None if zp is None else zp.values, axis)
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
