"""Static tensor shapes for the analysis: input shapes (dynamic batch, --input-shape) and
onnx shape inference over a light stand-in of the model (big weights not copied)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import UnsupportedModel, UsageError, first_line
from .fake_quantize import is_fake_quantize

__all__ = [
    "Shape",
    "batch_filled",
    "check_input_names",
    "concrete_input_shapes",
    "data_input_shapes",
    "dynamic_batch_inputs",
    "infer_static_shapes",
    "input_dims",
    "shape_text",
    "without_big_initializers",
]

Shape = tuple[int | None, ...]


def input_dims(value_info: onnx.ValueInfoProto) -> Shape | None:
    """A graph input's dimensions, None where dynamic (symbolic, 0 or absent); None for an
    unknown rank (no shape, or not a tensor)."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.tensor_type.shape.dim)


_dims = input_dims


def batch_filled(
    name: str,
    dims: Sequence[object] | None,
    given: Mapping[str, Sequence[int]],
    source: str,
    *,
    batch: int = 1,
    check_rank: bool = True,
    check_fixed: bool = True,
) -> Shape:
    """The shape input ``name`` is analysed, checked, converted or timed at: one rule for every
    command. The user's shape (``given``: --input-shape, or what the caller takes for it),
    else the model's ``dims`` with a dynamic batch (the first dimension) set to ``batch``;
    any other dynamic dimension stays None, for the caller to refuse in its own words (what it
    needs the size for) or to leave unknown. ``dims``: an int > 0 is known, anything else
    (None, 0, -1, a symbolic name) dynamic; None for an unknown rank (then ``()``). A given
    shape must have the input's rank (``check_rank``) and its fixed dimensions (``check_fixed``)."""
    if name in given:
        shape = tuple(int(d) for d in given[name])
        if dims is not None and check_rank and len(dims) != len(shape):
            raise UsageError(
                f"{source}: --input-shape {name}: rank {len(shape)} but the model's input has rank {len(dims)}"
            )
        if dims is not None and check_fixed:
            for i, (have, want) in enumerate(zip(dims, shape)):
                if isinstance(have, int) and have > 0 and have != want:
                    raise UsageError(
                        f"{source}: --input-shape {name}: dimension {i} is fixed to {have} in the model, not {want}"
                    )
        return shape
    if dims is None:
        return ()
    known = [d if isinstance(d, int) and d > 0 else None for d in dims]
    return tuple(batch if i == 0 and d is None else d for i, d in enumerate(known))


def shape_text(shape: Sequence[int | None], dynamic: str = "?") -> str:
    """``shape`` as --input-shape takes it, each unknown dimension j written ``dynamic.format(j)``
    (``?``, or ``d{}``: d2 for the dimension to choose)."""
    return ",".join(dynamic.format(j) if d is None else str(d) for j, d in enumerate(shape))


def input_shape_hint(name: str, shape: Sequence[int | None], purpose: str) -> str:
    """The ``--input-shape`` to give for input ``name`` whose ``shape`` has unknown dimensions,
    in a form that can be typed once its named sizes are chosen (a ``?`` cannot: it is refused):
    ``x:1,3,d2,d3 with d2, d3 the sizes to time``."""
    free = [f"d{j}" for j, d in enumerate(shape) if d is None]
    sizes = "sizes" if len(free) > 1 else "size"
    return f"{name}:{shape_text(shape, 'd{}')} with {', '.join(free)} the {sizes} {purpose}"


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


def check_input_names(source: str, named: Iterable[str], inputs: Iterable[str]) -> None:
    """Refuse an --input-shape naming no input of the model (every command: never ignored)."""
    names = sorted(inputs)
    for name in named:
        if name not in names:
            raise UsageError(f"{source}: --input-shape names {name!r}, but the model's inputs are {names}")


def concrete_input_shapes(
    model: onnx.ModelProto, overrides: Mapping[str, tuple[int, ...]], source: str, batch: int = 1
) -> dict[str, Shape]:
    """Input shapes for analysis: the user's --input-shape, a dynamic batch set to ``batch``,
    other dynamic dimensions left unknown (None)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    check_input_names(source, overrides, inputs)
    return {name: batch_filled(name, _dims(vi), overrides, source, batch=batch) for name, vi in inputs.items()}


def data_input_shapes(
    model: onnx.ModelProto, paths: Sequence[str | None], given: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """``given`` (the user's --input-shape) plus, for every other input with a dynamic
    dimension, the shape of one sample of its array in the first .npz of ``paths`` that has
    it (samples along the first axis; a scalar input's array is [N]). Arrays whose sample does
    not fit the input's rank or fixed dimensions are skipped: the step that reads the data
    says why, in its words. Only array headers are read."""
    shapes = dict(given)
    inits = {i.name for i in model.graph.initializer}
    for path in paths:
        if not path or not str(path).lower().endswith(".npz"):
            continue
        try:
            with np.load(path) as data:
                found = {k: tuple(int(d) for d in data[k].shape) for k in data.files}
        except Exception:
            continue
        for vi in model.graph.input:
            if vi.name in inits or vi.name in shapes or vi.name not in found:
                continue
            dims = _dims(vi)
            if dims is None or all(d is not None for d in dims) or not found[vi.name]:
                continue
            array = found[vi.name]
            sample = (
                (1, *array[1:]) if len(array) == len(dims) else (array[1:] if len(array) == len(dims) + 1 else None)
            )
            if sample is None or any(d is not None and d != s for d, s in zip(dims, sample)):
                continue
            shapes[vi.name] = tuple(sample)
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
    m = without_big_initializers(model)
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
    for node in m.graph.node:
        if is_fake_quantize(node.op_type, node.domain):
            # onnx's inference skips other domains; FakeQuantize broadcasts its five inputs
            # element-wise to one float tensor, as Sum does.
            node.op_type, node.domain = "Sum", ""
            del node.attribute[:]
    del m.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise UnsupportedModel(f"shape inference failed: {first_line(exc)}") from None
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


def without_big_initializers(model: onnx.ModelProto, keep_metadata: bool = False) -> onnx.ModelProto:
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
        or any(
            len(getattr(t, f))
            for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")
        )
        or (len(t.dims) > 0 and int(np.prod(t.dims)) == 0)
    )
