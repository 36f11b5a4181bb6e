"""Verification with onnxruntime: original and pruned model on the same inputs, every output
compared, graph optimisations off so that the graph itself is what is checked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from .errors import UnsupportedModel, UsageError
from .fidelity import OutputFidelity, fidelity, fidelity_from_outputs
from .masking import masked_reference
from .runtime import paired_outputs, run_model, session

__all__ = [
    "OutputComparison",
    "VerificationResult",
    "OutputFidelity",
    "make_inputs",
    "session",
    "run_model",
    "paired_outputs",
    "compare_models",
    "masked_reference",
    "fidelity",
    "fidelity_from_outputs",
]


@dataclass(frozen=True)
class OutputComparison:
    name: str
    batch: int
    max_abs_diff: float
    mean_abs_diff: float
    scale: float

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.scale

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "batch": self.batch,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "scale": self.scale,
        }


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of comparing two models: passed when every output's max abs diff is at most
    ``tolerance`` times that output's scale (its max abs value in the reference, or 1 if 0)."""

    passed: bool
    tolerance: float
    outputs: tuple[OutputComparison, ...]
    inputs: str  # where the inputs came from

    @property
    def worst(self) -> OutputComparison:
        return max(self.outputs, key=lambda o: o.relative)

    def to_dict(self) -> dict:
        w = self.worst
        return {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "max_abs_diff": w.max_abs_diff,
            "scale": w.scale,
            "worst_output": w.name,
            "inputs": self.inputs,
            "outputs": [o.to_dict() for o in self.outputs],
        }


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


def make_inputs(
    model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]], batch: int | None, seed: int, source: str
) -> dict[str, np.ndarray]:
    """Seeded random inputs. A dynamic batch dimension takes ``batch``; any other dynamic
    dimension must be given in ``input_shapes`` (else UnsupportedModel names the input)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in _graph_inputs(model):
        tt = vi.type.tensor_type
        dtype = _NP_TYPES.get(tt.elem_type)
        if dtype is None:
            raise UnsupportedModel(f"{source}: input {vi.name!r} has a type verification cannot generate")
        if vi.name in input_shapes:
            shape = list(input_shapes[vi.name])
            if batch is not None and tt.shape.dim and not tt.shape.dim[0].HasField("dim_value"):
                shape[0] = batch
        else:
            shape = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(d.dim_value)
                elif i == 0 and batch is not None:
                    shape.append(batch)
                else:
                    raise UnsupportedModel(
                        f"{source}: input {vi.name!r} dimension {i} is dynamic; give --input-shape {vi.name}:d0,d1,... to verify"
                    )
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


def load_npz_inputs(path: str, model: onnx.ModelProto, limit: int = 16, source: str | None = None) -> list[dict[str, np.ndarray]]:
    """Samples from an .npz keyed by input name (first axis = samples), one feed per sample
    (models with a fixed batch of 1 are common); at most ``limit`` samples. Arrays that do not
    fit their input are a UsageError naming the model ``source`` (if given), the input, the
    shape fed and the shape the model takes, and the array."""
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
    return [{k: a[i : i + 1] for k, a in arrays.items()} for i in range(min(n, limit))]


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
        sample = [1, *array.shape[1:]]  # one sample, fed with a batch of 1
        takes = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
        bad = len(sample) != len(dims) or any(d is not None and d != g for d, g in zip(dims, sample))
        if bad:
            hint = ""
            fixed = [d for d in dims[1:] if d is not None]
            if len(sample) == len(dims) and len(fixed) == len(dims) - 1 and sorted(fixed) == sorted(sample[1:]):
                hint = "; the same sizes in another order: NHWC data for an NCHW input, or the other way round?"
            elif len(sample) == len(dims) and dims[0] not in (None, 1) and dims[0] != sample[0]:
                hint = f"; the model's batch is fixed to {dims[0]}, samples are fed one at a time"
            raise UsageError(f"{where}: input {name!r} has shape {sample}, the model takes {takes} ({origin}{hint})")
    return np.asarray(array)


def compare_models(
    reference: onnx.ModelProto | str,
    candidate: onnx.ModelProto | str,
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    tolerance: float,
    inputs_desc: str,
    source: str = "<model>",
    progress: Callable[[int, int], None] | None = None,
) -> VerificationResult:
    """Run both models (in memory, or the paths of saved ones) on every feed and compare every
    output."""
    results: dict[tuple[str, int], list] = {}
    run_ref = session(reference, source=source)
    run_cand = session(candidate, source=source, pruned=True)
    names = run_ref.output_names
    for k, feeds in enumerate(feeds_list):
        if progress:
            progress(k, len(feeds_list))
        batch = next(iter(feeds.values())).shape[0] if feeds and next(iter(feeds.values())).ndim else 1
        ref, got = run_ref(feeds), run_cand(feeds)
        for name, r, g in zip(names, ref, got):
            r64, g64 = np.asarray(r, dtype=np.float64), np.asarray(g, dtype=np.float64)
            if r64.shape != g64.shape:
                results[(name, batch)] = [np.inf, np.inf, 1.0]
                continue
            diff = np.abs(r64 - g64)
            scale = float(np.max(np.abs(r64))) if r64.size else 0.0
            entry = results.setdefault((name, batch), [0.0, 0.0, 0.0])
            entry[0] = max(entry[0], float(diff.max()) if diff.size else 0.0)
            entry[1] = max(entry[1], float(diff.mean()) if diff.size else 0.0)
            entry[2] = max(entry[2], scale)
    if progress:
        progress(len(feeds_list), len(feeds_list))
    outs = tuple(
        OutputComparison(name, batch, v[0], v[1], v[2] if v[2] > 0 else 1.0) for (name, batch), v in results.items()
    )
    passed = all(o.max_abs_diff <= tolerance * o.scale for o in outs)
    return VerificationResult(passed=passed, tolerance=tolerance, outputs=outs, inputs=inputs_desc)
