"""What a batch of other inputs is expected to score (fidelity_metrics.batch_prediction, the
report's generalisation.estimate.batch): known binomial answers, the union over several
outputs, the cap a recovered plan's cross-fitted estimate puts on it, and a run's report."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import pytest
from judge_helpers import margin_classifier

import onnxprune
from onnxprune.cli_text import generalisation_lines
from onnxprune.fidelity import CrossFitted, OutputFidelity, SearchScore
from onnxprune.fidelity_metrics.batch_prediction import predict_batch
from onnxprune.render import to_markdown
from onnxprune.stages.deliver import _batch_prediction


def _cdf(n: int, p: float, k: int) -> float:
    """P(K <= k) for K ~ Binomial(n, p), summed by hand."""
    return sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(0, k + 1))


def test_known_binomial_answers() -> None:
    # Four inputs at 0.5: P(K = 0..4) = 1, 4, 6, 4, 1 sixteenths. Central 80%: each tail <= 0.1.
    b = predict_batch([0.5], 4, level=0.8, floor=0.5)
    assert (b.low, b.high) == (1, 3)  # P(K < 1) = 1/16 <= 0.1 < P(K < 2) = 5/16; P(K > 3) = 1/16
    assert b.below_floor == pytest.approx(5 / 16, abs=1e-12)  # K / 4 < 0.5: K <= 1
    assert predict_batch([0.5], 4, level=0.8, floor=0.75).below_floor == pytest.approx(11 / 16, abs=1e-12)
    # Two outputs: the worst output's score is below k if either is, so their tails add up.
    two = predict_batch([0.5, 0.5], 4, level=0.8, floor=0.5)
    assert (two.low, two.high, two.below_floor) == (0, 3, pytest.approx(10 / 16, abs=1e-12))
    mixed = predict_batch([0.9, 0.5], 4, level=0.8, floor=0.5)
    assert mixed.below_floor == pytest.approx(5 / 16 + 0.1**4 + 4 * 0.9 * 0.1**3, abs=1e-12)
    assert mixed.to_dict()["estimate"] == 0.5 and mixed.to_dict()["outputs"] == 2
    # Certain agreement: every batch keeps every answer.
    sure = predict_batch([1.0], 32, floor=0.99)
    assert (sure.low, sure.high, sure.below_floor) == (32, 32, 0.0)
    assert predict_batch([1.0], 32).below_floor is None  # no floor, no chance to show


def test_the_captcha_crnn_plan_at_its_estimate() -> None:
    """CRNN `contribution` at 0.95: estimated 0.978, measured 0.938 on 32 held-out captchas (2
    lost) and 0.979 on 96 more. A batch of 32 at 0.978: 2 or more lost in 15.6% of batches."""
    p, n = 0.978, 32
    b = predict_batch([p], n, floor=0.95)
    assert b.below_floor == pytest.approx(1 - p**32 - 32 * (1 - p) * p**31, abs=1e-12)
    assert round(b.below_floor, 3) == 0.156
    # 29-32 of 32: P(K <= 28) = 0.005 <= 0.025 < P(K <= 29) = 0.033; P(K > 32) = 0.
    assert _cdf(n, p, 28) <= 0.025 < _cdf(n, p, 29) and (b.low, b.high) == (29, 32)
    d = b.to_dict()
    assert (d["low"], d["high"], d["low_inputs"], d["level"]) == (29 / 32, 1.0, 29, 0.95)
    # What it says is what batches do: 200,000 simulated batches of 32 inputs.
    kept = np.random.default_rng(0).binomial(n, p, 200_000)
    assert np.mean(kept < 31) == pytest.approx(b.below_floor, abs=0.003)
    assert np.mean(kept < b.low) <= 0.025 and np.mean(kept > b.high) == 0.0


def test_a_floor_at_a_whole_count_is_not_moved_by_rounding() -> None:
    """0.95 x 20 is 19.000000000000004 in floating point: a batch of 20 is below 0.95 with 18
    or fewer kept, not 19."""
    b = predict_batch([0.9], 20, floor=0.95)
    assert b.below_floor == pytest.approx(_cdf(20, 0.9, 18), abs=1e-12)
    with pytest.raises(ValueError, match="at least one input and one estimate"):
        predict_batch([], 32)
    with pytest.raises(ValueError, match="at least one input and one estimate"):
        predict_batch([0.9], 0)


def _output(name: str, estimate: float) -> OutputFidelity:
    return OutputFidelity(name, 0.0, 0.0, 1.0, 1.0, "top1", 1.0, "", estimate=estimate, bound=estimate, confidence=0.95)


def test_a_recovered_plan_is_predicted_at_most_at_its_cross_fitted_estimate() -> None:
    """The delivered refit saw the calibration samples (its estimates are in-sample): no output
    is taken above the estimate the search saw cross-fitted."""
    outs = [_output("a", 0.999), _output("b", 0.97)]
    plain = _batch_prediction(outs, 32, 0.95, None)
    assert plain == predict_batch([0.999, 0.97], 32, floor=0.95).to_dict()
    cross = CrossFitted(SearchScore(0.96, 1.0, None, 0.98, 0.96), 32)
    capped = _batch_prediction(outs, 32, 0.95, cross)
    assert capped == predict_batch([0.98, 0.97], 32, floor=0.95).to_dict() and capped != plain


def test_a_runs_report_predicts_a_batch_like_its_evaluation_samples(tmp_path: Path) -> None:
    """The margin classifier (judge_helpers) at 0.95, judged by the point estimate: one flip in 32
    calibration samples kept, estimate 1 - (1 + 0.05 / 4.05) / 33 = 0.9693. A batch of 32 other
    inputs: below 0.95 (2 or more lost) with probability 1 - p^32 - 32 (1 - p) p^31."""
    rows = np.array([(1.0, 1.05, 0.1)] + [(5.0, 1.0, 0.1)] * 31, np.float32).reshape(32, 3, 1, 1)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=rows)
    result = onnxprune.prune(
        margin_classifier(),
        "l2",
        calibration=str(calib),
        verification_inputs=str(calib),
        compensation="none",
        min_fidelity=0.95,
        fidelity_confidence=0.5,
    )
    g = result.report.to_dict()["generalisation"]
    p = 1 - (1 + 0.05 / 4.05) / 33
    batch = g["estimate"]["batch"]
    assert batch["estimate"] == pytest.approx(p, abs=1e-6) == g["estimate"]["fidelity"]
    assert (batch["samples"], batch["low_inputs"], batch["high_inputs"], batch["floor"]) == (32, 29, 32, 0.95)
    assert batch["below_floor"] == pytest.approx(1 - p**32 - 32 * (1 - p) * p**31, abs=1e-6)
    line = generalisation_lines(g)[-1]
    assert line == (
        "expected on 32 other inputs: 0.9062-1.0000 (29-32 of 32 inputs keeping their answers) in 95% of such "
        "batches, if the estimate 0.9693 is right (binomial); below the floor 0.95 in 26% of such batches"
    )
    assert f"| {line} | 32 | 0.9062-1.0000 |" in to_markdown(result.report.to_dict())
    # No floor (a ratio chose the plan): the interval without a chance below it.
    by_ratio = onnxprune.prune(
        margin_classifier(),
        "l2",
        calibration=str(calib),
        verification_inputs=str(calib),
        compensation="none",
        ratio=0.34,
    )
    unfloored = by_ratio.report.to_dict()["generalisation"]["estimate"]["batch"]
    assert unfloored["floor"] is None and unfloored["below_floor"] is None
    assert "below the floor" not in generalisation_lines(by_ratio.report.to_dict()["generalisation"])[-1]
