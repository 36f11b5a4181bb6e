"""Latency measured on the machine: per-unit latency tables (fitted, step-aware, cached) and
interleaved A/B measurement. OpenVINO and onnxruntime are imported only when timing."""

from __future__ import annotations

from .fit import detect_step
from .table import BACKENDS, HINTS, PRECISIONS, LatencySettings, LatencyTable, UnitLatency

__all__ = ["BACKENDS", "HINTS", "PRECISIONS", "LatencySettings", "LatencyTable", "UnitLatency", "detect_step"]
