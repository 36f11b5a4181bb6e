"""A/B benchmarking of ONNX models and OpenVINO IRs on the CPU.

Every model gets the same inputs; after a warm-up, rounds are interleaved (A, B, A, B, ...) so
that machine noise hits all models alike. Latency: single stream, one request at a time
(median and 90th percentile over all timed runs). Throughput: OpenVINO with the THROUGHPUT
hint and an async request queue; with onnxruntime, runs per second of one session.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import UsageError

__all__ = ["ModelTiming", "benchmark", "BACKENDS"]

BACKENDS = ("openvino", "onnxruntime")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelTiming:
    path: str
    backend: str
    latency_median_ms: float
    latency_p90_ms: float
    throughput_fps: float
    latency_ratio: float  # to the first model
    throughput_ratio: float

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "backend": self.backend,
            "latency_median_ms": self.latency_median_ms,
            "latency_p90_ms": self.latency_p90_ms,
            "throughput_fps": self.throughput_fps,
            "latency_ratio": self.latency_ratio,
            "throughput_ratio": self.throughput_ratio,
        }


class _Runner:
    def __init__(self, path: str, backend: str, input_shapes: Mapping[str, Sequence[int]]) -> None:
        self.path = path
        self.backend = backend
        if backend == "openvino":
            from .openvino_ir import require_openvino

            ov = require_openvino()
            core = ov.Core()
            model = core.read_model(path)
            new = {}
            for inp in model.inputs:
                name = inp.get_any_name()
                ps = inp.get_partial_shape()
                if name in input_shapes:
                    new[inp] = ov.PartialShape(list(input_shapes[name]))
                elif ps.is_dynamic:
                    dims = [d.get_length() if d.is_static else 1 for d in ps]
                    new[inp] = ov.PartialShape(dims)
            if new:
                model.reshape(new)
            self.inputs = {inp.get_any_name(): [int(d) for d in inp.get_shape()] for inp in model.inputs}
            self.types = {inp.get_any_name(): np.float32 for inp in model.inputs}
            self.latency_model = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
            self.request = self.latency_model.create_infer_request()
            self.throughput_model = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
            self._ov = ov
        else:
            if path.endswith(".xml"):
                raise UsageError(f"{path}: onnxruntime cannot run an OpenVINO IR; use --backend openvino")
            from .runtime import session

            self.session = session(path, source=path, optimize=True)  # timed as deployed: optimised
            self.inputs = {}
            for name, shape in self.session.input_shapes.items():
                dims = list(input_shapes.get(name, [d if isinstance(d, int) and d > 0 else 1 for d in shape]))
                self.inputs[name] = dims

    def run_once(self, feeds: Mapping[str, np.ndarray]) -> float:
        start = time.perf_counter()
        if self.backend == "openvino":
            self.request.infer(dict(feeds))
        else:
            self.session(feeds)
        return time.perf_counter() - start

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
) -> tuple[ModelTiming, ...]:
    """Time every model (ONNX or IR) on the same inputs; ratios are to the first model."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if len(paths) < 1:
        raise UsageError("bench needs at least one model")
    for p in paths:
        if not os.path.isfile(p):
            raise UsageError(f"{p}: no such file")
    runners = [_Runner(os.fspath(p), backend, input_shapes or {}) for p in paths]
    rng = np.random.default_rng(seed)
    first = runners[0].inputs
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in first.items()}
    for r in runners[1:]:
        if r.inputs != first:
            raise UsageError(f"{r.path}: inputs {r.inputs} differ from {runners[0].path}'s {first}")
    total = len(runners) * (warmup + rounds * runs_per_round) + len(runners)
    done = 0
    times: list[list[float]] = [[] for _ in runners]
    for r in runners:
        for _ in range(warmup):
            r.run_once(feeds)
            done += 1
        if progress:
            progress(done, total)
    for _ in range(rounds):  # interleaved, so noise hits every model alike
        for i, r in enumerate(runners):
            for _ in range(runs_per_round):
                times[i].append(r.run_once(feeds))
                done += 1
            if progress:
                progress(done, total)
    fps = []
    for r in runners:
        fps.append(r.throughput(feeds, throughput_seconds))
        done += 1
        if progress:
            progress(done, total)
    med = [float(np.median(t)) * 1e3 for t in times]
    p90 = [float(np.percentile(t, 90)) * 1e3 for t in times]
    return tuple(
        ModelTiming(r.path, backend, med[i], p90[i], fps[i], med[i] / med[0], fps[i] / fps[0]) for i, r in enumerate(runners)
    )
