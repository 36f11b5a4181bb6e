"""Interleaved A/B measurement of two whole models, for confirming a plan: is the candidate
really that much faster than the original, here, as deployed?"""

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

__all__ = ["ABResult", "measure_ab"]


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
    hint, batch 1); both get the same input shapes."""
    settings = settings or LatencySettings()
    if rounds < 3:
        raise UsageError(f"A/B measurement needs at least 3 rounds, got {rounds}")
    if not seconds > 0:
        raise UsageError(f"A/B measurement time must be positive, got {seconds}")
    models = [m if isinstance(m, onnx.ModelProto) else os.fspath(m) for m in (original, candidate)]
    for m in models:
        if isinstance(m, str) and not os.path.isfile(m):
            raise UsageError(f"{m}: no such file")
    first = models[0] if isinstance(models[0], onnx.ModelProto) else onnx.load(models[0], load_external_data=False)
    name = models[0] if isinstance(models[0], str) else "<original>"
    shapes = resolve_input_shapes(first, input_shapes or {}, settings.batch, name)
    own = timer is None
    timer = timer or RuntimeTimer(settings)
    try:
        names = [m if isinstance(m, str) else what for m, what in zip(models, ("<original>", "<candidate>"))]
        timeds = [timer.load(m, shapes, n) for m, n in zip(models, names)]
        runs = runs_per_round(timeds, rounds, seconds)
        times = interleave(timeds, rounds, runs)
    finally:
        if own:
            timer.close()  # type: ignore[attr-defined]
    a, b = round_values(times[0]), round_values(times[1])
    ratios = b / a
    sa, sb = summarize(times[0]), summarize(times[1])
    return ABResult(
        float(np.median(ratios)),
        float(np.percentile(ratios, 10)),
        float(np.percentile(ratios, 90)),
        sa.latency,
        sb.latency,
        sa.median,
        sb.median,
        len(ratios),
        runs,
        timeds[1].precision,
        settings,
    )
