"""What a batch of other inputs is expected to score (fidelity_metrics.batch_prediction, the
report's generalisation.estimate.batch): known binomial answers, the union over several
outputs, the cap a recovered plan's cross-fitted estimate puts on it, and a run's report."""

from __future__ import annotations

import json
import re
from math import comb
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import run_cli
from judge_helpers import margin_classifier

import onnxprune
from onnxprune.cli_text import generalisation_lines
from onnxprune.config import PruneConfig
from onnxprune.errors import UsageError
from onnxprune.fidelity import OutputFidelity
from onnxprune.fidelity_metrics.batch_prediction import batch_reading, predict_batch
from onnxprune.render import to_markdown
from onnxprune.search_judgement import CrossFitted, SearchScore, search_score
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


def test_a_nan_estimate_is_a_typed_error() -> None:
    """A NaN estimate compares false everywhere, so no count was within the tail: predict_batch
    and batch_reading raised a bare IndexError (session 8 noted a ValueError from min() on an
    empty sequence, the next line). Now a UsageError naming it."""
    with pytest.raises(
        UsageError, match=r"^batch prediction: an estimate is NaN \(\[0\.9, nan\]\); each must be in \[0, 1\]$"
    ):
        predict_batch([0.9, float("nan")], 32, floor=0.95)
    with pytest.raises(
        UsageError, match=r"^batch prediction: an agreement is NaN \(\[nan\]\); each must be in \[0, 1\]$"
    ):
        batch_reading([float("nan")], 32, 0.95)


def _output(name: str, estimate: float) -> OutputFidelity:
    return OutputFidelity(name, 0.0, 0.0, 1.0, 1.0, "top1", 1.0, "", estimate=estimate, bound=estimate, confidence=0.95)


def test_a_recovered_plan_is_predicted_at_most_at_its_cross_fitted_estimate() -> None:
    """The delivered refit saw the calibration samples (its estimates are in-sample): no output
    is taken above the estimate the search saw cross-fitted."""
    outs = [_output("a", 0.999), _output("b", 0.97)]
    plain = _batch_prediction(outs, 32, 0.95, None)
    assert plain == predict_batch([0.999, 0.97], 32, floor=0.95)
    cross = CrossFitted(SearchScore(0.96, 1.0, None, 0.98, 0.96), 32)
    capped = _batch_prediction(outs, 32, 0.95, cross)
    assert capped == predict_batch([0.98, 0.97], 32, floor=0.95) and capped != plain


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


# -- --fidelity-batch: the search keeps a plan only if a batch of N other inputs reads >= the floor
# in at least --fidelity-confidence of such batches, the agreement at its bound ---------------------

# The margin classifier (judge_helpers) on 32 identical rows (5, 1, 100): class 0 = 105, class 1 = 1,
# margin 104; removing the 0.5-norm channel loses 100 of it on every row, no row flips. Every margin
# is 104, so the interpolated flip rate is 100 / 104 / 33 and, the rows being identical, every
# bootstrap resample gives the same figure: the bound is the estimate.
_P = 1 - 100 / (104 * 33)  # 0.97086


def _tail_below(n: int, ps: list[float], k: int) -> float:
    """P(the worst of outputs at agreements ``ps`` keeps fewer than k of n), tails added up."""
    return min(1.0, sum(_cdf(n, p, k - 1) for p in ps)) if k > 0 else 0.0


def test_batch_reading_known_answers() -> None:
    # 32 inputs at 0.97086, 95%: P(K < 29) = 0.014 <= 0.05 < P(K < 30) = 0.066: 29 of 32.
    assert _tail_below(32, [_P], 29) <= 0.05 < _tail_below(32, [_P], 30)
    assert batch_reading([_P], 32, 0.95) == 29 / 32
    # 8 inputs: all 8 kept with p^8 = 0.789 only, 7 or more with 0.979: 7 of 8.
    assert batch_reading([_P], 8, 0.95) == 7 / 8
    # Two outputs: their lower tails add up. At 0.96 a batch of 8 keeps fewer than 7 with 0.038
    # (7 of 8 holds), two such outputs with at most 0.076 (only 6 of 8 does).
    assert _tail_below(8, [0.96], 7) <= 0.05 < _tail_below(8, [0.96, 0.96], 7)
    assert batch_reading([0.96], 8, 0.95) == 7 / 8 and batch_reading([0.96, 0.96], 8, 0.95) == 6 / 8
    assert batch_reading([_P, 0.9], 32, 0.95) == 26 / 32  # P(K < 26) = 0.0359, P(K < 27) = 0.0947
    assert batch_reading([1.0], 32, 0.95) == 1.0 and batch_reading([0.0], 5, 0.95) == 0.0
    # Its meaning: reading >= F exactly when a batch reads >= F with at least the probability.
    for n in (1, 8, 20, 32):
        for p in (0.8, 0.9, 0.95, 0.97, 0.99, 0.999):
            for floor in (0.5, 0.85, 0.9, 0.95, 0.99):
                need = int(np.ceil(floor * n - 1e-9))
                holds = 1 - _tail_below(n, [p], need) >= 0.95
                assert (batch_reading([p], n, 0.95) >= floor) == holds, (n, p, floor)
    with pytest.raises(ValueError, match="at least one input and one agreement"):
        batch_reading([], 32, 0.95)


def test_search_score_caps_discrete_outputs_at_the_batch_reading() -> None:
    """The value the search compares with the floor: the bound 0.97086 alone; with a batch of 32
    at most 29/32, of 8 at most 7/8; a continuous output beside it keeps its worse half."""
    ref = np.tile(np.array([[105.0, 1.0]], np.float32), (32, 1))
    got = np.tile(np.array([[5.0, 1.0]], np.float32), (32, 1))
    plain = search_score(["y"], [ref], [got])
    assert plain.value == pytest.approx(_P, abs=1e-12) and plain.batch_reading is None
    assert search_score(["y"], [ref], [got], batch=32).value == 29 / 32
    eight = search_score(["y"], [ref], [got], batch=8)
    assert (eight.value, eight.batch_reading, eight.bound) == (7 / 8, 7 / 8, pytest.approx(_P, abs=1e-12))
    # A batch reading above the bound does not raise the value: the rule only adds a condition.
    same = search_score(["y"], [ref], [ref * np.float32(1.0)], batch=1)
    assert same.batch_reading == 1.0 and same.value == 1.0
    one = search_score(["y"], [ref], [got], batch=1)  # one input keeps its answer w.p. 0.97 >= 0.95
    assert one.batch_reading == 1.0 and one.value == pytest.approx(_P, abs=1e-12)
    # Continuous outputs only: nothing to read, the value is their worse half as without the rule.
    cos = {"*": "cosine"}
    halves = [([ref[:16]], [got[:16]]), ([ref[16:]], [got[16:]])]
    assert search_score(["y"], [ref], [got], halves, cos, batch=32) == search_score(["y"], [ref], [got], halves, cos)


def _identical_rows(tmp_path: Path) -> dict:
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.array([(5.0, 1.0, 100.0)] * 32, np.float32).reshape(32, 3, 1, 1))
    return {"calibration": str(calib), "verification_inputs": str(calib), "compensation": "none"}


def test_the_search_applies_the_batch_rule(tmp_path: Path) -> None:
    """At 0.95 the plan removing the low-norm channel is judged 0.97086 (kept); a batch of 32
    other inputs would read >= 0.95 (31 of 32) only with probability 0.76 at that agreement, so
    --fidelity-batch 32 refuses it. At 0.85 a batch of 8 reads >= 7/8 with 0.979: kept."""
    options = _identical_rows(tmp_path)
    plain = onnxprune.prune(margin_classifier(), "l2", min_fidelity=0.95, **options)
    assert plain.plan.removed_groups == (2,)
    assert "batch_rule" not in plain.report.to_dict()["generalisation"]
    refused = onnxprune.prune(margin_classifier(), "l2", min_fidelity=0.95, fidelity_batch=32, **options)
    assert refused.plan.removed_groups == ()
    kept = onnxprune.prune(margin_classifier(), "l2", min_fidelity=0.85, fidelity_batch=8, **options)
    assert kept.plan.removed_groups == (2,)
    d = kept.report.to_dict()
    rule = d["generalisation"]["batch_rule"]
    below = 1 - _P**8 - 8 * (1 - _P) * _P**7
    assert (rule["samples"], rule["floor"], rule["probability"], rule["reading"], rule["met"]) == (
        8,
        0.85,
        0.95,
        0.875,
        True,
    )
    assert rule["agreement"] == pytest.approx(_P, abs=1e-9) and rule["below_floor"] == pytest.approx(below, abs=1e-9)
    assert rule["outputs"] == [o["name"] for o in d["fidelity"]]
    line = (
        "--fidelity-batch 8: a batch of 8 other inputs reads at least 0.8750 (7 of 8) in 95% of such batches if the "
        f"agreement is at its bound {_P:.4f}; below the floor 0.85 in {below:.1%} of them: met"
    )
    assert generalisation_lines(d["generalisation"])[-1] == line
    assert f"| {line} | 8 | 0.8750 |" in to_markdown(d)


def test_a_model_without_discrete_outputs_is_told_the_rule_judged_no_discrete_output(tmp_path: Path) -> None:
    """Its continuous outputs are judged by the batch-mean rule for a batch of 32 instead (the
    calibration rows are identical, so every batch reads their mean: the same plan)."""
    options = {**_identical_rows(tmp_path), "min_fidelity": 0.95, "fidelity_metrics": {"*": "cosine"}}
    plain = onnxprune.prune(margin_classifier(), "l2", **options)
    ruled = onnxprune.prune(margin_classifier(), "l2", fidelity_batch=32, **options)
    assert ruled.plan.removed_groups == plain.plan.removed_groups
    note = next(n for n in ruled.plan.notes if n.startswith("--fidelity-batch"))
    assert note.startswith("--fidelity-batch 32 judged no top-1 / CTC / detection output (")
    assert note.endswith("judged by the predicted mean of a batch of 32 (the batch-mean rule)")
    assert ": cosine)" in note and not any(n.startswith("--fidelity-batch") for n in plain.plan.notes)
    rule = ruled.report.to_dict()["generalisation"]["batch_rule"]
    assert rule["outputs"] == [] and "judged nothing" in rule["what"] and "reading" not in rule
    mean = ruled.report.to_dict()["generalisation"]["batch_mean"]
    assert (mean["samples"], mean["calibration"], mean["met"]) == (32, 32, True)
    assert mean["bound"] == pytest.approx(mean["mean"], abs=1e-12)  # identical rows: every batch reads the mean


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_fidelity": 0.95, "fidelity_batch": 0}, "fidelity_batch must be a whole number of inputs >= 1, got 0"),
        (
            {"min_fidelity": 0.95, "fidelity_batch": 2.5},
            "fidelity_batch must be a whole number of inputs >= 1, got 2.5",
        ),
        ({"min_fidelity": 0.95, "fidelity_batch": True}, "fidelity_batch must be a whole number"),
        ({"ratio": 0.3, "fidelity_batch": 32}, "fidelity_batch judges the plans of the fidelity floor's search"),
        ({"min_fidelity": 0.95, "macs_target": 0.5, "fidelity_batch": 32}, "not macs_target"),
    ],
)
def test_fidelity_batch_refusals(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        PruneConfig(calibration="c.npz", **options)


def test_cli_fidelity_batch(tmp_path: Path) -> None:
    options = _identical_rows(tmp_path)
    model, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(margin_classifier(), model)
    args = [
        "prune",
        str(model),
        "-o",
        str(out),
        "--calibration",
        options["calibration"],
        "--inputs",
        options["calibration"],
    ]
    args += ["--compensation", "none", "--criterion", "l2"]
    bad = run_cli(*args, "--fidelity-batch", "32")
    assert bad.returncode == 2 and "--fidelity-batch judges the plans of the fidelity floor's search" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr and not out.exists()
    ok = run_cli(*args, "--min-fidelity", "0.95", "--fidelity-batch", "32", "--report", str(tmp_path / "r.json"))
    assert ok.returncode == 0, ok.stderr
    rule = json.loads((tmp_path / "r.json").read_text())["generalisation"]["batch_rule"]
    assert (rule["samples"], rule["reading"], rule["met"]) == (32, 1.0, True)  # nothing removed: 32 of 32
    assert "--fidelity-batch 32: a batch of 32 other inputs reads at least 1.0000 (32 of 32)" in ok.stdout


def test_recovered_trials_judge_by_the_batch_rule_too() -> None:
    """--reconstruct / --recalibrate plans are judged by ReconstructedTrials (cross-fitted): the
    same cap, on the cross-fitted bound, for the same plan and figures otherwise."""
    from test_reconstructed_trials_cache import _model

    from onnxprune.reconstruction_trials import ReconstructedTrials

    model = _model()
    x = np.random.default_rng(3).standard_normal((32, 1, 4, 3, 3)).astype(np.float32)
    feeds, top1 = [{"x": v} for v in x], {"*": "top1"}
    plain = ReconstructedTrials(model, onnxprune.analyze(model), feeds).judged([0], None, top1)
    ruled = ReconstructedTrials(model, onnxprune.analyze(model), feeds, batch=32).judged([0], None, top1)
    assert plain.batch_reading is None and plain.value == plain.bound
    reading = batch_reading([plain.bound], 32, 0.95)
    assert ruled.batch_reading == reading and ruled.value == min(plain.value, reading) < plain.value
    assert (ruled.pooled, ruled.bound, ruled.estimate) == (plain.pooled, plain.bound, plain.estimate)
