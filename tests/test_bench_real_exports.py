"""tools/bench_real_exports.py's verification column: what was checked, for float and quantized rows."""

from __future__ import annotations

import sys
from pathlib import Path

from test_quantized_verification import qdq_conv_model

import onnxprune

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_real_exports as bench  # noqa: E402
import real_exports_report as report  # noqa: E402


def test_a_quantized_row_shows_its_rule_limit_and_samples() -> None:
    """A QDQ model's report, summarised as the benchmark records it: the rule, and on both
    paths the worst difference against the float limit and the samples past it (not "pass")."""
    result = onnxprune.prune(qdq_conv_model(), "zero")
    row = {"exit": 0, **bench._summary(result.report.to_dict())}
    q = row["quantized"]
    assert q["form"] == "QDQ" and len(q["paths"]) == 2
    off, on = q["paths"]
    text = report._fmt_ver(row)
    assert text == (
        "pass, rounding rule (QDQ; at most 25% of the samples past the float limit, each by at most 0.02 x scale): "
        f"optimisations off {off['max_abs_diff']:.1e} vs {off['float_limit']:.1e}, 0/8 samples past; "
        f"optimisations on {on['max_abs_diff']:.1e} vs {on['float_limit']:.1e}, 0/8 samples past"
    )
    assert 0 < off["float_limit"] == on["float_limit"] < 1e-3  # 1e-5 x a scale of order 1
    # A float row keeps its noise floor; without one, its limit and why it has none.
    assert report._fmt_ver({"verified": True, "max_abs_diff": 1e-6, "noise_floor": 2e-7, "runtime": "ort"}) == (
        "pass 1.0e-06/2.0e-07 (ort)"
    )
    missing = {
        "verified": False,
        "max_abs_diff": 0.5,
        "noise_floor": None,
        "limit": 1e-5,
        "noise_runtime": "not measured: x|y",
    }
    assert report._fmt_ver(missing) == "**FAIL** 5.0e-01 vs limit 1.0e-05 (not measured: x\\|y)"
    measured = {**missing, "verified": True, "max_abs_diff": 0.0, "noise_runtime": "onnxruntime, optimisations on"}
    assert report._fmt_ver(measured) == "pass 0.0e+00 vs limit 1.0e-05 (no noise floor for this output)"
