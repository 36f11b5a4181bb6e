"""Post-training int8 quantization with NNCF, verified on held-out samples.

``quantize`` calibrates NNCF's quantizer (``nncf.quantize``; with ``max_drop``,
``nncf.quantize_with_accuracy_control``) on the calibration samples and measures the int8 model
against the float model it came from (and against the original before pruning, when given) on
samples it never saw: the user's ``evaluation_inputs``, or every 4th calibration sample held
out. QDQ ONNX output uses NNCF's ONNX backend and is measured with onnxruntime's integer
kernels; OpenVINO IR output is converted with ``convert_model`` first, quantized by NNCF's
OpenVINO backend and measured with OpenVINO (int8 kernels, f32 elsewhere).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from .errors import UnsupportedModel, UsageError
from .quant_report import AccuracyControl, FidelityAgainst, QuantizeReport
from .quantize_config import QUANTIZE_FORMATS, QuantizeConfig
from .stages.prepare import metric_errors_named

if TYPE_CHECKING:
    from .saving import Outputs

__all__ = [
    "MIN_CALIBRATION_SAMPLES",
    "STABLE_CALIBRATION_SAMPLES",
    "QuantizeResult",
    "output_format",
    "quantize",
]

# Below this many calibration samples the activation ranges are a handful of draws: refused.
MIN_CALIBRATION_SAMPLES = 16
# NNCF's default subset size: what its docs call enough for stable activation statistics.
STABLE_CALIBRATION_SAMPLES = 300
_QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
    "QGemm",
    "FakeQuantize",  # OpenVINO's (org.openvinotoolkit), NNCF's default int8 export
}
_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantizeResult:
    """An int8 model (an ``onnx.ModelProto`` in QDQ form, or an ``openvino.Model`` for the IR
    format) and its report."""

    report: QuantizeReport
    format: str
    model: Any = field(repr=False)
    path: str | None = None  # where the model was written (a staging path until ``outputs.commit()``)

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the model (``.onnx`` for the onnx format, ``.xml`` + ``.bin`` for ir)
        atomically; returns the bytes written."""
        return _write(self.model, os.fspath(path), self.format)


def output_format(output: str | os.PathLike[str] | None, format: str | None = None) -> str:
    """``onnx`` (QDQ) or ``ir``: given, or from the output's extension (.onnx / .xml)."""
    if format is not None:
        if format not in QUANTIZE_FORMATS:
            raise UsageError(f"quantization format must be one of {', '.join(QUANTIZE_FORMATS)}, got {format!r}")
        want = {"onnx": ".onnx", "ir": ".xml"}[format]
        if output is not None and not os.fspath(output).endswith(want):
            raise UsageError(f"{os.fspath(output)}: the {format} format is written to a {want} file")
        return format
    if output is None:
        return "onnx"
    out = os.fspath(output)
    if out.endswith(".onnx"):
        return "onnx"
    if out.endswith(".xml"):
        return "ir"
    raise UsageError(f"{out}: the int8 model is written as .onnx (QDQ) or .xml (OpenVINO IR, .bin beside it)")


@metric_errors_named
def quantize(
    model: onnx.ModelProto | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    calibration: str | os.PathLike[str] | None = None,
    config: QuantizeConfig | None = None,
    reference: onnx.ModelProto | str | os.PathLike[str] | None = None,
    format: str | None = None,
    source: str | None = None,
    outputs: Outputs | None = None,
    **options: object,
) -> QuantizeResult:
    """Quantize ``model`` (a path or a ModelProto, never modified) to int8 with NNCF.

    Options are the fields of QuantizeConfig, given as ``config`` or keywords. ``output``
    (``.onnx`` or ``.xml``) is written only once the int8 model has run on the held-out samples;
    ``format`` ("onnx" or "ir") chooses the kind without writing. ``reference`` is the model
    before pruning: its answers are compared too. ``source`` names an in-memory model in
    messages. With ``outputs`` (a ``saving.Outputs``) the files stay staged there until the
    caller commits them, with the run's other outputs. Raises UsageError (calibration missing, too small or not fitting the model, an
    ignored scope that selects nothing), UnsupportedModel (already quantized, nothing to
    quantize, NNCF fails), LoadError (onnxruntime cannot run the model)."""
    from .loading import load_model
    from .quant_scope import (
        onnx_float_nodes,
        openvino_float_ops,
        openvino_names,
        resolve_ignored_scope,
    )
    from .runtime import session

    if calibration is not None:
        options["calibration"] = os.fspath(calibration)
    config = (config or QuantizeConfig()).with_options(**options)
    if not config.calibration:
        raise UsageError("int8 quantization needs calibration inputs (--calibration C.npz or a folder of images)")
    fmt = output_format(output, format)
    if output is not None:
        _check_output(os.fspath(output), model)
    from .user_validation import check_spec

    check_spec(config.validate)  # before any work
    proto, loaded_as, size_before, _ = load_model(model)
    source = source or loaded_as
    if size_before is None:
        size_before = proto.ByteSize()
    _check_quantizable(proto, source)
    from .shapes import concrete_input_shapes

    concrete_input_shapes(proto, dict(config.input_shapes), source)  # each names an input, of its rank
    from .stages.prepare import check_metric_outputs

    check_metric_outputs(proto, config.fidelity_metrics, source)
    cal, held, evaluation, notes = _samples(proto, config, source)

    run_float = session(proto, source=source)  # also refuses a model onnxruntime cannot run
    names = run_float.output_names
    from .fidelity import output_batch_axes

    axes = output_batch_axes(proto)  # sequence-first outputs: their samples' axis
    float_outs = [run_float(f) for f in held]
    ignored = resolve_ignored_scope(proto, config.ignored_scope, source)

    validation = None
    caller = None
    if config.validate is not None:
        from .nncf_backend import Validation
        from .user_validation import FunctionCaller, MaxDrop, resolve_function

        caller = FunctionCaller(*resolve_function(config.validate))
        drop = config.max_drop
        assert isinstance(drop, MaxDrop)  # QuantizeConfig parses it with a validation function
        validation = Validation(
            (),
            None,
            drop.value / 100.0 if drop.relative else drop.value,
            judge=lambda candidate: caller.any_model(candidate, "an int8 candidate of NNCF's accuracy control"),
            relative=drop.relative,
        )
    elif config.max_drop is not None:
        from .nncf_backend import Validation

        # Accuracy control decides on the calibration samples: the held-out ones stay unseen by
        # every decision, so the report's figure on them is not the one that was tuned.
        checked = cal[: config.subset_size]
        float_cal = [run_float(f) for f in checked]
        validation = Validation(
            checked,
            lambda outs, idx: _score(names, [float_cal[i] for i in idx], outs, config, axes)[0],
            config.max_drop,
        )
    from .nncf_backend import nncf_quantize

    common = {
        "preset": config.preset,
        "subset_size": config.subset_size,
        "fast_bias_correction": config.fast_bias_correction,
        "validation": validation,
        "source": source,
    }
    folded: tuple[str, ...] = ()
    if fmt == "onnx":
        # NNCF's ONNX backend quantizes only weights stored as float initializers and fails on a
        # Cast of an initializer: weights stored as int8 x scale (Cast -> Mul) are folded to
        # float32 in the copy it is handed, and it quantizes them to int8 again. (The OpenVINO
        # backend needs no fold: convert_model keeps them as int8 weights with their scales,
        # which OpenVINO's CPU plugin runs in int8 kernels as they are.)
        from .nncf_backend import fold_cast_weights, per_channel_opset

        handed, folded = fold_cast_weights(proto)
        if folded:
            notes.append(
                f"{len(folded)} weights stored as int8 x scale (Cast -> Mul) were folded to float32 in the copy handed "
                "to NNCF's ONNX backend, which quantized them to int8 again (it quantizes only weights stored as float "
                "initializers); -o OUT.xml keeps the stored int8 weights as they are"
            )
        handed, opset_note = per_channel_opset(handed)
        notes += [opset_note] if opset_note else []
        _constants_as_initializers(handed)  # onnxprune's own copy (load_model copies)
        present = {n.name for n in handed.graph.node}
        target, nncf_scope, backend = handed, [n for n in ignored if n in present], "ONNX"
    else:
        from .openvino_ir import convert_for_openvino

        target = convert_for_openvino(proto, config.input_shapes, source)
        to_ov = openvino_names(proto, target, ignored, source)
        nncf_scope, backend = list(to_ov.values()), "OpenVINO"
    q = nncf_quantize(target, cal, ignored_names=nncf_scope, **common)

    if fmt == "onnx":
        run_int8 = session(q, source=source, what="the int8 model", optimize=True)
        outputs_of = lambda feeds: [run_int8(f) for f in feeds]  # noqa: E731 - one line per backend
        runtime = "onnxruntime CPU, graph optimisations on: QDQ fused into integer kernels"
        quantized, floating = onnx_float_nodes(q)
    else:
        outputs_of = lambda feeds: _openvino_outputs(q, feeds)  # noqa: E731
        runtime = "OpenVINO CPU, int8 kernels, f32 elsewhere"
        quantized, floating = openvino_float_ops(q)
        to_onnx = {v: k for k, v in to_ov.items()}  # the user's names where convert_model renamed a layer
        floating = tuple(to_onnx.get(n, n) for n in floating)
    got = outputs_of(held)
    if not quantized and config.max_drop is not None:
        raise UnsupportedModel(
            f"{source}: --max-drop {config.max_drop} cannot be met with any layer in int8 (accuracy control put every Conv, Gemm "
            f"and MatMul back in float); allow a larger drop; nothing written"
        )
    if not quantized:
        raise UnsupportedModel(
            f"{source}: NNCF quantized no layer (every Conv, Gemm and MatMul stayed float); nothing written"
        )

    fidelity = [_against("float model", names, float_outs, got, config, axes)]
    if reference is not None:
        run_ref = session(
            os.fspath(reference) if isinstance(reference, (str, os.PathLike)) else reference,
            source=source,
            what="the original model",
        )
        fidelity.append(_against("original", names, [run_ref(f) for f in held], got, config, axes))
    control = None
    if caller is not None and validation is not None:
        int8_model = q
        if fmt != "onnx":
            from .openvino_ir import require_openvino

            int8_model = require_openvino().Core().compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        float_value = caller.model(proto, "the float model")
        int8_value = caller.any_model(int8_model, "the int8 model")
        control = AccuracyControl(
            validation.max_drop,
            f"your function {caller.name}",
            float_value,
            int8_value,
            "relative" if validation.relative else "absolute",
            caller.calls,
        )
    elif validation is not None:
        in_sample = _score(names, float_cal, outputs_of(validation.feeds), config, axes)[0]
        control = AccuracyControl(
            config.max_drop,
            f"fidelity vs the float model on the {len(validation.feeds)} calibration samples",
            1.0,
            in_sample,
        )
    written = None
    if output is not None:
        size_after, written = (
            _stage(q, os.fspath(output), fmt, outputs)
            if outputs is not None
            else (_write(q, os.fspath(output), fmt), os.fspath(output))
        )
    else:
        size_after = q.ByteSize() if fmt == "onnx" else None
    report = QuantizeReport(
        model=source,
        output=None if output is None else os.fspath(output),
        format=fmt,
        backend=backend,
        preset=config.preset,
        fast_bias_correction=config.fast_bias_correction,
        subset_size=config.subset_size,
        calibration_samples=min(len(cal), config.subset_size),
        evaluation_samples=len(held),
        evaluation=evaluation,
        quantized_layers=quantized,
        float_layers=floating,
        ignored=ignored,
        runtime=runtime,
        fidelity=tuple(fidelity),
        size_before=size_before,
        size_after=size_after,
        accuracy_control=control,
        notes=tuple(notes),
        folded_weights=folded,
    )
    return QuantizeResult(report=report, format=fmt, model=q, path=written)


def _constants_as_initializers(proto: onnx.ModelProto) -> None:
    """Turn the main graph's Constant nodes that hold a tensor into initializers of the same
    name, in place. NNCF's ONNX backend reads a weight or a bias only from an initializer and
    fails on a Constant node ('There is no tensor with the name ...'), which is how PyTorch's
    TorchScript exporter writes a MatMul's bias and paddle2onnx some conv weights; the model
    computes the same either way."""
    outputs = {o.name for o in proto.graph.output}
    kept = []
    for node in proto.graph.node:
        attrs = list(node.attribute)
        if (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and len(attrs) == 1
            and attrs[0].name == "value"
            and len(node.output) == 1
            and node.output[0] not in outputs
        ):
            tensor = proto.graph.initializer.add()
            tensor.CopyFrom(attrs[0].t)
            tensor.name = node.output[0]
        else:
            kept.append(node)
    if len(kept) < len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(kept)


def _check_output(out: str, model: object) -> None:
    from .saving import check_output_folder

    if isinstance(model, (str, os.PathLike)) and os.path.abspath(out) == os.path.abspath(os.fspath(model)):
        raise UsageError(f"{out}: output must differ from the input model")
    output_format(out)
    check_output_folder(out)


def _check_quantizable(proto: onnx.ModelProto, source: str) -> None:
    """Refuse what NNCF would quantize wrongly or not at all: a model already quantized (it
    would quantize the quantized model again), non-float32 inputs, nothing weight-bearing."""
    for node in proto.graph.node:
        if node.op_type in _QUANTIZED_OPS:
            raise UnsupportedModel(
                f"{source}: node {node.name!r} ({node.op_type}): the model is already quantized; give the float model"
            )
    inits = {i.name for i in proto.graph.initializer}
    for vi in proto.graph.input:
        elem = vi.type.tensor_type.elem_type
        if vi.name not in inits and elem in (
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.BFLOAT16,
        ):
            raise UnsupportedModel(
                f"{source}: input {vi.name!r} is {onnx.TensorProto.DataType.Name(elem).lower()}; NNCF quantizes float32 models"
            )
    if not any(n.op_type in _WEIGHTED for n in proto.graph.node):
        raise UnsupportedModel(
            f"{source}: no Conv, ConvTranspose, Gemm or MatMul: nothing for int8 quantization to quantize"
        )


def _samples(proto: onnx.ModelProto, config: QuantizeConfig, source: str) -> tuple[list, list, str, list[str]]:
    """(calibration feeds, held-out feeds, where the held-out come from, notes). The held-out
    samples are never calibration samples."""
    from .calibration import load_calibration, parse_preprocess, split_calibration
    from .verification_inputs import load_npz_inputs

    pre = parse_preprocess(config.preprocess) if config.preprocess else None
    notes: list[str] = []
    cal_path = os.fspath(config.calibration)
    if config.evaluation_inputs:
        cal = load_calibration(cal_path, proto, pre, limit=config.subset_size, seed=config.seed, model_source=source)
        given = load_npz_inputs(os.fspath(config.evaluation_inputs), proto, limit=100_000, source=source)
        seen = {_key(f) for f in cal}
        held = [f for f in given if _key(f) not in seen]
        if not held:
            raise UsageError(
                f"{config.evaluation_inputs}: every evaluation sample is also a calibration sample; give held-out samples the quantizer never sees"
            )
        if len(held) < len(given):
            notes.append(
                f"{len(given) - len(held)} of the {len(given)} evaluation samples are also calibration samples and were not used for evaluation"
            )
        evaluation = f"{len(held)} held-out samples of {config.evaluation_inputs} (never used to calibrate)"
    else:
        feeds = load_calibration(
            cal_path, proto, pre, limit=math.ceil(config.subset_size * 4 / 3), seed=config.seed, model_source=source
        )
        if len(feeds) < 2:
            raise UsageError(
                f"{cal_path}: {len(feeds)} calibration sample; int8 calibration needs at least {MIN_CALIBRATION_SAMPLES} "
                f"(NNCF's default subset is {STABLE_CALIBRATION_SAMPLES} for stable activation ranges), plus held-out samples to evaluate on"
            )
        cal, held, _ = split_calibration(feeds, None)
        evaluation = f"{len(held)} held-out samples: every 4th sample of {cal_path}, never used to calibrate (give --inputs for your own)"
    if len(cal) < MIN_CALIBRATION_SAMPLES:
        after = "" if config.evaluation_inputs else f" after holding out {len(held)} for evaluation"
        raise UsageError(
            f"{cal_path}: {len(cal)} calibration samples{after}; int8 calibration needs at least {MIN_CALIBRATION_SAMPLES} "
            f"(NNCF's default subset is {STABLE_CALIBRATION_SAMPLES} samples, for stable activation ranges)"
        )
    if len(cal) < min(STABLE_CALIBRATION_SAMPLES, config.subset_size):
        notes.append(
            f"calibrated on {len(cal)} samples: NNCF uses {STABLE_CALIBRATION_SAMPLES} by default for stable activation ranges; give more for a final model"
        )
    return cal, held, evaluation, notes


def _key(feeds: dict) -> tuple:
    return tuple((k, feeds[k].tobytes()) for k in sorted(feeds))


def _per_output(samples: Sequence[Sequence[np.ndarray]], n: int) -> list[list[np.ndarray]]:
    """Per output, its array for every sample (from per sample, its outputs)."""
    return [[np.asarray(s[k]) for s in samples] for k in range(n)]


def _score(
    names: Sequence[str],
    ref: Sequence[Sequence[np.ndarray]],
    got: Sequence[Sequence[np.ndarray]],
    config: QuantizeConfig,
    axes: Mapping[str, int] | None = None,
) -> tuple:
    """(the run's fidelity, per-output scores, per-output figures) from onnxprune.fidelity
    (``axes``: the samples' axis of sequence-first outputs)."""
    from .fidelity import fidelity_from_outputs, run_score

    outputs = fidelity_from_outputs(
        names, _per_output(ref, len(names)), _per_output(got, len(names)), config.fidelity_metrics, batch_axes=axes
    )
    return (*run_score(outputs), outputs)


def _against(
    what: str, names: Sequence[str], ref: list, got: list, config: QuantizeConfig, axes: Mapping[str, int] | None = None
) -> FidelityAgainst:
    score, scores, per_output = _score(names, ref, got, config, axes)
    return FidelityAgainst(what, score, scores, per_output)


def _openvino_outputs(ov_model: Any, feeds: Sequence[dict]) -> list[list[np.ndarray]]:
    """Every sample's outputs from OpenVINO on the CPU at f32 inference precision (int8 where
    the model is quantized): what the IR computes, without bf16's rounding on top."""
    from .openvino_ir import require_openvino

    ov = require_openvino()
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    outs = []
    for f in feeds:
        result = request.infer(dict(f))
        outs.append([np.array(result[compiled.output(i)]) for i in range(len(compiled.outputs))])
    return outs


def _stage(model: Any, path: str, fmt: str, outputs: Outputs) -> tuple[int, str]:
    """Write into ``outputs``' staging names beside ``path``; moved into place on its commit."""
    if fmt == "onnx":  # staged under its final name, so external data (past 2 GB) still resolves
        from .saving import DeferredModel

        model_files = DeferredModel(model).staged(path)
        outputs.add_model(model_files)
        return model_files.size, model_files.path
    staged = outputs.staging_path(path)
    # The .xml does not name its .bin: OpenVINO reads the .bin of the same name.
    outputs.add(staged[: -len(".xml")] + ".bin", path[: -len(".xml")] + ".bin")
    outputs.add(staged, path)
    return _write(model, staged, fmt), staged


def _write(model: Any, path: str, fmt: str) -> int:
    if fmt == "onnx":
        from .saving import save_model

        return save_model(model, path)
    from .openvino_ir import write_ir

    return write_ir(model, path)
