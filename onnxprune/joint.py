"""Pruning and int8 quantization chosen together: ``--min-fidelity F`` with ``--quantize int8``.

The fidelity budget is met by the int8 model, not only by the pruned float one: prune to
``F``, quantize, measure the int8 model against the original on the calibration samples (the
samples the budget search itself is measured on; the held-out ones stay for the report), and
while that falls short of ``F``, prune again to a budget raised by the shortfall — less pruning
where int8 costs fidelity. This corrects the whole budget, not layer by layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import PruneConfig
from .errors import UsageError
from .quantize_config import QuantizeConfig

__all__ = ["JointResult", "JointStep", "prune_for_int8"]


@dataclass(frozen=True)
class JointStep:
    min_fidelity: float  # the budget the pruning was run with
    macs_ratio: float
    pruned_fidelity: float  # pruned float vs original, calibration samples
    int8_fidelity: float  # int8 vs original, calibration samples

    def to_dict(self) -> dict:
        return {
            "min_fidelity": self.min_fidelity,
            "macs_ratio": self.macs_ratio,
            "pruned_fidelity": self.pruned_fidelity,
            "int8_fidelity": self.int8_fidelity,
        }


@dataclass(frozen=True)
class JointResult:
    """The pruning whose int8 model met the budget (or the last tried), and every step."""

    pruned: Any  # api.PruneResult
    target: float
    steps: tuple[JointStep, ...]

    @property
    def met(self) -> bool:
        return self.steps[-1].int8_fidelity >= self.target

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "met": self.met,
            "samples": "calibration samples",
            "steps": [s.to_dict() for s in self.steps],
        }


def prune_for_int8(
    model: str | os.PathLike[str],
    config: PruneConfig,
    qconfig: QuantizeConfig,
    *,
    rounds: int = 3,
    progress: Callable[[str, int, int], None] | None = None,
    **prune_options: object,
) -> JointResult:
    """Prune ``model`` under ``config.min_fidelity`` so that its int8 model (quantized with
    ``qconfig``) keeps that fidelity against the original on the calibration samples; at most
    ``rounds`` prunings."""
    from .api import prune
    from .calibration import calibration_samples
    from .fidelity import score_outputs
    from .loading import load_model
    from .quantization import quantize
    from .runtime import session

    if config.fidelity_floor is None:
        raise UsageError("choosing pruning and int8 together needs a fidelity budget (--min-fidelity or --max-drop)")
    source = os.fspath(model)
    proto = load_model(source)[0]
    cal = calibration_samples(config, proto, source)[0]
    run_orig = session(source, source=source)
    names = run_orig.output_names
    from .fidelity import output_batch_axes

    axes = output_batch_axes(proto)  # sequence-first outputs: their samples' axis
    reference = run_orig.outputs(cal, axes)

    def fidelity_of(candidate: Any, optimize: bool) -> float:
        run = session(
            candidate, source=source, what="the int8 model" if optimize else "the pruned model", optimize=optimize
        )
        return score_outputs(names, reference, run.outputs(cal, axes), config.fidelity_metrics, batch_axes=axes)[0]

    target = goal = config.fidelity_floor
    steps: list[JointStep] = []
    result = None
    for _ in range(max(1, rounds)):
        result = prune(
            source, config=config.with_options(min_fidelity=goal, max_drop=None), progress=progress, **prune_options
        )
        int8 = quantize(result.model, config=qconfig, format="onnx", source=source)
        r = result.report
        steps.append(
            JointStep(
                goal, r.macs_after / r.macs_before, fidelity_of(result.model, False), fidelity_of(int8.model, True)
            )
        )
        if steps[-1].int8_fidelity >= target or goal >= 1.0:
            break
        goal = min(1.0, goal + (target - steps[-1].int8_fidelity))
    return JointResult(result, target, tuple(steps))
