"""Interleaved timing on a noisy machine: every model gets runs in every round, the order
rotating from round to round, so drifts and other processes hit all of them alike. Units
measured minutes apart are made comparable by a fixed reference workload timed in every
round: their times are kept in units of it, and converted to seconds with its time in the
calibration's rounds, next to the whole model's.

Interference from other processes only ever adds time (a preempted thread, an evicted cache),
so each round is summarised by its fastest run, the least disturbed one, and the rounds by
their median: robust both to spikes within a round and to a whole round that went badly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .timers import Timed

__all__ = ["Summary", "interleave", "reference_model", "relative", "runs_per_round", "summarize"]


@dataclass(frozen=True)
class Summary:
    """One model's timed rounds: ``latency`` = median over rounds of each round's fastest run;
    ``p10``/``p90`` of those round values; ``median`` of all runs; counts (times in seconds)."""

    latency: float
    p10: float
    p90: float
    median: float
    rounds: int
    runs: int

    @property
    def error(self) -> float:
        """Standard error of ``latency``, from the rounds' p10-p90 spread as if normal (2.563 sigma)."""
        sigma = (self.p90 - self.p10) / 2.563
        return 1.2533 * sigma / max(self.rounds, 1) ** 0.5


def round_values(rounds: Sequence[Sequence[float]]) -> np.ndarray:
    """Each round's fastest run."""
    return np.array([min(r) for r in rounds if len(r)], dtype=np.float64)


def summarize(rounds: Sequence[Sequence[float]]) -> Summary:
    best = round_values(rounds)
    runs = np.array([t for r in rounds for t in r], dtype=np.float64)
    return Summary(
        float(np.median(best)),
        float(np.percentile(best, 10)),
        float(np.percentile(best, 90)),
        float(np.median(runs)),
        len(best),
        len(runs),
    )


def relative(rounds: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]) -> Summary:
    """``summarize`` of each round's fastest run divided by the reference's fastest run in the
    same round: a time in units of the reference, steady while the machine's load drifts."""
    ratios = round_values(rounds) / round_values(reference)
    return Summary(
        float(np.median(ratios)),
        float(np.percentile(ratios, 10)),
        float(np.percentile(ratios, 90)),
        float(np.median(ratios)),
        len(ratios),
        sum(len(r) for r in rounds),
    )


def reference_model():
    """A fixed small workload timed in every unit's rounds and in the calibration's: a 3x3
    Conv (64 -> 64 channels, 28x28) and Relu, about 29 million MACs."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["y"], ["z"], name="relu"),
        ],
        "latency_reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 28, 28])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 64, 28, 28])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def runs_per_round(timeds: Sequence[Timed], rounds: int, seconds: float, cap: int = 50) -> int:
    """Runs per model per round so that all rounds take about ``seconds``, from one probe run of each."""
    once = sum(max(t.run(), 1e-7) for t in timeds)
    return int(min(max(seconds / (rounds * once), 1), cap))


def interleave(timeds: Sequence[Timed], rounds: int, runs: int) -> list[list[list[float]]]:
    """times[model][round] = that round's ``runs`` timings of the model (rotating order)."""
    n = len(timeds)
    times: list[list[list[float]]] = [[] for _ in timeds]
    for r in range(rounds):
        for i in [(r + j) % n for j in range(n)]:
            times[i].append([timeds[i].run() for _ in range(runs)])
    return times
