"""OpenVINO's own filter-pruning pass, run for comparison (``prune --compare-openvino`` and
tools/bench_zoo.py): ``openvino._offline_transformations.apply_pruning_transformation`` on a model
converted with ``openvino.convert_model`` (dynamic input dimensions set to 1), with channels,
MACs and exactness measured the same way for both tools.

Counted "source layers": Convolution, GroupConvolution, ConvolutionBackpropData,
GroupConvolutionBackpropData and MatMul whose second input is a constant (possibly behind
Convert/Reshape/Transpose). Channels = output channels (dim 1 for convs, last dim for MatMul).
MACs of a conv = prod(output shape) * Cin/groups * kh * kw; of a MatMul = prod(output) * K.
Exactness: original and pruned compiled on CPU with f32 inference precision, same seeded random
input, ``max_abs_diff <= 1e-5 * max|original output|`` over all outputs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .openvino_ir import require_openvino

__all__ = ["compare_outputs", "layer_stats", "run_openvino_pruning", "static_inputs"]

CONV_TYPES = {
    "Convolution",
    "GroupConvolution",
    "ConvolutionBackpropData",
    "GroupConvolutionBackpropData",
}
_PASS_THROUGH = {"Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Multiply", "Subtract"}


def _is_const(node: Any, depth: int = 0) -> bool:
    """True when ``node`` is a Constant, possibly behind a few shape/decompression ops."""
    t = node.get_type_name()
    if t == "Constant":
        return True
    if t in _PASS_THROUGH and depth < 4:
        return all(_is_const(node.input_value(i).get_node(), depth + 1) for i in range(node.get_input_size()))
    return False


def _shape(out: Any) -> list[int] | None:
    ps = out.get_partial_shape()
    return None if ps.is_dynamic else [int(d) for d in ps.to_shape()]


def layer_stats(model: Any) -> dict[str, Any]:
    """Channels and MACs of the source layers of an OpenVINO model."""
    layers: dict[str, dict[str, Any]] = {}
    macs = 0
    dynamic = 0
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t not in CONV_TYPES and t != "MatMul":
            continue
        if t == "MatMul" and not _is_const(op.input_value(1).get_node()):
            continue  # activation x activation MatMul, not a weight layer
        out = _shape(op.output(0))
        w = _shape(op.input_value(1))
        x = _shape(op.input_value(0))
        if out is None or w is None or x is None:
            dynamic += 1
            continue
        n_out = int(np.prod(out))
        if t == "Convolution":
            ch, m = out[1], n_out * int(np.prod(w[1:]))
        elif t == "GroupConvolution":
            ch, m = out[1], n_out * int(np.prod(w[2:]))
        elif t == "ConvolutionBackpropData":  # w: [Cin, Cout, k...]
            ch, m = out[1], int(np.prod(x)) * int(np.prod(w[1:]))
        elif t == "GroupConvolutionBackpropData":  # w: [G, Cin/G, Cout/G, k...]
            ch, m = out[1], int(np.prod(x)) * int(np.prod(w[2:]))
        else:  # MatMul
            ta = bool(op.get_attributes().get("transpose_a", False))
            k = x[-2] if (ta and len(x) > 1) else x[-1]
            ch, m = out[-1], n_out * k
        layers[op.get_friendly_name()] = {"type": t, "channels": ch, "macs": m}
        macs += m
    conv = [v for v in layers.values() if v["type"] in CONV_TYPES]
    return {
        "channels_total": sum(v["channels"] for v in layers.values()),
        "conv_channels_total": sum(v["channels"] for v in conv),
        "macs": macs,
        "conv_macs": sum(v["macs"] for v in conv),
        "num_layers": len(layers),
        "num_dynamic_layers": dynamic,
        "layers": layers,
    }


def static_inputs(
    model: Any, batch: int = 1, shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, list[int]]:
    """Reshape the inputs named in ``shapes`` to those shapes and other dynamic input dims to
    ``batch`` (in place); return the static input shapes."""
    ov = require_openvino()
    new: dict[Any, Any] = {}
    shapes = shapes or {}
    for inp in model.inputs:
        ps = inp.get_partial_shape()
        given = next((shapes[n] for n in inp.get_names() if n in shapes), None)
        if given is not None:
            new[inp] = ov.PartialShape([int(d) for d in given])
        elif ps.is_dynamic:
            dims = [int(d.get_length()) if d.is_static else batch for d in ps]
            new[inp] = ov.PartialShape(dims)
    if new:
        model.reshape(new)
    return {inp.get_any_name(): [int(d) for d in inp.get_shape()] for inp in model.inputs}


def _np_type(element_type: Any) -> type:
    name = str(element_type)
    return {
        "f32": np.float32,
        "f16": np.float16,
        "f64": np.float64,
        "i64": np.int64,
        "i32": np.int32,
        "u8": np.uint8,
        "boolean": np.bool_,
    }.get(name, np.float32)


def _random_inputs(model: Any, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in model.inputs:
        dt = _np_type(inp.get_element_type())
        shape = [int(d) for d in inp.get_shape()]
        if np.issubdtype(dt, np.floating):
            feeds[inp.get_any_name()] = rng.standard_normal(shape).astype(dt)
        else:
            feeds[inp.get_any_name()] = np.zeros(shape, dtype=dt)
    return feeds


def _infer(core: Any, model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(feeds)
    return [np.asarray(res[o]) for o in compiled.outputs]


def compare_outputs(ref: list[np.ndarray], got: list[np.ndarray], rtol: float = 1e-5) -> dict[str, Any]:
    """Worst-output comparison: ``max_abs_diff <= rtol * scale`` for every output."""
    if len(ref) != len(got):
        return {"exact": False, "error": f"{len(ref)} outputs before, {len(got)} after"}
    per: list[dict[str, Any]] = []
    for i, (a, b) in enumerate(zip(ref, got)):
        if a.shape != b.shape:
            return {"exact": False, "worst_output": i, "error": f"output {i} shape {list(a.shape)} -> {list(b.shape)}"}
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = float(np.abs(a64 - b64).max()) if a.size else 0.0
        if not np.isfinite(diff) or not np.isfinite(b64).all():
            diff = float("inf")
        scale = float(np.abs(a64).max()) if a.size else 0.0
        scale = scale if scale > 0 else 1.0
        per.append({"exact": diff <= rtol * scale, "max_abs_diff": diff, "scale": scale, "worst_output": i})
    if not per:
        return {"exact": True, "max_abs_diff": 0.0, "scale": 1.0, "worst_output": None}
    worst = max(per, key=lambda r: r["max_abs_diff"] / r["scale"])
    return {**worst, "exact": all(r["exact"] for r in per)}


def run_openvino_pruning(
    path: str, seed: int = 0, check: bool = True, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, Any]:
    """Convert ``path`` with OpenVINO (inputs reshaped to ``input_shapes``, other dynamic
    dimensions to 1), apply its pruning pass, measure channels/MACs/exactness.

    Never raises for failures of OpenVINO (conversion, reshape, the pass): they are recorded
    under ``error`` with ``error_stage``.
    """
    ov = require_openvino()
    from openvino._offline_transformations import apply_pruning_transformation

    result: dict[str, Any] = {"model": path, "openvino": ov.__version__, "error": None}
    core = ov.Core()
    t0 = time.perf_counter()
    try:
        model = ov.convert_model(path)
        result["input_shapes"] = static_inputs(model, shapes=input_shapes)
    except Exception as e:  # OpenVINO raises its own types (e.g. a dimension that cannot be 1)
        result["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        result["error_stage"] = "convert"
        return result
    result["convert_seconds"] = round(time.perf_counter() - t0, 3)
    before = layer_stats(model)
    original = model.clone()

    t0 = time.perf_counter()
    try:
        apply_pruning_transformation(model)
    except Exception as e:  # the pass raises on some graphs (e.g. DenseNet's Concat masks)
        result["error"] = f"{type(e).__name__}: {e}".strip()
        result["error_stage"] = "pass"
        result["pass_seconds"] = round(time.perf_counter() - t0, 3)
        result.update(_summary(before, None))
        return result
    result["pass_seconds"] = round(time.perf_counter() - t0, 3)
    try:
        model.validate_nodes_and_infer_types()
        after = layer_stats(model)
    except Exception as e:
        result["error"] = f"invalid model after pass: {type(e).__name__}: {e}".strip()
        result["error_stage"] = "validate"
        result.update(_summary(before, None))
        return result
    result.update(_summary(before, after))

    if check:
        feeds = _random_inputs(original, seed)
        try:
            ref = _infer(core, original, feeds)
        except Exception as e:
            result["verification"] = {"exact": None, "error": f"original model: {type(e).__name__}: {e}".strip()}
            return result
        try:
            got = _infer(core, model, feeds)
        except Exception as e:  # e.g. ShuffleNet: the pass leaves a stale Reshape target shape
            msg = f"{type(e).__name__}: {e}".strip()
            result["error"] = f"pruned model fails to compile/run: {msg}"
            result["error_stage"] = "compile"
            result["verification"] = {"exact": False, "error": msg}
            return result
        result["verification"] = compare_outputs(ref, got)
    return result


def _summary(before: dict[str, Any], after: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "channels_total": before["channels_total"],
        "conv_channels_total": before["conv_channels_total"],
        "macs_before": before["macs"],
        "conv_macs_before": before["conv_macs"],
        "num_layers": before["num_layers"],
    }
    if after is None:
        out.update(
            channels_removed=None,
            conv_channels_removed=None,
            macs_after=None,
            conv_macs_after=None,
            layers_changed=None,
        )
        return out
    changed = {}
    for name, rec in before["layers"].items():
        new = after["layers"].get(name)
        if new is None or new["channels"] != rec["channels"]:
            changed[name] = [rec["channels"], None if new is None else new["channels"]]
    out.update(
        channels_removed=before["channels_total"] - after["channels_total"],
        conv_channels_removed=before["conv_channels_total"] - after["conv_channels_total"],
        macs_after=after["macs"],
        conv_macs_after=after["conv_macs"],
        layers_changed=changed,
    )
    return out
