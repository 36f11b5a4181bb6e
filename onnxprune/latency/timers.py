"""Timers: what times one model for the latency table and the A/B check.

A ``Timer`` loads a model (a file, or an in-memory ModelProto written to a temporary folder)
for given input shapes and returns a ``Timed`` whose ``run()`` times one inference. The real
one, ``RuntimeTimer``, compiles with bench.py's runner as the user deploys (``LatencySettings``:
OpenVINO CPU or onnxruntime, threads, latency or throughput hint, inference precision); tests
pass a deterministic stand-in (``onnxprune.testing.StepTimer``), so no test times anything.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Protocol

import numpy as np
import onnx

from ..errors import UsageError
from .table import LatencySettings

__all__ = ["RuntimeTimer", "Timed", "Timer", "runtime_version"]

_WARMUP = 2


class Timed(Protocol):
    """One loaded model: ``run()`` times one inference (seconds); ``precision`` is what the
    runtime computes in."""

    precision: str

    def run(self) -> float: ...


class Timer(Protocol):
    """Loads models to time. ``runtime`` names the runtime and its version (the cache key). A
    timer may also have ``clock()``, the clock the planner's time budgets are measured on (the
    process's ``time.perf_counter`` without one; a test's stand-in counts fake seconds)."""

    @property
    def runtime(self) -> str: ...

    def load(self, model: onnx.ModelProto | str, input_shapes: Mapping[str, Sequence[int]], source: str) -> Timed: ...


def runtime_version(backend: str) -> str:
    """'openvino 2026.4.1' from the installed package's metadata (no import of the runtime)."""
    package = {"openvino": "openvino", "onnxruntime": "onnxruntime"}[backend]
    try:
        return f"{backend} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{backend} (not installed)"


def _np_dtype(elem_type: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return np.dtype(np.float32)


def _feeds(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the shapes the runner settled on: standard normal floats, zeros for
    integer or boolean inputs (shape-like values must not be random)."""
    rng = np.random.default_rng(seed)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    out = {}
    for name, shape in shapes.items():
        dtype = _np_dtype(types.get(name, onnx.TensorProto.FLOAT))
        out[name] = (
            rng.standard_normal(list(shape)).astype(dtype)
            if np.issubdtype(dtype, np.floating)
            else np.zeros(list(shape), dtype)
        )
    return out


class _RunnerTimed:
    def __init__(self, runner: object, feeds: Mapping[str, np.ndarray], throughput: bool) -> None:
        self.runner = runner
        self.feeds = feeds
        self.throughput = throughput
        self.precision = runner.precision  # type: ignore[attr-defined]
        self.requests = 1
        if throughput:
            n = runner.throughput_model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")  # type: ignore[attr-defined]
            self.requests = 2 * max(int(n), 1)  # enough to keep every stream busy
        for _ in range(_WARMUP):
            self.run()

    def run(self) -> float:
        if self.throughput:
            return self.runner.per_inference(self.feeds, self.requests)  # type: ignore[attr-defined]
        return self.runner.run_once(self.feeds)  # type: ignore[attr-defined]


class RuntimeTimer:
    """Times models with OpenVINO's CPU plugin or onnxruntime's CPU provider, as ``settings``
    say, through bench.py's runner. In-memory models are written to a temporary folder (the
    runners read files); ``close()`` (or ``with``) removes it."""

    def __init__(self, settings: LatencySettings) -> None:
        if settings.backend == "onnxruntime" and settings.hint != "latency":
            raise UsageError("hint throughput is OpenVINO's (async streams); onnxruntime is timed for latency")
        self.settings = settings
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._count = 0

    @property
    def runtime(self) -> str:
        return runtime_version(self.settings.backend)

    def load(self, model: onnx.ModelProto | str, input_shapes: Mapping[str, Sequence[int]], source: str) -> Timed:
        from ..bench import _Runner

        s = self.settings
        if isinstance(model, onnx.ModelProto):
            from ..saving import save_model

            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="onnxprune-latency-")
            self._count += 1
            path = os.path.join(self._tmp.name, f"m{self._count}.onnx")
            save_model(model, path, None)
            proto = model
        else:
            path = model
            proto = onnx.load(path, load_external_data=False)
        hint = "THROUGHPUT" if s.hint == "throughput" else "LATENCY"
        precision = s.precision if s.backend == "openvino" else None
        try:
            runner = _Runner(path, s.backend, dict(input_shapes), precision, threads=s.threads, hints=(hint,))
        except UsageError as exc:
            raise UsageError(exc.cli_text.replace(path, source, 1)) from None
        feeds = _feeds(proto, runner.inputs)
        timed = _RunnerTimed(runner, feeds, hint == "THROUGHPUT")
        if isinstance(model, onnx.ModelProto):
            os.remove(path)  # compiled: the file is no longer needed
        return timed

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RuntimeTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
