"""A/B benchmarking of ONNX models and OpenVINO IRs on the CPU.

Every model gets the same inputs; after a warm-up, rounds are interleaved (A, B, A, B, ...) so
that machine noise hits all models alike. Latency: single stream, one request at a time
(median and 90th percentile over all timed runs). Throughput: OpenVINO with the THROUGHPUT
hint and an async request queue; with onnxruntime, runs per second of one session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UsageError, openvino_message

__all__ = ["BACKENDS", "PRECISIONS", "ModelTiming", "benchmark", "spread_warning", "spread_warnings"]

BACKENDS = ("openvino", "onnxruntime")
Progress = Callable[[int, int], None]


PRECISIONS = ("f32", "bf16", "f16")


@dataclass(frozen=True)
class ModelTiming:
    """One model's timings. Latency percentiles are over every timed single-stream run; the
    p10-p90 range is the run-to-run spread a ratio must exceed to mean anything."""

    path: str
    backend: str
    latency_median_ms: float
    latency_p90_ms: float
    throughput_fps: float
    latency_ratio: float  # to the first model
    throughput_ratio: float
    latency_p10_ms: float = float("nan")
    runs: int = 0
    precision: str = "f32"  # the inference precision the backend used

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "backend": self.backend,
            "precision": self.precision,
            "runs": self.runs,
            "latency_median_ms": self.latency_median_ms,
            "latency_p10_ms": self.latency_p10_ms,
            "latency_p90_ms": self.latency_p90_ms,
            "throughput_fps": self.throughput_fps,
            "latency_ratio": self.latency_ratio,
            "throughput_ratio": self.throughput_ratio,
        }


def spread_warning(first: ModelTiming, t: ModelTiming) -> str | None:
    """A warning when ``t``'s median latency differs from ``first``'s by less than the
    run-to-run spread (the wider p10-p90 range of the two): then that ratio is noise."""
    diff = abs(t.latency_median_ms - first.latency_median_ms)
    spread = max(t.latency_p90_ms - t.latency_p10_ms, first.latency_p90_ms - first.latency_p10_ms)
    if t is first or not spread > diff:
        return None
    return (
        f"{os.path.basename(t.path)} vs {os.path.basename(first.path)}: the medians differ by {diff:.3g} ms, less than "
        f"the run-to-run spread (p10-p90 up to {spread:.3g} ms): ratio {t.latency_ratio:.3f} is within the noise; "
        f"measure longer (-t SECONDS or more --rounds) on a quieter machine"
    )


def spread_warnings(timings: Sequence[ModelTiming]) -> list[str]:
    """``spread_warning`` of every model against the first."""
    return [w for t in timings[1:] if (w := spread_warning(timings[0], t))]


def _static_dims(path: str, name: str, dims: Sequence[object], given: Mapping[str, Sequence[int]]) -> list[int]:
    """The shape fed to input ``name``: the user's, else the model's with a dynamic batch set
    to 1; any other dynamic dimension is a usage error asking for --input-shape."""
    from .shapes import batch_filled, input_shape_hint

    # dims from the runtime: [] for an unknown rank (OpenVINO) or a scalar; nothing to check then
    shape = batch_filled(name, list(dims) or None, given, path, check_fixed=False)
    if None in shape:
        raise UsageError(
            f"{path}: input {name!r} dimension {shape.index(None)} is dynamic; give --input-shape "
            f"{input_shape_hint(name, shape, 'to time')}"
        )
    return [int(d) for d in shape]  # type: ignore[arg-type]  # None refused above


def _frontend_reads(ov: Any, framework: str, path: str) -> bool:
    """Whether OpenVINO's ``framework`` ("onnx", "ir") frontend takes ``path`` (a quick look at
    the file, no logging)."""
    try:
        return bool(ov.frontend.FrontEndManager().load_by_framework(framework).supported(path))
    except Exception:  # OpenVINO raises its own types (a missing file, a folder)
        return False


class _Runner:
    """One compiled model and the inputs it takes. ``hints``: the OpenVINO performance hints to
    compile it for (LATENCY for ``run_once``, THROUGHPUT for ``throughput`` and
    ``per_inference``); ``threads``: the runtime's thread count (None: its own choice);
    ``named``: the inputs the user gave a shape for, each must be one of the model's."""

    def __init__(
        self,
        path: str,
        backend: str,
        input_shapes: Mapping[str, Sequence[int]],
        precision: str | None = None,
        *,
        threads: int | None = None,
        hints: Sequence[str] = ("LATENCY", "THROUGHPUT"),
        named: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.backend = backend
        self.precision = "f32"
        if backend == "openvino":
            from .openvino_ir import require_openvino

            ov = require_openvino()
            core = ov.Core()
            ir = path.endswith(".xml")
            if not _frontend_reads(ov, "ir" if ir else "onnx", path):
                # OpenVINO would try its other frontends on it, and TensorFlow's logs C++ lines
                # ('E0000 ... text_format.cc') to stderr before any error: say what is wrong first,
                # in one line (for ONNX, onnxprune's loader says it).
                if ir:
                    raise UsageError(f"{path}: not an OpenVINO IR (OpenVINO's IR reader does not recognise the .xml)")
                from .loading import load_model

                load_model(path)
            try:
                model = core.read_model(path)
            except Exception as exc:  # OpenVINO raises its own types
                if not path.endswith(".xml"):  # an ONNX file: onnxprune's loader names what is wrong
                    from .loading import load_model

                    load_model(path)
                raise UsageError(f"{path}: OpenVINO cannot read the model: {openvino_message(exc)}") from None
            from .shapes import check_input_names

            check_input_names(path, named, [inp.get_any_name() for inp in model.inputs])
            new = {}
            for inp in model.inputs:
                name = inp.get_any_name()
                ps = inp.get_partial_shape()
                dims = [d.get_length() if d.is_static else None for d in ps] if ps.rank.is_static else []
                if name in input_shapes or ps.is_dynamic:
                    new[inp] = ov.PartialShape(_static_dims(path, name, dims, input_shapes))
            config: dict[str, object] = {} if precision is None else {"INFERENCE_PRECISION_HINT": precision}
            if threads is not None:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            try:
                if new:
                    model.reshape(new)
                compiled = {h: core.compile_model(model, "CPU", {"PERFORMANCE_HINT": h, **config}) for h in hints}
                self.latency_model = compiled.get("LATENCY")
                self.throughput_model = compiled.get("THROUGHPUT")
            except Exception as exc:  # OpenVINO raises its own types
                shapes = {inp.get_any_name(): str(inp.get_partial_shape()) for inp in model.inputs}
                raise UsageError(
                    f"{path}: OpenVINO cannot compile the model for inputs {shapes}: {openvino_message(exc)}"
                ) from None
            self.inputs = {inp.get_any_name(): [int(d) for d in inp.get_shape()] for inp in model.inputs}
            first = compiled[hints[0]]
            self.request = first.create_infer_request()
            # What the CPU plugin actually runs in: it defaults to bf16 where the CPU has it, and
            # falls back from a precision it lacks (f16 on most x86) without saying so.
            self.precision = first.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            # A quantized model (NNCF's FakeQuantize, or QDQ read from ONNX) runs int8 kernels where
            # it is quantized and that precision elsewhere.
            if any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()):
                self.precision = f"int8 + {self.precision}"
            self._ov = ov
        else:
            if path.endswith(".xml"):
                raise UsageError(f"{path}: onnxruntime cannot run an OpenVINO IR; use --backend openvino")
            if precision not in (None, "f32"):
                raise UsageError(
                    f"--precision {precision}: onnxruntime's CPU provider computes in the model's own types (f32)"
                )
            from .runtime import session

            self.session = session(path, source=path, optimize=True, threads=threads)  # timed as deployed: optimised
            from .shapes import check_input_names

            check_input_names(path, named, self.session.input_shapes)
            self.inputs = {
                name: _static_dims(path, name, shape, input_shapes) for name, shape in self.session.input_shapes.items()
            }

    def run_once(self, feeds: Mapping[str, np.ndarray]) -> float:
        start = time.perf_counter()
        if self.backend == "openvino":
            self.request.infer(dict(feeds))
        else:
            self.session(feeds)
        return time.perf_counter() - start

    def per_inference(self, feeds: Mapping[str, np.ndarray], requests: int) -> float:
        """Seconds per inference with OpenVINO's THROUGHPUT hint: ``requests`` inferences queued
        at once on its async queue (its streams run them in parallel)."""
        queue = self.__dict__.get("_queue")
        if queue is None:  # made once: creating its requests is not part of an inference
            queue = self._queue = self._ov.AsyncInferQueue(self.throughput_model)
        start = time.perf_counter()
        for _ in range(requests):
            queue.start_async(dict(feeds))
        queue.wait_all()
        return (time.perf_counter() - start) / requests

    def throughput(self, feeds: Mapping[str, np.ndarray], seconds: float) -> float:
        if self.backend != "openvino":
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                self.session(feeds)
                n += 1
            return n / (time.perf_counter() - start)
        queue = self._ov.AsyncInferQueue(self.throughput_model)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            queue.start_async(dict(feeds))
            n += 1
        queue.wait_all()
        return n / (time.perf_counter() - start)


def _check_file(path: str) -> None:
    """What is wrong with a model file before OpenVINO reads it (its own message names a C++
    source line): missing, a folder, empty, an IR without its weights."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: not a file")
    if os.path.getsize(path) == 0:
        raise UsageError(f"{path}: empty file")
    if path.endswith(".xml"):
        weights = path[: -len(".xml")] + ".bin"
        if not os.path.isfile(weights):
            raise UsageError(
                f"{path}: the IR's weights {os.path.basename(weights)} are not beside it (an IR is the .xml and its .bin)"
            )


def benchmark(
    paths: Sequence[str],
    *,
    backend: str = "openvino",
    rounds: int = 10,
    runs_per_round: int = 5,
    warmup: int = 3,
    throughput_seconds: float = 2.0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    seconds: float | None = None,
    precision: str | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[ModelTiming, ...]:
    """Time every model (ONNX or IR) on the same inputs; ratios are to the first model.

    ``seconds``: time-based instead of ``rounds``: interleaved rounds go on until every model
    has been timed for about that long. ``precision`` (f32, bf16, f16): OpenVINO's
    INFERENCE_PRECISION_HINT (default: the plugin's choice, bf16 on CPUs that have it); each
    timing says which precision ran. ``inputs``: one feed (arrays keyed by input name) used
    instead of seeded random inputs; its shapes serve as input shapes."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if seconds is not None and not seconds > 0:
        raise UsageError(f"-t must be a positive number of seconds, got {seconds}")
    for flag, value, least in (("--rounds", rounds, 1), ("--runs", runs_per_round, 1), ("--warmup", warmup, 0)):
        if seconds is None or flag != "--rounds":  # -t replaces --rounds
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise UsageError(f"{flag} must be an integer >= {least}, got {value!r}")
    if not throughput_seconds > 0:
        raise UsageError(f"--throughput-seconds must be a positive number of seconds, got {throughput_seconds}")
    if len(paths) < 1:
        raise UsageError("bench needs at least one model")
    for p in paths:
        _check_file(os.fspath(p))
    shapes = dict(input_shapes or {})
    if inputs:
        for name, given in shapes.items():  # the data is fed as it is: a shape that contradicts it cannot run
            if name in inputs and list(np.shape(inputs[name])) != list(given):
                raise UsageError(
                    f"{paths[0]}: --input-shape {name}:{','.join(map(str, given))} contradicts --inputs, whose first "
                    f"sample of {name!r} has shape {list(np.shape(inputs[name]))}: give one of them"
                )
        shapes = {**{k: list(np.shape(v)) for k, v in inputs.items()}, **shapes}
    named = list(input_shapes or {})
    runners = [_Runner(os.fspath(p), backend, shapes, precision, named=named) for p in paths]
    rng = np.random.default_rng(seed)
    first = runners[0].inputs
    if inputs:
        missing = sorted(set(first) - set(inputs))
        if missing:
            raise UsageError(f"{runners[0].path}: --inputs has no array for input(s) {missing}")
        feeds = {name: np.asarray(inputs[name]) for name in first}
    else:
        feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in first.items()}
    for r in runners[1:]:
        if r.inputs != first:
            raise UsageError(f"{r.path}: inputs {r.inputs} differ from {runners[0].path}'s {first}")
    # Progress counts timed runs; in time-based mode (-t) the total is what the first round's
    # pace predicts, capped so the bar never passes its end before throughput is measured.
    total = len(runners) * (warmup + rounds * runs_per_round) + len(runners)
    done = 0
    times: list[list[float]] = [[] for _ in runners]
    for r in runners:
        for _ in range(warmup):
            r.run_once(feeds)
            done += 1
        if progress:
            progress(done, total)
    spent = [0.0 for _ in runners]
    n_rounds = 0

    def more() -> bool:
        if seconds is None:
            return n_rounds < rounds
        return n_rounds < 2 or min(spent) < seconds  # at least two rounds: a spread needs runs

    while more():
        for i, r in enumerate(runners):  # interleaved, so noise hits every model alike
            for _ in range(runs_per_round):
                t = r.run_once(feeds)
                times[i].append(t)
                spent[i] += t
                done += 1
            if progress:
                progress(min(done, total - len(runners)), total)
        n_rounds += 1
        if seconds is not None and n_rounds == 1 and min(spent) > 0:
            expected = int(seconds / min(spent)) + 1
            total = len(runners) * (warmup + max(expected, 2) * runs_per_round) + len(runners)
    fps = []
    for r in runners:
        fps.append(r.throughput(feeds, throughput_seconds))
        if progress:
            progress(total - len(runners) + len(fps), total)
    med = [float(np.median(t)) * 1e3 for t in times]
    p10 = [float(np.percentile(t, 10)) * 1e3 for t in times]
    p90 = [float(np.percentile(t, 90)) * 1e3 for t in times]
    return tuple(
        ModelTiming(
            r.path,
            backend,
            med[i],
            p90[i],
            fps[i],
            med[i] / med[0],
            fps[i] / fps[0],
            p10[i],
            len(times[i]),
            r.precision,
        )
        for i, r in enumerate(runners)
    )
