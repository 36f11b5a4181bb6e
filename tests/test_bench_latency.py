"""tools/bench_latency.py's matching of the --macs-target plan to the latency plan's measured
latency: the scan (secant/bisection on a fake, deterministic measurement) and the final run's
re-match among the scan's nearest plans. Nothing is timed here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_latency as bench  # noqa: E402


def _entry(target: float, gap: float) -> dict:
    return {"macs_target": target, "file": f"m{target}.onnx", "ab": {"gap": gap}}


def _fake(curve):
    """measure(t) for a MACs->latency-ratio curve, the latency plan at 0.70 in every run."""
    calls: list[float] = []

    def measure(t: float) -> dict:
        calls.append(t)
        return _entry(t, curve(t) - 0.70)

    return measure, calls


def test_scan_matches_a_steep_curve_within_tolerance():
    # steep near the goal (MobileNetV2-like: latency 0.63 at MACs 0.54, 0.79 at 0.71)
    measure, calls = _fake(lambda t: 0.63 + (t - 0.54) * 0.16 / 0.17)
    chosen = bench.matched_scan(0.70, 0.71, measure, steps=6)
    assert abs(chosen["ab"]["gap"]) <= bench.MATCH
    assert len(calls) <= 6
    assert calls[0] == pytest.approx(0.71)


def test_scan_keeps_the_closest_when_the_steps_run_out():
    measure, calls = _fake(lambda t: 0.85 + 0.0 * t)  # no MACs target reaches 0.70 (overhead-bound)
    chosen = bench.matched_scan(0.70, 0.11, measure, steps=3)
    assert len(calls) <= 3
    assert chosen["ab"]["gap"] == pytest.approx(0.15, abs=1e-12)
    assert chosen["macs_target"] == min(calls)  # equal gaps: the lowest target


def test_final_candidates_bracket_the_latency_plan():
    scan = [_entry(0.710, 0.113), _entry(0.543, -0.066), _entry(0.605, -0.038), _entry(0.687, 0.024)]
    got = [e["macs_target"] for e in bench.final_candidates(scan)]
    # the closest too slow (+0.024), the closest fast enough (-0.038), then the next closest (-0.066)
    assert got == [0.687, 0.605, 0.543]
    assert [e["macs_target"] for e in bench.final_candidates(scan, most=2)] == [0.687, 0.605]


def test_final_candidates_one_sided_scan():
    scan = [_entry(0.5, 0.02), _entry(0.4, 0.005), _entry(0.45, 0.01), _entry(0.3, 0.03)]
    assert [e["macs_target"] for e in bench.final_candidates(scan)] == [0.4, 0.45, 0.5]


def test_rematch_picks_the_closest_in_the_final_run():
    assert bench.rematch([0.757, 0.690, 0.655], 0.673) == 1  # 0.017 beats 0.018 and 0.084
    assert bench.rematch([0.700, 0.680], 0.690) == 1  # a tie: the faster plan
    assert bench.rematch([0.72], 0.60) == 0


def test_model_spec_reconstructed_rows():
    spec = bench.model_spec("pplcnet+rc")
    assert spec["reconstruct"] is True and spec["base"] == "pplcnet"
    assert spec["path"] == bench.MODELS["pplcnet"]["path"]
    assert "reconstruct" not in bench.model_spec("pplcnet")
    assert "reconstruct" not in bench.MODELS["pplcnet"]  # the table's spec is not changed
    names = bench.default_models()
    assert names.index("pplcnet+rc") == names.index("pplcnet") + 1
    assert names.index("digits+rc") == names.index("digits") + 1
    assert "malimg" not in names and "yolo26n+rc" not in names
