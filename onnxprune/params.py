"""Constant operands as the analysis and the surgery read them: initializers (read once,
shared, views of the file's bytes where possible), ``Constant`` nodes, and values computed from
them by constant-only subgraphs: ``Identity``, ``QuantizeLinear``/``DequantizeLinear``,
OpenVINO's ``FakeQuantize`` (NNCF's int8 weights: a Constant node through a per-channel
FakeQuantize), shape ops (Reshape, Unsqueeze, Squeeze, Transpose, Flatten), ``Cast`` and
element-wise arithmetic of constants (the weight-only int8 ``Cast -> Mul(scale)``). How such a
value is rewritten when a channel goes is the surgery's business (surgery.SurgeryContext)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .fake_quantize import fake_quantize_values, is_fake_quantize
from .qdq import qdq_values
from .wire import RAW_DTYPES, raw_data_offsets

__all__ = ["ARITHMETIC_OPS", "SHAPE_OPS", "InitializerCache", "Param", "ParamResolver", "is_quantized_chain"]

# Ops whose output is a rearrangement of their first input's elements: a value behind them is
# sliced by folding (a new constant of the same type and size as the stored one).
SHAPE_OPS = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten"})
# Element-wise ops of constants, broadcast numpy-style: each operand is sliced on its own axis.
ARITHMETIC_OPS = frozenset({"Mul", "Div", "Add", "Sub"})
_ARITHMETIC = {"Mul": np.multiply, "Div": np.divide, "Add": np.add, "Sub": np.subtract}


@dataclass(frozen=True)
class Param:
    """A constant operand as the analysis sees it: float values, plus the chain it comes from.

    ``chain`` lists the nodes between the consumer and the stored tensor along the first input
    (Identity, DequantizeLinear, QuantizeLinear, FakeQuantize, Cast, shape ops, arithmetic of
    constants); ``storage`` is the graphsurgeon Constant (initializer) or the Constant node at
    its end. Values keep the type the graph computes (an int8 initializer's values are int8).
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

    def reads(self, model: onnx.ModelProto) -> bool:
        """True when this is the cache of ``model``."""
        return self._model is model

    def originals(self, graph: gs.Graph) -> dict[int, tuple[gs.Constant, onnx.TensorProto]]:
        """The Constants of ``graph``, just imported from this cache's model, that are its
        initializers (by id, with the Constant held so the id stays its own)."""
        if self._model is None:
            return {}
        by_name = {t.name: t for t in self._model.graph.initializer}
        return {
            id(t): (t, by_name[t.name])
            for t in graph.tensors().values()
            if isinstance(t, gs.Constant) and t.name in by_name and tuple(t.shape) == tuple(by_name[t.name].dims)
        }


# Nodes (Identity, Q/DQ, Cast, shape ops, arithmetic) a constant is followed through, at most: exporters put one to three
# between a weight and its reader. A longer chain is not read as a constant (its reader is then
# left alone): each step keeps its own chain and array, so a hostile file with 30,000 Identity
# nodes in a row took 90 s and 4.5 GB to analyse.
MAX_CHAIN = 8


class ParamResolver:
    """Finds the constant value behind a tensor (initializer, Constant node, and the constant-only
    subgraphs of the module docstring).

    ``initializers``: a cache shared with other readers of the same model (see InitializerCache);
    ``graph``: the graph just imported from that model, whose initializers are then read through
    the cache (graphsurgeon's ``Constant.values`` would copy each one and keep the copy on the
    graph). Other constants are read through ``Constant.values``."""

    def __init__(self, initializers: InitializerCache | None = None, graph: gs.Graph | None = None) -> None:
        self._cache: dict[int, Param | None] = {}
        self._initializers = initializers
        self._originals = initializers.originals(graph) if initializers is not None and graph is not None else {}

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
        self._cache.pop(id(tensor), None)
        stored = self.initializer(tensor)
        if stored is not None and self._initializers is not None:
            self._initializers.forget(stored)

    def initializer(self, tensor: gs.Tensor) -> onnx.TensorProto | None:
        """The model's initializer that ``tensor`` is the imported Constant of, else None (a
        Constant made since, or a graph imported without ``graph=``)."""
        hit = self._originals.get(id(tensor))
        return hit[1] if hit is not None and hit[0] is tensor else None

    def _resolve(self, tensor: gs.Tensor, depth: int) -> Param | None:
        if isinstance(tensor, gs.Constant):
            stored = self.initializer(tensor)
            try:
                values = (
                    self._initializers.array(stored)
                    if stored is not None and self._initializers is not None
                    else np.asarray(tensor.values)
                )
            except ValueError:  # a hollow weight of a pruned model (saving.DeferredModel): its values wait as an array
                return None
            return Param(values, (), tensor)
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
        if is_fake_quantize(node.op, node.domain) and len(node.inputs) == 5:
            x = self(node.inputs[0], depth + 1)
            ranges = [self(t, depth + 1) for t in node.inputs[1:]]
            if x is None or any(r is None for r in ranges) or len(x.chain) >= MAX_CHAIN:
                return None
            values = fake_quantize_values(x.values, *(r.values for r in ranges), int(node.attrs.get("levels", 256)))
            return Param(values, (node, *x.chain), x.storage)
        if (node.domain or "") not in ("", "ai.onnx") or not node.inputs:
            return None
        if node.op == "Cast":
            x = self(node.inputs[0], depth + 1)
            dtype = _onnx_dtype(node.attrs.get("to"))
            if x is None or dtype is None or len(x.chain) >= MAX_CHAIN:
                return None
            return Param(np.asarray(x.values).astype(dtype), (node, *x.chain), x.storage)
        if node.op in SHAPE_OPS:
            x = self(node.inputs[0], depth + 1)
            if x is None or len(x.chain) >= MAX_CHAIN:
                return None
            values = self._rearranged(node, np.asarray(x.values), depth)
            return None if values is None else Param(values, (node, *x.chain), x.storage)
        if node.op in ARITHMETIC_OPS and len(node.inputs) == 2:
            a, b = self(node.inputs[0], depth + 1), self(node.inputs[1], depth + 1)
            if a is None or b is None or len(a.chain) >= MAX_CHAIN:
                return None
            va, vb = np.asarray(a.values), np.asarray(b.values)
            if va.dtype.kind != "f" or va.dtype != vb.dtype:
                return None  # integer arithmetic wraps and truncates: not worth following
            try:
                size = int(np.prod(np.broadcast_shapes(va.shape, vb.shape), dtype=np.int64))
            except ValueError:
                return None
            if size > max(va.size, vb.size):  # a scale applied to a weight, never an outer product
                return None
            with np.errstate(all="ignore"):
                values = _ARITHMETIC[node.op](a.values, b.values)
            return Param(np.asarray(values, dtype=np.asarray(a.values).dtype), (node, *a.chain), a.storage)
        return None

    def _rearranged(self, node: gs.Node, x: np.ndarray, depth: int) -> np.ndarray | None:
        """The output of shape op ``node`` on constant ``x``; None when its operands are unknown
        or do not fit (the op is then left to the runtime)."""
        try:
            if node.op == "Transpose":
                perm = node.attrs.get("perm")
                return np.transpose(x, None if perm is None else [int(p) for p in perm])
            if node.op == "Flatten":
                axis = int(node.attrs.get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
                return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
            if node.op == "Reshape":
                shape = self(node.inputs[1], depth + 1) if len(node.inputs) > 1 else None
                if shape is None:
                    return None
                dims = [int(d) for d in np.asarray(shape.values).reshape(-1)]
                if not node.attrs.get("allowzero", 0):
                    dims = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
                return x.reshape(dims)
            axes_in = self(node.inputs[1], depth + 1) if len(node.inputs) > 1 and node.inputs[1].name else None
            if len(node.inputs) > 1 and node.inputs[1].name and axes_in is None:
                return None
            axes = node.attrs.get("axes") if axes_in is None else np.asarray(axes_in.values).reshape(-1)
            if node.op == "Squeeze":
                if axes is None:
                    return np.squeeze(x)
                return np.squeeze(x, axis=tuple(int(a) % x.ndim for a in axes))
            if axes is None:  # Unsqueeze always names its axes
                return None
            out_rank = x.ndim + len(axes)
            return np.expand_dims(x, tuple(sorted(int(a) % out_rank for a in axes)))
        except (ValueError, IndexError, TypeError):
            return None


def is_quantized_chain(param: Param) -> bool:
    """True when a value is computed through QuantizeLinear/DequantizeLinear or FakeQuantize:
    overwriting it with a float constant would take it off the quantized path."""
    return any(n.op in ("QuantizeLinear", "DequantizeLinear") or is_fake_quantize(n.op, n.domain) for n in param.chain)


def _onnx_dtype(to: object) -> np.dtype | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(to)))  # type: ignore[call-overload]
    except (TypeError, ValueError, KeyError):
        return None


def _constant_node_value(node: gs.Node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        v = attrs["value"]
        return np.asarray(v.values) if isinstance(v, gs.Constant) else np.asarray(v)
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    return None
