"""Inputs for verification: seeded random samples for a model's inputs, samples read from an
.npz and checked against the inputs they feed, and the bound on what a verification run may
compute. Split from verification.py, which compares the models on these inputs."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import onnx

from .errors import InputsNotFound, UnsupportedModel, UsageError

__all__ = ["check_run_size", "load_npz_inputs", "make_inputs"]


_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


# Random verification inputs bigger than this are refused, not allocated: a dim rewritten to
# 2**20 would otherwise ask for terabytes (real inputs, even 4K video frames, stay far below).
_RANDOM_INPUT_LIMIT = 2**30


# The tensors onnxruntime must hold at once to verify, from the static shapes (4 bytes each; a
# tensor lives from the node that makes it to the last node that reads it, in graph order): past
# this the run is refused, not started. A still-valid mutated file whose Tile repeats 2048 x 2048
# times would ask for 4 GiB from an 8x8 input. Summing every tensor instead (none reused) refused
# the corpus's quantized DBNet at its only input size (4.42 GiB summed, far less alive at once).
_RUN_TENSORS_LIMIT = 4 * 2**30


def check_run_size(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int | None, ...]], weights: set[str], source: str
) -> None:
    """Refuse (UnsupportedModel) a verification run whose tensors alive at once would exceed
    _RUN_TENSORS_LIMIT bytes by the static shapes (weights, counted in the model's size, apart)."""

    def size(name: str) -> int:
        shape = shapes.get(name)
        if name in weights or not shape or any(d is None for d in shape):
            return 0
        return 4 * math.prod(shape)

    nodes = model.graph.node
    last_read = {name: i for i, node in enumerate(nodes) for name in node.input if name}
    for out in model.graph.output:  # graph outputs live to the end
        last_read[out.name] = len(nodes)
    live = {vi.name: size(vi.name) for vi in model.graph.input}
    frees: dict[int, list[str]] = {}  # node index -> tensors read for the last time there
    for name, i in last_read.items():
        frees.setdefault(i, []).append(name)
    total = sum(live.values())
    peak, largest = total, (0, "", ())
    for i, node in enumerate(nodes):
        for name in node.output:
            if name and name not in live:
                live[name] = size(name)
                total += live[name]
                largest = max(largest, (live[name], name, tuple(shapes.get(name) or ())))
        peak = max(peak, total)
        for name in [*frees.get(i, ()), *(n for n in node.output if n and n not in last_read)]:
            total -= live.pop(name, 0)
    if peak > _RUN_TENSORS_LIMIT:
        raise UnsupportedModel(
            f"{source}: verification would compute {peak / 2**30:.3g} GiB of tensors (the largest {largest[1]!r} of shape "
            f"{largest[2]}; the limit is {_RUN_TENSORS_LIMIT // 2**30} GiB); give smaller dims with --input-shape, "
            "or prune with --no-verify"
        )


def make_inputs(
    model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]], batch: int | None, seed: int, source: str
) -> dict[str, np.ndarray]:
    """Seeded random inputs. A dynamic batch dimension takes ``batch``; any other dynamic
    dimension must be given in ``input_shapes`` (else UnsupportedModel names every such input)."""
    rng = np.random.default_rng(seed)
    shapes: dict[str, list[int | None]] = {}
    for vi in _graph_inputs(model):
        tt = vi.type.tensor_type
        if _NP_TYPES.get(tt.elem_type) is None:
            raise UnsupportedModel(f"{source}: input {vi.name!r} has a type verification cannot generate")
        if vi.name in input_shapes:
            shapes[vi.name] = list(input_shapes[vi.name])
            if batch is not None and tt.shape.dim and not tt.shape.dim[0].HasField("dim_value"):
                shapes[vi.name][0] = batch
        else:
            shapes[vi.name] = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (batch if i == 0 else None)
                for i, d in enumerate(tt.shape.dim)
            ]
    _refuse_dynamic(shapes, source)
    feeds = {}
    for vi in _graph_inputs(model):
        dtype = _NP_TYPES[vi.type.tensor_type.elem_type]
        shape = shapes[vi.name]
        count = math.prod(shape)
        if count * 8 > _RANDOM_INPUT_LIMIT:  # generated as float64 or int64 first
            raise UnsupportedModel(
                f"{source}: input {vi.name!r} of shape {tuple(shape)} would take {count * 8 / 2**30:.3g} GiB of random data "
                f"to verify (the limit is {_RANDOM_INPUT_LIMIT // 2**30} GiB); give samples with --inputs, "
                "or prune with --no-verify"
            )
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[vi.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds


def _refuse_dynamic(shapes: Mapping[str, list[int | None]], source: str) -> None:
    """UnsupportedModel naming every input with a dynamic dimension at once (one run, not one per
    input: the corpus's Silero VAD has two), each in a form --input-shape takes once its sizes are
    typed in (``x:1,3,d2,d3``; a dynamic batch is the batch verified)."""
    from .shapes import input_shape_hint, shape_text

    missing = {name: shape for name, shape in shapes.items() if None in shape}
    if len(missing) == 1:
        ((name, shape),) = missing.items()
        raise UnsupportedModel(
            f"{source}: input {name!r} dimension {shape.index(None)} is dynamic; give --input-shape "
            f"{input_shape_hint(name, shape, 'to verify at')}"
        )
    if missing:
        names = ", ".join(repr(n) for n in missing)
        flags = " ".join(f"--input-shape {n}:{shape_text(s, 'd{}')}" for n, s in missing.items())
        raise UnsupportedModel(
            f"{source}: inputs {names} have dynamic dimensions; give {flags} with each d<i> the size of that "
            "input's dimension i to verify at"
        )


VERIFICATION_INPUTS = "verification"
CALIBRATION_INPUTS = "calibration"


def check_inputs_file(path: str | os.PathLike[str] | None, kind: str = VERIFICATION_INPUTS) -> None:
    """InputsNotFound (one message, the library's and the CLI's) when ``path`` is given and does
    not exist; ``kind``: VERIFICATION_INPUTS (``--inputs``, ``verification_inputs``) or
    CALIBRATION_INPUTS (``--calibration``, ``calibration``)."""
    if path and not os.path.exists(path):
        raise InputsNotFound(os.fspath(path), kind)


def load_npz_inputs(
    path: str, model: onnx.ModelProto, limit: int = 16, source: str | None = None
) -> list[dict[str, np.ndarray]]:
    """Samples from an .npz keyed by input name (first axis = samples), one feed per sample
    (models with a fixed batch of 1 are common); at most ``limit`` samples. Arrays that do not
    fit their input are a UsageError naming the model ``source`` (if given), the input, the
    shape fed and the shape the model takes, and the array."""
    import zipfile

    check_inputs_file(path)
    if os.path.isdir(path):  # said "cannot read inputs ([Errno 21] Is a directory: 'imgs')"
        raise UsageError(
            f"{path}: a folder, but --inputs takes an .npz of arrays keyed by input name; a folder of images can be "
            "--calibration (with --preprocess), which holds out every 4th image to measure the fidelity"
        )
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        # np.load would take it for a pickle and speak of allow_pickle.
        raise UsageError(f"{path}: not an .npz file (a zip of .npy arrays keyed by input name, as numpy.savez writes)")
    try:
        data = np.load(path)
    except Exception as exc:
        raise UsageError(f"{path}: cannot read inputs ({exc})") from None
    inputs = _graph_inputs(model)
    names = [vi.name for vi in inputs]
    missing = [n for n in names if n not in data.files]
    if missing:
        raise UsageError(f"{path}: no array for input(s) {missing}; it has {data.files}")
    arrays = {}
    for vi in inputs:
        try:
            array = np.asarray(data[vi.name])
        except Exception as exc:  # numpy raises ValueError for pickled objects, zipfile errors for damage
            raise UsageError(f"{path}: cannot read array {vi.name!r} ({' '.join(str(exc).split())[:200]})") from None
        arrays[vi.name] = _checked_array(path, vi, array, source)
    n = min(len(a) for a in arrays.values())
    # An array one rank above its input holds whole samples (a scalar sample rate as [N], a
    # recurrent state [2, B, 128] as [N, 2, B, 128]); otherwise each sample is fed as a batch of 1.
    stacked = {
        vi.name
        for vi in inputs
        if vi.type.tensor_type.HasField("shape") and arrays[vi.name].ndim == len(vi.type.tensor_type.shape.dim) + 1
    }
    return [
        {k: (np.asarray(a[i]) if k in stacked else a[i : i + 1]) for k, a in arrays.items()}
        for i in range(min(n, limit))
    ]


def _checked_array(path: str, vi: onnx.ValueInfoProto, array: np.ndarray, source: str | None) -> np.ndarray:
    """``array`` (samples first) checked against input ``vi``: rank and static dimensions of one
    sample, and a type onnxruntime takes. Floats of another width are cast to the input's
    (numpy makes float64 by default); anything else that does not fit is a UsageError in the
    words of runtime's check (input, shape fed, shape taken) plus the array it came from."""
    tt = vi.type.tensor_type
    want = _NP_TYPES.get(tt.elem_type)
    name = vi.name
    where = f"{source}: the inputs do not fit the model" if source else f"{path}: the inputs do not fit the model"
    origin = f"array {name!r} of {path} has shape {tuple(array.shape)}, samples along its first axis"
    if array.ndim == 0:
        raise UsageError(f"{where}: input {name!r} is a scalar in {path}; give samples along the first axis")
    if array.shape[0] == 0:  # was an internal error ('cannot reshape array of size 0'), exit 3
        raise UsageError(
            f"{path}: array {name!r} has no samples (shape {tuple(array.shape)}); give at least one along its first axis"
        )
    if want is not None and array.dtype != want:
        if np.issubdtype(array.dtype, np.floating) and np.issubdtype(want, np.floating):
            array = array.astype(want)
        elif np.issubdtype(array.dtype, np.integer) and np.issubdtype(want, np.integer):
            array = array.astype(want)
        else:
            kind = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
            raise UsageError(f"{where}: input {name!r} is {array.dtype}, the model takes {kind} ({origin})")
    if tt.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        # one sample, fed with a batch of 1; or whole samples stacked along a new first axis
        sample = list(array.shape[1:]) if array.ndim == len(dims) + 1 else [1, *array.shape[1:]]
        takes = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
        bad = len(sample) != len(dims) or any(d is not None and d != g for d, g in zip(dims, sample))
        if bad:
            hint = ""
            fixed = [d for d in dims[1:] if d is not None]
            if len(sample) == len(dims) and len(fixed) == len(dims) - 1 and sorted(fixed) == sorted(sample[1:]):
                hint = "; the same sizes in another order: NHWC data for an NCHW input, or the other way round?"
            elif len(sample) == len(dims) and dims[0] not in (None, 1) and dims[0] != sample[0]:
                hint = f"; the model's batch is fixed to {dims[0]}, samples are fed one at a time"
            elif array.ndim == len(dims) - 1 and all(d is None or d == g for d, g in zip(dims[1:], array.shape)):
                hint = f"; one sample without the samples axis? give it one: {name}[None], of shape {(1, *array.shape)}"
            raise UsageError(f"{where}: input {name!r} has shape {sample}, the model takes {takes} ({origin}{hint})")
    if np.issubdtype(array.dtype, np.floating):
        # NaN equals nothing: verification and fidelity would compare NaN with NaN and pass.
        finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
        if not finite.all():
            bad_samples = np.flatnonzero(~finite)
            raise UsageError(
                f"{path}: array {name!r} holds NaN or infinite values in {len(bad_samples)} of its {len(array)} samples "
                f"(the first: sample {bad_samples[0]}); inputs must be finite"
            )
    return np.asarray(array)
