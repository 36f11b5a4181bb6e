"""The lower confidence bound the search judges top-1 / CTC outputs by
(fidelity_metrics.unseen_bound): known answers from the binomial law of the resampled flips, the
bound's behaviour in n and in the confidence, and a search that keeps a plan with one flip in 32
under the point estimate and refuses it under the bound."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import run_cli
from judge_helpers import margin_classifier

import onnxprune
from onnxprune.fidelity_metrics.unseen import _interpolated_cdf, flip_rate
from onnxprune.fidelity_metrics.unseen_bound import bootstrap_bound, interpolated_cdf_rows, unseen


def _tail(n: int, p: float, k: int) -> float:
    """P(K >= k) for K ~ Binomial(n, p)."""
    return sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_batched_distribution_function_matches_the_one_row_version() -> None:
    rng = np.random.default_rng(3)
    margins = rng.exponential(1.0, (40, 20))
    margins[rng.random((40, 20)) < 0.1] = np.inf  # CTC strings no step can change
    margins[3] = np.inf  # a row without a finite margin
    margins[5, :6] = margins[5, 6]  # ties
    x = rng.exponential(0.5, (40, 30))
    x[5, :3] = margins[5, 6]  # points equal to margins
    x[7, :4] = -1.0
    x[9, :20] = margins[9]
    want = np.stack([_interpolated_cdf(margins[i], x[i]) for i in range(40)])
    assert np.array_equal(interpolated_cdf_rows(margins, x), want)


def test_one_flip_in_32_is_bounded_by_the_binomial_spread_of_the_flips() -> None:
    """Equal margins, no loss but one flipped sample (loss past every margin): the estimate is
    the agreement, 31/32. Resampled, the flips are K ~ Binomial(32, 1/32): P(K >= 3) = 7.7%
    >= 5% > P(K >= 4) = 1.7%, so the 95% bound is 29/32: 2/32 below the point estimate."""
    assert _tail(32, 1 / 32, 3) > 0.06 and _tail(32, 1 / 32, 4) < 0.03  # far from 5%: no Monte Carlo luck
    margins, losses, agree = np.ones((32, 1)), np.zeros((32, 1)), np.ones(32)
    losses[0], agree[0] = 2.0, 0.0
    u = bootstrap_bound(margins, losses, agree)
    assert u.estimate == pytest.approx(31 / 32) and u.bound == pytest.approx(29 / 32)
    # At 0.5 the judge is the point estimate, and the same draws give the same bound.
    assert bootstrap_bound(margins, losses, agree, 0.5).bound == pytest.approx(31 / 32)
    assert bootstrap_bound(margins, losses, agree) == u


def test_ctc_one_changed_string_in_32() -> None:
    """32 strings "ab" (path a - b, blank 0, every step won by 5); the candidate changes one
    string's first step to b ("bb" -> "b"): the same known answer as top-1's."""
    ref = np.zeros((32, 3, 3))
    ref[:, 0, 1] = ref[:, 1, 0] = ref[:, 2, 2] = 5.0
    got = ref.copy()
    got[0, 0] = [0.0, 0.0, 5.0]
    u = unseen("ctc", {"blank": 0}, ref, got)
    assert u is not None and u.estimate == pytest.approx(31 / 32) and u.bound == pytest.approx(29 / 32)
    assert unseen("cosine", {}, ref, got) is None


def test_a_ctc_string_whose_closest_step_gained_counts_its_change_by_size() -> None:
    """32 strings "ab" whose first step wins by 1, 1.125, ..., 4.875 (the other steps by 5);
    the candidate raises string 0's first step by 2. Same strings, but the change counts by its
    size: F(2) over the margins is (8 + 1) / 33 (8 margins below 2, interpolated to the 9th), so
    the estimate is 1 - (9 / 33) / 32 (signed, it was 1: a gain flips nothing)."""
    ref = np.zeros((32, 3, 3))
    ref[:, 1, 0] = ref[:, 2, 2] = 5.0
    ref[:, 0, 1] = 1.0 + 0.125 * np.arange(32)
    got = ref.copy()
    got[0, 0, 1] += 2.0
    u = unseen("ctc", {"blank": 0}, ref, got, confidence=0.5)
    assert u is not None and u.estimate == pytest.approx(1 - 9 / 33 / 32, abs=1e-12)
    assert u.bound == pytest.approx(u.estimate, abs=1e-12)  # at 0.5: the point value


def _replicated(copies: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16 (margin, loss) pairs, no flip, ``copies`` times: the same distribution, more samples."""
    m = np.tile(np.linspace(0.5, 8.0, 16), copies)[:, None]
    d = np.tile(np.linspace(0.6, 0.05, 16), copies)[:, None]
    return m, d, np.ones(len(m))


def test_the_bound_tightens_as_samples_grow_and_loosens_with_confidence() -> None:
    runs = [bootstrap_bound(*_replicated(c)) for c in (1, 4, 16)]
    for u, (m, d, _) in zip(runs, (_replicated(c) for c in (1, 4, 16))):
        assert u.estimate == pytest.approx(1.0 - flip_rate(m, d))  # the point estimate is unseen's
        assert u.bound < u.estimate
    gaps = [u.estimate - u.bound for u in runs]
    assert runs[0].bound < runs[1].bound < runs[2].bound
    # The gap shrinks like the standard error, 1/sqrt(n): about half per 4 times the samples.
    assert 0.3 < gaps[1] / gaps[0] < 0.7 and 0.3 < gaps[2] / gaps[1] < 0.7
    levels = [bootstrap_bound(*_replicated(2), c).bound for c in (0.5, 0.8, 0.9, 0.95, 0.99)]
    assert levels == sorted(levels, reverse=True) and len(set(levels)) == 5


def test_a_plan_with_one_flip_in_32_holds_095_only_under_the_point_estimate(tmp_path: Path) -> None:
    """31 samples far from a tie (margin 4.1, loss 0.1) and one near one (margin 0.05, loss
    0.1: it flips). Point judge: agreement 31/32 = 0.969, estimate 1 - (1 + 0.05 / 4.05) / 33
    = 0.969: kept at 0.95. The bound at 0.95: resamples with 3 or more copies of the flip (7.7%)
    agree on at most 29/32 = 0.906: refused."""
    rows = np.array([(1.0, 1.05, 0.1)] + [(5.0, 1.0, 0.1)] * 31, np.float32).reshape(32, 3, 1, 1)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=rows)
    options = {
        "calibration": str(calib),
        "verification_inputs": str(calib),
        "compensation": "none",
        "min_fidelity": 0.95,
    }
    point = onnxprune.prune(margin_classifier(), "l2", fidelity_confidence=0.5, **options)
    assert len(point.plan.removed_groups) == 1 and point.report.fidelity_score == pytest.approx(31 / 32)
    est = point.report.to_dict()["generalisation"]["estimate"]
    assert est["fidelity"] == pytest.approx(1 - (1 + 0.05 / 4.05) / 33, abs=1e-6) and est["confidence"] == 0.5
    assert est["bound"] == pytest.approx(31 / 32)  # min(agreement 31/32, estimate 0.9693)
    bounded = onnxprune.prune(margin_classifier(), "l2", **options)
    assert bounded.plan.removed_groups == () and bounded.report.fidelity_score == 1.0


def test_cli_fidelity_confidence(tmp_path: Path) -> None:
    rows = np.array([(1.0, 1.05, 0.1)] + [(5.0, 1.0, 0.1)] * 31, np.float32).reshape(32, 3, 1, 1)
    calib, model, out = tmp_path / "c.npz", tmp_path / "m.onnx", tmp_path / "o.onnx"
    np.savez(calib, x=rows)
    onnx.save(margin_classifier(), model)
    args = ["prune", str(model), "-o", str(out), "--calibration", str(calib), "--inputs", str(calib)]
    args += ["--min-fidelity", "0.95", "--compensation", "none"]
    bad = run_cli(*args, "--fidelity-confidence", "1")
    assert bad.returncode == 2 and "--fidelity-confidence 1: a confidence level, a fraction in [0.5, 1)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr and not out.exists()
    ok = run_cli(*args, "--fidelity-confidence", "0.5", "--markdown", str(tmp_path / "r.md"))
    assert ok.returncode == 0, ok.stderr
    assert "| lower bound at confidence 0.5 (what the search judged) | 32 | 0.9688 |" in (tmp_path / "r.md").read_text()
    assert "at least 0.9688 at confidence 0.5 (what the search judged)" in ok.stdout
