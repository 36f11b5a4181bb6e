"""One whole-model measurement that ties a table's subgraph savings to the real model.

Subgraphs timed alone run hot in the cache (their weights and inputs stay there run after
run) and the units' savings are modelled as additive: on the zoo's MobileNetV2 (one thread)
the subgraphs' savings, made exact for shared layers, predicted 0.46x at half width where the
whole model measured 0.28x. So the table is calibrated once: the whole model and the model
with every unit at half its channels are timed in interleaved rounds, the original's time is the
baseline, and ``scale`` = measured saving / predicted saving multiplies every prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from ..errors import OnnxPruneError
from .sampling import interleave, round_values, runs_per_round, summarize
from .table import LatencyTable, UnitLatency
from .timers import Timed, Timer

__all__ = ["CALIBRATION_KEPT", "Calibration", "calibrate"]

CALIBRATION_KEPT = 0.5  # every unit at this fraction of its channels
_SCALE_RANGE = (0.25, 4.0)  # beyond: the subgraphs say nothing about this model; clamped, with a note


@dataclass(frozen=True)
class Calibration:
    baseline: float
    scale: float
    measured_ratio: float | None
    predicted_ratio: float | None
    notes: tuple[str, ...] = ()
    precision: str = ""  # what the runtime computed the original in
    reference: float = 1.0  # the reference workload's time (s) in these rounds

    def to_dict(self) -> dict:
        return {
            "kept_fraction": CALIBRATION_KEPT,
            "measured_ratio": self.measured_ratio,
            "predicted_ratio": self.predicted_ratio,
            "scale": self.scale,
        }


def half_plan(analysis, units: Mapping[str, tuple[UnitLatency, Sequence[int]]]) -> tuple[list[int], dict[str, int]]:
    """The groups removed to keep CALIBRATION_KEPT of every unit (lowest score first, within
    the model's constraints), and the count each unit keeps then. ``units``: the table's unit
    and its removable groups in order."""
    from ..planning import enforce_constraints

    wanted = []
    for unit, ranked in units.values():
        lowest = min(k for k, _ in unit.points)
        keep = max(round(CALIBRATION_KEPT * unit.channels), lowest)
        wanted += list(ranked[: max(unit.channels - keep, 0)])
    removed = enforce_constraints(analysis, wanted, {})
    kept = {name: unit.channels - sum(1 for g in ranked if g in removed) for name, (unit, ranked) in units.items()}
    return sorted(removed), kept


def calibrate(
    original: str,
    half: onnx.ModelProto | None,
    kept: Mapping[str, int],
    units: Mapping[str, UnitLatency],
    timer: Timer,
    shapes: Mapping[str, Sequence[int]],
    rounds: int,
    seconds: float,
    reference: Timed | None = None,
) -> Calibration:
    """Time ``original`` against ``half`` (the model at ``kept``) and derive the scale; without
    a half model (its surgery failed) the original alone gives the baseline and the scale is 1.
    ``units`` are in units of the ``reference`` workload, timed in the same rounds (its time
    in seconds is returned), else in seconds."""
    notes: list[str] = []
    models: list[onnx.ModelProto | str] = [original] if half is None else [original, half]
    names = [original, f"{original} (every unit at half width)"]
    try:
        timeds = [timer.load(m, shapes, n) for m, n in zip(models, names)]
    except OnnxPruneError as exc:
        if half is None:
            raise
        fallback = calibrate(original, None, kept, units, timer, shapes, rounds, seconds, reference)
        return replace(fallback, notes=(f"not calibrated: {exc}", *fallback.notes))
    everything = timeds if reference is None else [*timeds, reference]
    times = interleave(everything, rounds, runs_per_round(everything, rounds, seconds))
    baseline = summarize(times[0]).latency
    ref = 1.0 if reference is None else summarize(times[-1]).latency
    precision = timeds[0].precision
    if half is None:
        return Calibration(baseline, 1.0, None, None, tuple(notes), precision, ref)
    measured = float(np.median(round_values(times[1]) / round_values(times[0])))
    in_seconds = {
        n: replace(u, points=tuple((k, t * ref) for k, t in u.points), spread=u.spread * ref) for n, u in units.items()
    }
    raw = LatencyTable({}, baseline, in_seconds)
    predicted = raw.predicted_latency(kept) / baseline
    if predicted >= 1.0 - 1e-9:
        notes.append("not calibrated: the subgraphs predict no saving at half width")
        return Calibration(baseline, 1.0, measured, predicted, tuple(notes), precision, ref)
    scale = (1.0 - measured) / (1.0 - predicted)
    lo, hi = _SCALE_RANGE
    if not lo <= scale <= hi:
        notes.append(
            f"calibration: the whole model at half width measured {measured:.3f}x where the subgraphs predict "
            f"{predicted:.3f}x; scale {scale:.2f} clamped to [{lo}, {hi}]"
        )
        scale = min(max(scale, lo), hi)
    return Calibration(baseline, scale, measured, predicted, tuple(notes), precision, ref)
