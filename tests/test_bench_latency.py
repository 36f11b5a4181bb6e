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
import bench_latency_scan as bench_scan  # noqa: E402


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
    chosen = bench_scan.matched_scan(0.70, 0.71, measure, steps=6)
    assert abs(chosen["ab"]["gap"]) <= bench_scan.MATCH
    assert len(calls) <= 6
    assert calls[0] == pytest.approx(0.71)


def test_scan_keeps_the_closest_when_the_steps_run_out():
    measure, calls = _fake(lambda t: 0.85 + 0.0 * t)  # no MACs target reaches 0.70 (overhead-bound)
    chosen = bench_scan.matched_scan(0.70, 0.11, measure, steps=3)
    assert len(calls) <= 3
    assert chosen["ab"]["gap"] == pytest.approx(0.15, abs=1e-12)
    assert chosen["macs_target"] == min(calls)  # equal gaps: the lowest target


def test_final_candidates_bracket_the_latency_plan():
    scan = [_entry(0.710, 0.113), _entry(0.543, -0.066), _entry(0.605, -0.038), _entry(0.687, 0.024)]
    got = [e["macs_target"] for e in bench_scan.final_candidates(scan)]
    # the closest too slow (+0.024), the closest fast enough (-0.038), then the next closest (-0.066)
    assert got == [0.687, 0.605, 0.543]
    assert [e["macs_target"] for e in bench_scan.final_candidates(scan, most=2)] == [0.687, 0.605]


def test_final_candidates_one_sided_scan():
    scan = [_entry(0.5, 0.02), _entry(0.4, 0.005), _entry(0.45, 0.01), _entry(0.3, 0.03)]
    assert [e["macs_target"] for e in bench_scan.final_candidates(scan)] == [0.4, 0.45, 0.5]


def test_rematch_picks_the_closest_in_the_final_run():
    assert bench_scan.rematch([0.757, 0.690, 0.655], 0.673) == 1  # 0.017 beats 0.018 and 0.084
    assert bench_scan.rematch([0.700, 0.680], 0.690) == 1  # a tie: the faster plan
    assert bench_scan.rematch([0.72], 0.60) == 0


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


def test_matched_macs_plan_records_every_plan_timed():
    measure, calls = _fake(lambda t: 0.63 + (t - 0.54) * 0.16 / 0.17)
    got = bench_scan.matched_macs_plan(0.70, 0.7104, measure, steps=6)
    assert [e["macs_target"] for e in got["macs_scan"]] == calls and calls[0] == pytest.approx(0.71)
    assert got["macs_plan"] in got["macs_scan"] and got["macs_plan_gap"] == got["macs_plan"]["ab"]["gap"]
    assert got["macs_plan_matched"] is True
    far, _ = _fake(lambda t: 0.85 + 0.0 * t)
    assert bench_scan.matched_macs_plan(0.70, 0.11, far, steps=2)["macs_plan_matched"] is False


def test_rematch_row_makes_the_closest_in_the_final_run_the_match():
    candidates = [_entry(0.687, 0.024), _entry(0.605, -0.038), _entry(0.543, -0.066)]
    row: dict = {"macs_plan": candidates[0]}
    assert bench_scan.rematch_row(row, candidates, [0.757, 0.690, 0.655], 0.673) == 1
    assert row["macs_plan"] is candidates[1] and row["macs_plan_matched"] is False  # 0.017 apart
    assert bench_scan.rematch_row(row, candidates, [0.757, 0.690, 0.676], 0.673) == 2
    assert row["macs_plan"] is candidates[2] and row["macs_plan_matched"] is True
