"""Latency measured on the machine: per-unit latency tables (fitted, step-aware, cached) and
interleaved A/B measurement. OpenVINO and onnxruntime are imported only when timing.

``build_table(model, settings)`` measures (or reads from the cache) a ``LatencyTable``;
``measure_ab(original, candidate, settings)`` times two whole models against each other,
``measure_models([original, ...], settings)`` any number against the first (the same code).
Unit names are ``sensitivity_analysis.find_units``' (a unit's first layer). Names are
imported on first use (PEP 562), so a cache hit does not load the analysis.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKENDS": "table",
    "HINTS": "table",
    "PRECISIONS": "table",
    "LatencySettings": "table",
    "LatencyTable": "table",
    "UnitLatency": "table",
    "detect_step": "fit",
    "build_table": "measure",
    "measurement_counts": "measure",
    "ABResult": "ab",
    "measure_ab": "ab",
    "Timings": "ab",
    "measure_models": "ab",
    "RuntimeTimer": "timers",
    "Timed": "timers",
    "Timer": "timers",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxprune.latency' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
