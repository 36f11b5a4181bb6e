"""Interleaved measurement of whole models, for confirming a plan: is the candidate really that
much faster than the original, here, as deployed? ``measure_models`` times any number of
models against the first (the benchmark's three-way run: original, latency plan, MACs plan);
``measure_ab`` is its two-model case, the one prune's confirmation uses. One code path, so a
plan measured in prune and in a benchmark is measured the same way."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import UsageError
from .measure import resolve_input_shapes
from .sampling import interleave, round_values, runs_per_round, summarize
from .table import LatencySettings
from .timers import RuntimeTimer, Timer

__all__ = ["ABResult", "Timings", "measure_ab", "measure_models"]


@dataclass(frozen=True)
class ABResult:
    """The candidate's latency relative to the original's, from interleaved rounds: ``ratio``
    is the median over rounds of (candidate / original), each side a round's fastest run;
    ``ratio_p10``/``ratio_p90`` its spread over rounds. Latencies (s): the median over rounds of
    each round's fastest run, and the median of all runs. ``precision``: what the runtime
    computed in."""

    ratio: float
    ratio_p10: float
    ratio_p90: float
    original: float
    candidate: float
    original_median: float
    candidate_median: float
    rounds: int
    runs: int  # per model per round
    precision: str
    settings: LatencySettings

    @property
    def conclusive(self) -> bool:
        """True when the whole p10-p90 range of the ratio is on one side of 1."""
        return self.ratio_p90 < 1.0 or self.ratio_p10 > 1.0

    def to_dict(self) -> dict:
        return {
            "ratio": self.ratio,
            "ratio_p10": self.ratio_p10,
            "ratio_p90": self.ratio_p90,
            "original_s": self.original,
            "candidate_s": self.candidate,
            "original_median_s": self.original_median,
            "candidate_median_s": self.candidate_median,
            "rounds": self.rounds,
            "runs_per_round": self.runs,
            "precision": self.precision,
            "settings": self.settings.to_dict(),
        }


@dataclass(frozen=True)
class Timings:
    """Several models timed together: per model (the first is the reference) ``ratio`` = median
    over rounds of (model / first), each side a round's fastest run, ``ratio_p10``/``ratio_p90``
    its spread over rounds; ``latency`` (s) the median over rounds of the model's fastest run,
    ``median`` (s) the median of all its runs (disturbed runs included: on a busy machine the
    contention, more than the model); ``precision`` what the runtime computed in."""

    models: tuple[str, ...]
    ratio: tuple[float, ...]
    ratio_p10: tuple[float, ...]
    ratio_p90: tuple[float, ...]
    latency: tuple[float, ...]
    median: tuple[float, ...]
    precision: tuple[str, ...]
    rounds: int
    runs: int  # per model per round
    settings: LatencySettings

    def to_dict(self) -> dict:
        return {
            "models": [
                {
                    "model": m,
                    "ratio": self.ratio[i],
                    "ratio_p10": self.ratio_p10[i],
                    "ratio_p90": self.ratio_p90[i],
                    "latency_s": self.latency[i],
                    "median_s": self.median[i],
                    "median_ratio": self.median[i] / self.median[0],
                    "precision": self.precision[i],
                }
                for i, m in enumerate(self.models)
            ],
            "rounds": self.rounds,
            "runs_per_round": self.runs,
            "settings": self.settings.to_dict(),
        }


def measure_models(
    models: Sequence[onnx.ModelProto | str | os.PathLike[str]],
    settings: LatencySettings | None = None,
    *,
    timer: Timer | None = None,
    rounds: int = 20,
    seconds: float = 4.0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    labels: Sequence[str] | None = None,
) -> Timings:
    """Time ``models`` in ``rounds`` interleaved rounds of equal runs (the order rotating from
    round to round), about ``seconds`` in all, as ``settings`` deploy them (default OpenVINO
    CPU, f32, latency hint, batch 1; each model compiled once, for that hint only); all get the
    input shapes of the first. Ratios are to the first model. ``labels``: what in-memory models
    are called in messages (files: their path)."""
    settings = settings or LatencySettings()
    if len(models) < 2:
        raise UsageError(f"a latency comparison needs at least 2 models, got {len(models)}")
    if rounds < 3:
        raise UsageError(f"A/B measurement needs at least 3 rounds, got {rounds}")
    if not seconds > 0:
        raise UsageError(f"A/B measurement time must be positive, got {seconds}")
    given = [m if isinstance(m, onnx.ModelProto) else os.fspath(m) for m in models]
    for m in given:
        if isinstance(m, str) and not os.path.isfile(m):
            raise UsageError(f"{m}: no such file")
    first = given[0] if isinstance(given[0], onnx.ModelProto) else onnx.load(given[0], load_external_data=False)
    labels = labels or [f"<model {i}>" for i in range(len(given))]
    names = tuple(m if isinstance(m, str) else label for m, label in zip(given, labels))
    shapes = resolve_input_shapes(first, input_shapes or {}, settings.batch, names[0])
    own = timer is None
    timer = timer or RuntimeTimer(settings)
    try:
        timeds = [timer.load(m, shapes, n) for m, n in zip(given, names)]
        runs = runs_per_round(timeds, rounds, seconds)
        times = interleave(timeds, rounds, runs)
    finally:
        if own:
            timer.close()  # type: ignore[attr-defined]
    base = round_values(times[0])
    ratios = [round_values(t) / base for t in times]
    summaries = [summarize(t) for t in times]
    return Timings(
        names,
        tuple(float(np.median(r)) for r in ratios),
        tuple(float(np.percentile(r, 10)) for r in ratios),
        tuple(float(np.percentile(r, 90)) for r in ratios),
        tuple(s.latency for s in summaries),
        tuple(s.median for s in summaries),
        tuple(t.precision for t in timeds),
        len(base),
        runs,
        settings,
    )


def measure_ab(
    original: onnx.ModelProto | str | os.PathLike[str],
    candidate: onnx.ModelProto | str | os.PathLike[str],
    settings: LatencySettings | None = None,
    *,
    timer: Timer | None = None,
    rounds: int = 20,
    seconds: float = 4.0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> ABResult:
    """Time both models in ``rounds`` interleaved rounds (A, B, then B, A, ...) of equal runs,
    about ``seconds`` in all, as ``settings`` deploy them (default OpenVINO CPU, f32, latency
    hint, batch 1); both get the same input shapes (``measure_models`` of the two)."""
    t = measure_models(
        [original, candidate],
        settings,
        timer=timer,
        rounds=rounds,
        seconds=seconds,
        input_shapes=input_shapes,
        labels=("<original>", "<candidate>"),
    )
    return ABResult(
        t.ratio[1],
        t.ratio_p10[1],
        t.ratio_p90[1],
        t.latency[0],
        t.latency[1],
        t.median[0],
        t.median[1],
        t.rounds,
        t.runs,
        t.precision[1],
        t.settings,
    )
