"""Task-aware fidelity metrics: one small function per task, each a number in [0, 1] where 1
means the original's answers (cosine: down to -1), and the rules that pick one per output.

========== ============================================================================
top1       classification: agreement of the top class (per sample, or per position)
ctc        sequences read by CTC: identical decoded strings (repeats collapsed, blank dropped)
dense      probability maps: IoU of the cells above a threshold (0.5 for probabilities)
detection  detection heads: matched detections of the same class, credited by box IoU
cosine     embeddings and everything else: cosine similarity per sample
========== ============================================================================

A metric may take parameters, written ``metric:key=value,key=value``: ``ctc:blank=K``,
``dense:threshold=T``, ``detection:score=S,iou=I,nms=J``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..errors import UsageError
from .basic import cosine, cosine_metric, cosine_samples, sample_norms, top1, top1_agreement
from .choose import Choice, detect_metric, detect_metrics
from .dense import dense, dense_reference
from .detection import detection
from .result import MetricResult, NothingToCompare
from .sequence import ctc, ctc_decode, edit_distance

__all__ = [
    "FIDELITY_METRICS",
    "Choice",
    "MetricCannotRead",
    "MetricResult",
    "NothingToCompare",
    "apply_metric",
    "check_metric",
    "check_metrics",
    "cosine",
    "cosine_samples",
    "ctc",
    "ctc_decode",
    "dense",
    "detect_metric",
    "detect_metrics",
    "detection",
    "edit_distance",
    "metric_function",
    "parse_metric",
    "prepare_metric",
    "sample_norms",
    "top1",
    "top1_agreement",
]

FIDELITY_METRICS = ("top1", "ctc", "dense", "detection", "cosine")

_FUNCTIONS: dict[str, Callable[..., MetricResult]] = {
    "top1": top1,
    "ctc": ctc,
    "dense": dense,
    "detection": detection,
    "cosine": cosine_metric,
}
# Each metric's parameters and how their values are read.
_PARAMS: dict[str, dict[str, Callable[[str], float | int]]] = {
    "top1": {},
    "ctc": {"blank": int},
    "dense": {"threshold": float},
    "detection": {"score": float, "iou": float, "nms": float},
    "cosine": {},
}


def _usage(spec: str, why: str) -> UsageError:
    return UsageError(f"fidelity metric {spec!r}: {why}; choose one of {', '.join(FIDELITY_METRICS)}")


def parse_metric(spec: str) -> tuple[str, dict[str, float | int]]:
    """``metric`` or ``metric:key=value,...`` -> (metric, parameters); UsageError otherwise."""
    name, _, rest = spec.partition(":")
    if name not in FIDELITY_METRICS:
        raise _usage(spec, "unknown metric")
    params: dict[str, float | int] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        kinds = _PARAMS[name]
        if not sep or key not in kinds:
            allowed = ", ".join(f"{k}=..." for k in kinds) or "none"
            raise _usage(spec, f"{name} takes parameters {allowed}")
        try:
            params[key] = kinds[key](value)
        except ValueError:
            raise _usage(spec, f"{key} must be a number, got {value!r}") from None
        if key == "blank" and params[key] < 0:
            raise _usage(spec, "the blank is a class index (>= 0)")
        if key in ("score", "iou", "nms") and not 0.0 < params[key] <= 1.0:
            raise _usage(spec, f"{key} must be in (0, 1]")
    return name, params


def check_metric(spec: str) -> str:
    """The spec, if it parses (UsageError otherwise): for config objects."""
    parse_metric(spec)
    return spec


def check_metrics(choices: Mapping[str, str]) -> None:
    """Every value of an output -> metric mapping parses (UsageError naming it otherwise)."""
    for spec in choices.values():
        check_metric(spec)


def metric_function(name: str) -> Callable[..., MetricResult]:
    """The function of a metric name (one of FIDELITY_METRICS)."""
    return _FUNCTIONS[name]


# Metrics whose reference side is worth making once for many candidates: name -> (reference,
# parameters) -> what the metric takes as ``prepared``.
_PREPARE: dict[str, Callable[..., object]] = {"dense": dense_reference}
# Metrics that take the caller's ``abs(r - g)`` as ``abs_error`` instead of computing it again.
_READS_ABS_ERROR = frozenset({"dense"})


def prepare_metric(name: str, params: Mapping[str, float | int], r: np.ndarray) -> object | None:
    """The metric's reference side on the samples-first reference ``r`` (None: the metric has
    none worth keeping), to pass to ``apply_metric`` as ``prepared`` for every candidate."""
    make = _PREPARE.get(name)
    return None if make is None else make(r, **params)


class MetricCannotRead(UsageError):
    """A chosen metric cannot read its output's shape. The message names the metric, the
    output and why; the API's entry points add the model file (stages.metric_errors_named)."""


def apply_metric(
    name: str,
    params: Mapping[str, float | int],
    r: np.ndarray,
    g: np.ndarray,
    output: str = "output",
    *,
    prepared: object | None = None,
    abs_error: np.ndarray | None = None,
) -> MetricResult:
    """The metric on samples-first arrays; UsageError when the output's shape cannot be read
    that way (a chosen metric on an output of another kind), NothingToCompare as the metric
    raises it. ``prepared``: ``prepare_metric(name, params, r)``, made once for many candidates.
    ``abs_error``: ``abs(r - g)`` when the caller has computed it, for the metrics that read it
    (``_READS_ABS_ERROR``); the others ignore it."""
    extra: dict[str, object] = {}
    if prepared is not None:
        extra["prepared"] = prepared
    if abs_error is not None and name in _READS_ABS_ERROR:
        extra["abs_error"] = abs_error
    try:
        return _FUNCTIONS[name](r, g, **params, **extra)
    except (ValueError, IndexError) as exc:
        raise MetricCannotRead(
            f"fidelity metric {name!r} cannot read {output!r} (shape {list(r.shape)}): {exc}"
        ) from None
