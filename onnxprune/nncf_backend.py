"""NNCF's post-training quantization, called quietly and with its failures typed.

NNCF is imported only when one of these functions runs (it takes a second or two), prints
progress bars and logs on its own: the library never prints, so both are captured.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BackendMissing, OnnxPruneError, UnsupportedModel, first_line

__all__ = ["Validation", "nncf_quantize", "require_nncf"]

Feeds = Mapping[str, np.ndarray]


def require_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise BackendMissing("nncf is not installed: pip install 'nncf>=3.0' (int8 quantization)") from None
    return nncf


@contextlib.contextmanager
def _quiet(nncf: Any) -> Iterator[None]:
    """NNCF's log below errors and its progress bars (rich, on stdout) kept off the terminal."""
    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class Validation:
    """Samples and the metric NNCF's accuracy control keeps within ``max_drop`` of the
    float model's: ``metric(outputs, indices)``, the outputs (a list per sample) of the
    samples at ``indices`` (NNCF validates on subsets too). Or ``judge(model)``: the user's
    validation function on the model NNCF hands over (a ModelProto or an OpenVINO
    CompiledModel), scoring its own data; NNCF's validation set is then one placeholder item,
    so each of NNCF's validations is one call. ``relative``: ``max_drop`` is a fraction of the
    float model's value (NNCF's DropType.RELATIVE)."""

    feeds: Sequence[Feeds]
    metric: Callable[[list[list[np.ndarray]], list[int]], float] | None
    max_drop: float
    judge: Callable[[Any], float] | None = None
    relative: bool = False


def _run_outputs(model: Any, feeds: Sequence[Feeds], source: str) -> list[list[np.ndarray]]:
    """Every sample's outputs from the model NNCF hands the validation function: a ModelProto
    (ONNX backend; run by onnxruntime with its integer kernels) or an OpenVINO CompiledModel."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        from .runtime import session

        run = session(model, source=source, what="the int8 model", optimize=True)
        return [run(f) for f in feeds]
    results = []
    for f in feeds:
        out = model(dict(f))
        results.append([np.asarray(out[model.output(i)]) for i in range(len(model.outputs))])
    return results


def nncf_quantize(
    model: Any,
    calibration: Sequence[Feeds],
    *,
    preset: str,
    subset_size: int,
    fast_bias_correction: bool,
    ignored_names: Sequence[str] = (),
    validation: Validation | None = None,
    source: str = "<model>",
) -> Any:
    """``nncf.quantize`` (or ``quantize_with_accuracy_control`` with ``validation``) of an ONNX
    ModelProto or an OpenVINO Model; any NNCF failure is an UnsupportedModel naming the file."""
    nncf = require_nncf()
    dataset = nncf.Dataset(list(calibration))
    scope = nncf.IgnoredScope(names=list(ignored_names)) if ignored_names else None
    options = {
        "preset": nncf.QuantizationPreset(preset),
        "subset_size": min(subset_size, len(calibration)),
        "fast_bias_correction": fast_bias_correction,
        "ignored_scope": scope,
    }
    try:
        with _quiet(nncf):
            if validation is None:
                return nncf.quantize(model, dataset, **options)
            judge, metric = validation.judge, validation.metric
            if judge is not None:
                items: list[Any] = [(0, {})]  # the user's function scores its own data

                def validate(candidate: Any, data: Any) -> tuple[float, None]:
                    return judge(candidate), None

            else:
                assert metric is not None
                items = [(i, f) for i, f in enumerate(validation.feeds)]

                def validate(candidate: Any, data: Any) -> tuple[float, None]:
                    chosen = list(data)
                    outputs = _run_outputs(candidate, [f for _, f in chosen], source)
                    return metric(outputs, [i for i, _ in chosen]), None

            return nncf.quantize_with_accuracy_control(
                model,
                dataset,
                nncf.Dataset(items, lambda item: item[1]),
                validate,
                max_drop=validation.max_drop,
                drop_type=nncf.DropType.RELATIVE if validation.relative else nncf.DropType.ABSOLUTE,
                **options,
            )
    except (OnnxPruneError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        import onnx

        from .runtime import onnxruntime_message

        detail = onnxruntime_message(exc) or first_line(exc)
        if isinstance(
            exc, (AttributeError, KeyError, TypeError, IndexError)
        ):  # a bug inside NNCF: where, not just 'type'
            detail = f"{type(exc).__name__} {detail!r} in {_nncf_frame(exc)}"
        hint = " (NNCF's OpenVINO backend may take it: give -o OUT.xml)" if isinstance(model, onnx.ModelProto) else ""
        raise UnsupportedModel(f"{source}: NNCF cannot quantize the model: {detail}; nothing written{hint}") from None


def _nncf_frame(exc: BaseException) -> str:
    """Where in NNCF ``exc`` was raised (its innermost frame inside the nncf package)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/nncf/" in f.filename.replace("\\", "/")]
    if not frames:
        return "NNCF"
    f = frames[-1]
    return f"nncf/{f.filename.replace(chr(92), '/').rsplit('/nncf/', 1)[1]}:{f.lineno} ({f.name})"
