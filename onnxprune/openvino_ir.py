"""The OpenVINO hand-off: ONNX -> IR (.xml + .bin), checked against onnxruntime.

OpenVINO is imported only when one of these functions runs, so the rest of onnxprune (and
``onnxprune --help``) does not pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from .errors import (
    UnsupportedModel,
    UsageError,
    VerificationFailed,
    backend_import_error,
    openvino_message,
)
from .file_writes import output_target, own_prefix, replace_together, staging_name
from .saving import Outputs, check_output_folder, removing_leftovers

__all__ = [
    "IR_TOLERANCE",
    "IRCheck",
    "IRNoise",
    "convert_for_openvino",
    "convert_to_ir",
    "require_openvino",
    "write_ir",
]

# Max abs diff between IR (OpenVINO CPU, f32 inference) and onnxruntime, relative to each
# output's max abs value: different kernels sum in a different order; FP16 weights round.
# A quantized model (QDQ, or NNCF's FakeQuantize) runs on OpenVINO's int8 path, which rounds at
# other points than onnxruntime's float emulation: every sample moves, measured up to 6% of the
# scale on NNCF's digits MobileNetV2 (median 1-2%; ResNet and the digits CNN up to 2%), so it
# is checked to 15% of the scale ("int8": 2.5x the largest measured). A broken IR (wrong
# weights, channels out of order) moves outputs by their whole scale. A dynamically quantized
# model (quantize_dynamic) keeps the fp32/fp16 tolerance, and where its IR is past it, is
# judged within onnxruntime's own noise on the same inputs (see _within_noise).
IR_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.15}


def require_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:  # not installed, broken, or Ctrl-C while it loaded
        raise backend_import_error("openvino", exc, "openvino is not installed: pip install openvino") from None
    return ov


@dataclass(frozen=True)
class IRCheck:
    """How the IR's outputs compare with onnxruntime's on the same inputs."""

    passed: bool
    precision: str
    tolerance: float
    max_abs_diff: float
    scale: float
    worst_output: str
    ir_inputs: Mapping[str, str] = field(default_factory=dict)  # input name -> the IR's (partial) shape
    quantized: str | None = None  # "QDQ" or "FakeQuantize": checked with the int8 tolerance
    noise: IRNoise | None = None  # a dynamically quantized model judged within onnxruntime's own noise

    def to_dict(self) -> dict:
        return {
            "ir_inputs": dict(self.ir_inputs),
            "quantized": self.quantized,
            "passed": self.passed,
            "precision": self.precision,
            "tolerance": self.tolerance,
            "max_abs_diff": self.max_abs_diff,
            "scale": self.scale,
            "worst_output": self.worst_output,
            "noise": None if self.noise is None else self.noise.to_dict(),
        }


@dataclass(frozen=True)
class IRNoise:
    """A dynamically quantized model's IR check within onnxruntime's own noise (see _check_ir),
    for its worst output: the noise floor, the limit max(tolerance x scale, multiple x floor),
    the elements past tolerance x scale in the IR and in onnxruntime's worst noise run, and the
    margin (the smaller of limit / diff and allowed / past elements)."""

    runtime: str
    multiple: float
    floor: float
    limit: float
    elements: int
    elements_past: int
    noise_elements_past: int
    margin: float

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "multiple": self.multiple,
            "noise_floor": self.floor,
            "limit": self.limit,
            "elements": self.elements,
            "elements_past_tolerance": self.elements_past,
            "noise_elements_past_tolerance": self.noise_elements_past,
            "margin": None if self.margin == float("inf") else self.margin,
        }


def _ov_input_spec(ov: Any, model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    if not input_shapes:
        return None
    return {name: ov.PartialShape(list(shape)) for name, shape in input_shapes.items()}


def _static_shapes(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]],
    check_feeds: Sequence[Mapping[str, np.ndarray]],
    source: str,
) -> dict[str, list[int]]:
    """The shape ``static`` bakes for every input: the given one, else the one the check ran
    at, else the model's with a dynamic batch of 1. A dimension still unknown is a usage error:
    an input left out would stay dynamic in an IR asked to be static."""
    from .shapes import batch_filled, input_dims, shape_text

    inits = {t.name for t in model.graph.initializer}
    fed = {n: np.shape(a) for n, a in (check_feeds[0] if check_feeds else {}).items()}
    known = {**fed, **input_shapes}  # given, else the shape checked
    shapes = {}
    for vi in model.graph.input:
        name = vi.name
        if name in inits:
            continue
        dims = input_dims(vi)
        shape = batch_filled(name, dims, known, source, check_rank=False, check_fixed=False)
        if name not in known and (dims is None or None in shape):
            shown = shape_text(shape) or "d0,d1,..."
            raise UsageError(
                f"{source}: --static needs every dimension of input {name!r} ({shown}); give --input-shape {name}:..."
            )
        shapes[name] = [int(d) for d in shape]  # type: ignore[arg-type]  # None refused above
    return shapes


def convert_to_ir(
    model: onnx.ModelProto,
    xml_path: str | os.PathLike[str],
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    fp16: bool = False,
    check_feeds: Sequence[Mapping[str, np.ndarray]] = (),
    source: str = "<model>",
    static: bool = False,
    tolerance: float | None = None,
    outputs: Outputs | None = None,
) -> IRCheck | None:
    """Convert with OpenVINO's ``convert_model`` and write the IR with ``save_model`` (the .bin
    beside the .xml), after checking the converted model against onnxruntime on ``check_feeds``
    (max abs diff <= ``tolerance`` x each output's scale; default ``IR_TOLERANCE``). The IR keeps
    the model's dynamic dimensions; with ``static`` it is reshaped to ``input_shapes``. Nothing
    is written when the check fails (VerificationFailed). With ``outputs`` (a
    ``saving.Outputs``) the files stay staged there until the caller commits them."""
    ov = require_openvino()
    xml_path = os.fspath(xml_path)
    if not xml_path.endswith(".xml"):
        raise UsageError(f"{xml_path}: the IR path must end in .xml (the .bin is written beside it)")
    check_output_folder(xml_path, "IR")
    if tolerance is not None and not (0.0 < tolerance < 1.0):
        raise UsageError(f"IR tolerance must be in (0, 1), got {tolerance}")
    spec = _ov_input_spec(ov, model, _static_shapes(model, input_shapes or {}, check_feeds, source)) if static else None
    try:
        import io

        # convert_model reads ONNX from a path or a file-like object, not from a ModelProto.
        ov_model = ov.convert_model(io.BytesIO(model.SerializeToString()), input=spec)
    except Exception as exc:  # OpenVINO raises its own types
        raise UnsupportedModel(f"{source}: OpenVINO cannot convert the model: {openvino_message(exc)}") from None
    check = None
    if check_feeds:
        check = _check_ir(ov, ov_model, model, check_feeds, "fp16" if fp16 else "fp32", source, tolerance)
        check = replace(check, ir_inputs={inp.get_any_name(): str(inp.get_partial_shape()) for inp in ov_model.inputs})
    bin_path = xml_path[: -len(".xml")] + ".bin"
    if outputs is not None:
        tmp_xml = outputs.staging_path(xml_path)
        tmp_bin = tmp_xml[: -len(".xml")] + ".bin"
        # The .xml does not name its .bin: OpenVINO reads the .bin of the same name.
        outputs.add(tmp_bin, bin_path)
        outputs.add(tmp_xml, xml_path)
        _save(ov, ov_model, tmp_xml, fp16, xml_path)
        return check
    tmp_xml, tmp_bin = _staging(xml_path)
    with removing_leftovers(tmp_xml, tmp_bin):
        _save(ov, ov_model, tmp_xml, fp16, xml_path)
        # The .bin first, then the .xml: a reader never finds an .xml without its .bin, and a
        # failed .xml move puts the previous .bin back.
        replace_together([(tmp_bin, bin_path), (tmp_xml, xml_path)])
    return check


def _staging(xml_path: str) -> tuple[str, str]:
    """The temporary .xml and .bin an IR for ``xml_path`` is saved to: beside the file it
    replaces (the link's target when it is a symbolic link: one rename on that file system),
    under the hidden name the next run removes if this one is killed (recover_leftovers)."""
    folder = os.path.dirname(os.path.abspath(output_target(xml_path)))
    tmp_xml = staging_name(folder, own_prefix(folder) + "0-", os.path.basename(xml_path))
    return tmp_xml, tmp_xml[: -len(".xml")] + ".bin"


def _save(ov: Any, ov_model: Any, tmp_xml: str, fp16: bool, xml_path: str) -> None:
    """``save_model`` to the staging name; its failures name the user's path."""
    try:
        ov.save_model(ov_model, tmp_xml, compress_to_fp16=fp16)
    except Exception as exc:  # OpenVINO raises RuntimeError for a file it cannot write
        raise UsageError(
            f"{xml_path}: OpenVINO cannot write the IR ({openvino_message(exc, 200)}); nothing written"
        ) from None


# The check computes the IR in f32: no bf16 on CPUs that have it, and no dynamic quantization
# of the activations of layers with int8-compressed weights (Cast -> Mul), which OpenVINO's CPU
# plugin turns on by default (1% of the scale on the corpus's weight-only int8 recogniser).
_F32 = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def _check_ir(
    ov: Any,
    ov_model: Any,
    model: onnx.ModelProto,
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    precision: str,
    source: str,
    tolerance: float | None = None,
) -> IRCheck:
    from .quantized import is_dynamically_quantized, quantization_form
    from .runtime import session
    from .tails import find_tails, with_outputs
    from .verification import SCALE_FLOOR

    core = ov.Core()
    form = quantization_form(model)
    dynamic = form is None and is_dynamically_quantized(model)  # judged within its own noise if need be
    if tolerance is None:
        tolerance = IR_TOLERANCE["int8"] if form is not None else IR_TOLERANCE[precision]
    # Outputs behind decisions (TopK, ArgMax, NMS) reorder on float noise: as in verification,
    # the last continuous tensors before them are compared, and the outputs themselves where
    # both runtimes took the same decisions. The check runs a copy exposing those tensors.
    tails = find_tails(model)
    checked = model
    if tails:
        import io

        checked = with_outputs(model, tails.extra_outputs)
        try:
            ov_model = ov.convert_model(io.BytesIO(checked.SerializeToString()))
        except Exception as exc:  # OpenVINO raises its own types
            raise UnsupportedModel(f"{source}: OpenVINO cannot convert the model: {openvino_message(exc)}") from None
    try:
        if precision == "fp16":
            # Compare what will be deployed: weights stored as FP16.
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                ov.save_model(ov_model, os.path.join(tmp, "m.xml"), compress_to_fp16=True)
                compiled = core.compile_model(core.read_model(os.path.join(tmp, "m.xml")), "CPU", _F32)
        else:
            compiled = core.compile_model(ov_model, "CPU", _F32)
    except Exception as exc:  # OpenVINO raises its own types
        raise UnsupportedModel(f"{source}: OpenVINO cannot compile the IR: {openvino_message(exc)}") from None
    names = [o.name for o in checked.graph.output]
    model_outputs = {o.name for o in model.graph.output}
    decisions = {d for t in tails.tails for d in t.decisions}
    run = session(checked, source=source)
    seen: dict[str, dict[int, tuple[float, float, int, int]]] = {}  # output -> feed -> (diff, scale, past, size)
    references: list[dict[str, np.ndarray]] = []  # a dynamically quantized model's, for its noise runs
    for k, feeds in enumerate(feeds_list):
        ref = run(feeds)
        try:
            got = compiled(dict(feeds))
        except Exception as exc:  # OpenVINO raises its own types
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise UnsupportedModel(
                f"{source}: OpenVINO cannot run the IR on inputs of shapes {shapes}: {openvino_message(exc)}"
            ) from None
        values = {
            name: (np.asarray(got[compiled.outputs[i]]), np.asarray(r)) for i, (name, r) in enumerate(zip(names, ref))
        }
        kept: dict[str, np.ndarray] = {}
        for name, (g, r) in values.items():
            tail = tails.of(name)
            if name in decisions or (tail is not None and any(not np.array_equal(*values[d]) for d in tail.decisions)):
                continue  # a decision, or an output whose decisions differ: its frontier is compared
            g = g.astype(np.float64)
            r64 = r.astype(np.float64)
            if g.shape != r64.shape:
                raise VerificationFailed(
                    f"{source}: IR output {name!r} has shape {g.shape}, onnxruntime {r64.shape}; nothing written"
                )
            d = np.abs(g - r64)
            diff = float(d.max()) if r64.size else 0.0
            scale = float(np.abs(r64).max()) if r64.size else 0.0
            scale = scale if scale > 0 else 1.0
            if name not in model_outputs:  # an inner tensor (a tail's frontier): verification's scale floor
                scale = max(scale, SCALE_FLOOR)
            seen.setdefault(name, {})[k] = (diff, scale, int(np.count_nonzero(d > tolerance * scale)), int(r64.size))
            if tail is None and dynamic:
                kept[name] = r
        if dynamic:
            references.append(kept)
    del run
    plain = all(diff <= tolerance * scale for per in seen.values() for diff, scale, _, _ in per.values())
    if dynamic and not plain:
        return _within_noise(checked, feeds_list, references, seen, precision, tolerance, source)
    worst = (0.0, 1.0, names[0] if names else "")
    for name, per in seen.items():
        for diff, scale, _, _ in per.values():
            if diff / scale > worst[0] / worst[1]:
                worst = (diff, scale, name)
    diff, scale, name = worst
    result = IRCheck(diff <= tolerance * scale, precision, tolerance, diff, scale, name, quantized=form)
    if not result.passed:
        why = f" (a {form} model: OpenVINO's int8 path against onnxruntime's float emulation)" if form else ""
        if not form and precision == "fp16":  # the weights' rounding, not a broken IR: say what keeps or accepts it
            why = " (FP16 weights: FP32 keeps the model's answers; convert --tolerance T accepts a larger difference)"
        raise VerificationFailed(
            f"{source}: the IR's output {name!r} differs from onnxruntime by {diff:.3g}, more than {tolerance:g} x its scale {scale:.3g}{why}; nothing written"
        )
    return result


def _within_noise(
    model: onnx.ModelProto,
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    references: Sequence[Mapping[str, np.ndarray]],
    seen: Mapping[str, Mapping[int, tuple[float, float, int, int]]],
    precision: str,
    tolerance: float,
    source: str,
) -> IRCheck:
    """The IR check of a dynamically quantized model whose IR is past ``tolerance`` x scale: each
    DynamicQuantizeLinear rounds a float that OpenVINO's kernels compute to another last bit
    than onnxruntime's, and one ulp there flips a quantization step that the later layers carry
    on. So the IR is held to onnxruntime's own noise on the same inputs (quantized.dynamic_noise),
    the contract of pruning verification: every output within max(tolerance x scale,
    NOISE_MULTIPLE x its noise floor), and no more elements past tolerance x scale than
    NOISE_MULTIPLE x the most any noise run moved. A wrong IR moves most elements, not the few
    that lie on a step's edge."""
    from .quantized import dynamic_noise
    from .verification import NOISE_MULTIPLE

    noise = dynamic_noise(model, feeds_list, references, lambda name, k: tolerance * seen[name][k][1], source)
    worst: tuple[float, str, IRNoise, float, float] | None = None
    for name, per in seen.items():
        floor = noise.floor.get(name, 0.0)  # 0 for a tail's output: compared as before
        noise_past = noise.past.get(name, 0)
        past = sum(p for _, _, p, _ in per.values())
        elements = sum(n for _, _, _, n in per.values())
        diff, scale = max(((d, s) for d, s, _, _ in per.values()), key=lambda ds: ds[0] / max(ds[1], 1e-30))
        limit = max(tolerance * scale, NOISE_MULTIPLE * floor)
        margins = [limit / diff if diff else float("inf")]
        margins.append(NOISE_MULTIPLE * noise_past / past if past else float("inf"))
        margin = min(margins)
        entry = IRNoise(noise.runtime, NOISE_MULTIPLE, floor, limit, elements, past, noise_past, margin)
        if worst is None or margin < worst[0]:
            worst = (margin, name, entry, diff, scale)
    assert worst is not None  # the plain check failed on some output
    margin, name, entry, diff, scale = worst
    result = IRCheck(margin >= 1.0, precision, tolerance, diff, scale, name, noise=entry)
    if not result.passed:
        raise VerificationFailed(
            f"{source}: the IR's output {name!r} differs from onnxruntime by {diff:.3g} "
            f"({entry.elements_past} of {entry.elements} elements past {tolerance:g} x its scale {scale:.3g}), beyond "
            f"onnxruntime's own noise on the same inputs (a dynamically quantized model: at most {entry.limit:.3g}, "
            f"the larger of {tolerance:g} x scale and {NOISE_MULTIPLE:g} x its noise floor {entry.floor:.3g}, "
            f"and at most {NOISE_MULTIPLE:g} x the {entry.noise_elements_past} elements a noise run moved that far); nothing written"
        )
    return result


def convert_for_openvino(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]], source: str) -> Any:
    """OpenVINO's ``convert_model`` of an in-memory ONNX model, reshaped to ``input_shapes`` if
    given (failures name the file)."""
    ov = require_openvino()
    try:
        import io

        # convert_model reads ONNX from a path or a file-like object, not from a ModelProto.
        return ov.convert_model(
            io.BytesIO(model.SerializeToString()), input=_ov_input_spec(ov, model, input_shapes or {})
        )
    except Exception as exc:  # OpenVINO raises its own types
        raise UnsupportedModel(f"{source}: OpenVINO cannot convert the model: {openvino_message(exc)}") from None


def write_ir(ov_model: Any, xml_path: str, *, fp16: bool = False) -> int:
    """``save_model`` into temporary files beside ``xml_path`` (its target), then renamed: never a
    half-written IR. Returns the bytes written (.xml and .bin)."""
    ov = require_openvino()
    check_output_folder(xml_path, "IR")
    bin_path = xml_path[: -len(".xml")] + ".bin"
    tmp_xml, tmp_bin = _staging(xml_path)
    with removing_leftovers(tmp_xml, tmp_bin):
        _save(ov, ov_model, tmp_xml, fp16, xml_path)
        # The .bin first, then the .xml: a reader never finds an .xml without its .bin, and a
        # failed .xml move puts the previous .bin back.
        replace_together([(tmp_bin, bin_path), (tmp_xml, xml_path)])
    return os.path.getsize(xml_path) + os.path.getsize(bin_path)
