"""With --latency-target, a fidelity floor and --reconstruct, the planner's floor judges plans
cross-fitted (latency.md: as the --min-fidelity search does); the delivered model is refitted on
all the calibration samples, so the report shows the cross-fitted figure beside the in-sample
one, as the --min-fidelity search's report does. A fake timer: nothing is timed."""

from __future__ import annotations

from pathlib import Path

from test_latency_recovered import _prune
from test_sensitivity import _calib

from onnxprune.cli_text import generalisation_lines


def test_the_latency_floor_reports_the_cross_fitted_value_it_judged(tmp_path: Path) -> None:
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    rec = _prune(calib, reconstruct=True).to_dict()
    assert rec["latency"]["limited_by_constraint"] and rec["channels_removed"] == 1
    g = rec["generalisation"]
    cross = g["cross_fitted"]
    # the floor's own figure for the delivered plan: the cross-fitted fidelity, exactly
    assert cross["fidelity"] == rec["latency"]["constraint_value"]
    assert cross["samples"] == g["calibration"]["samples"] == 24
    assert "fidelity cross-fitted (what the search judged)" in "\n".join(generalisation_lines(g))


def test_no_cross_fitted_value_without_recovery(tmp_path: Path) -> None:
    calib = _calib(tmp_path, (3, 6, 6), n=32)
    plain = _prune(calib).to_dict()
    assert "cross_fitted" not in (plain.get("generalisation") or {})
