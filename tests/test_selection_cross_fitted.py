"""A data criterion chooses which channels go from the calibration activations, so the
``--min-fidelity`` search judges each half of the calibration samples by the plan the criterion
chose on the other half (selection_trials.SelectionTrials), as it judges a refit with
``--reconstruct``. Known answers on a two-channel graph whose halves disagree about which
channel is harmless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.cli_text import generalisation_lines
from onnxprune.fidelity_metrics.batch_mean import batch_mean_bound
from onnxprune.selection_trials import fold_plan
from onnxprune.sensitivity_analysis import Unit
from onnxprune.testing import GraphBuilder

COSINE = {"*": "cosine"}
S2 = np.sqrt(2.0)
# Half A (samples 0-3): channel 0 is 1 throughout, channel 1 alternates 0.5 / 1.5.
# Half B (samples 4-7): channel 0 alternates 0 / 2, channel 1 is 1 throughout.
X = np.array([[1, 0.5], [1, 1.5], [1, 0.5], [1, 1.5], [0, 1], [2, 1], [0, 1], [2, 1]], np.float32)
# All 8 samples: channel 1 varies less (variance 0.125 vs 0.5), so contribution removes it,
# replaced by its mean 1: half A's samples become (1, 1), half B's stay exact.
IN_SAMPLE_A = (1.5 / (np.sqrt(1.25) * S2) + 2.5 / (np.sqrt(3.25) * S2)) / 2  # 0.9647
# Cross-fitted: half A judged by B's choice (channel 1 constant there: removed, B's mean 1), as
# in-sample; half B by A's choice (channel 0 constant there: removed, A's mean 1), so B's
# samples (0, 1) and (2, 1) become (1, 1).
CROSS_B = (1 / S2 + 3 / (np.sqrt(5.0) * S2)) / 2  # 0.8279


def _identity_pair() -> onnx.ModelProto:
    """x -> 1x1 Conv (identity) -> 1x1 Conv (identity): the first conv's 2 channels are the
    unit, read by the second (compensation folds a removed channel's mean into its bias)."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [None, 2, 1, 1])
    eye = np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1)
    y = b.conv(x, 2, k=1, weight=b.const(eye, "W1"), bias=np.zeros(2, np.float32))
    b.output(b.conv(y, 2, k=1, weight=b.const(eye, "W2"), bias=np.zeros(2, np.float32)))
    return b.build()


def _files(tmp_path: Path) -> tuple[str, str]:
    cal, verify = tmp_path / "cal.npz", tmp_path / "verify.npz"
    np.savez(cal, x=X.reshape(8, 2, 1, 1))
    np.savez(verify, x=X[[1, 5]].reshape(2, 2, 1, 1))
    return str(cal), str(verify)


def _prune(tmp_path: Path, floor: float) -> onnxprune.PruneResult:
    cal, verify = _files(tmp_path)
    return onnxprune.prune(
        _identity_pair(),
        "contribution",
        min_fidelity=floor,
        calibration=cal,
        verification_inputs=verify,
        fidelity_metrics=COSINE,
    )


def test_the_plan_judged_in_sample_is_refused_cross_fitted(tmp_path: Path) -> None:
    """In-sample the plan's worse half is A at 0.9647 >= 0.95 (it was kept before); each half
    judged by the other half's choice, B falls to 0.8279: nothing is removed."""
    r = _prune(tmp_path, 0.95)
    assert r.plan.removed_groups == ()
    assert r.report.macs_after == r.report.macs_before


def test_the_cross_fitted_value_is_reported(tmp_path: Path) -> None:
    """At a floor of 0.76 the plan is kept: the channels delivered are the ones the criterion
    chose on all the samples (channel 1), and the report gives the value the search judged:
    the batch-mean bound of the cross-fitted per-sample cosines (below the worse half)."""
    r = _prune(tmp_path, 0.76)
    analysis = onnxprune.analyze(_identity_pair())
    conv1 = analysis.sources[0]
    assert [int(g) for g in r.plan.removed_groups] == [int(analysis.roots(conv1.ids)[1])]
    g = r.report.to_dict()["generalisation"]
    cross = g["cross_fitted"]
    assert cross["samples"] == 8
    # Each sample's cosine cross-fitted: half A's as in-sample, half B's by A's choice.
    per_sample = [1.5 / (np.sqrt(1.25) * S2), 2.5 / (np.sqrt(3.25) * S2)] * 2 + [1 / S2, 3 / (np.sqrt(5.0) * S2)] * 2
    bound = batch_mean_bound([per_sample], 8, 0.95)
    assert 0.76 < bound < CROSS_B
    assert cross["batch_mean"] == pytest.approx(bound, abs=1e-6)
    assert cross["judged"] == pytest.approx(bound, abs=1e-6)  # below the worse half, B
    assert cross["worst_half"] == pytest.approx(CROSS_B, abs=1e-6)
    assert cross["fidelity"] == pytest.approx((IN_SAMPLE_A + CROSS_B) / 2, abs=1e-6)
    assert g["calibration"]["fidelity"] == pytest.approx((IN_SAMPLE_A + 1) / 2, abs=1e-6)  # in-sample
    text = "\n".join(generalisation_lines(g))
    assert "each scored by the plan the criterion chose on the other half" in text
    assert "in-sample: the channels were chosen on them" in text


def test_fold_plan_removes_as_many_channels_ranked_by_the_folds_scores() -> None:
    analysis = onnxprune.analyze(_identity_pair())
    g0, g1 = (int(r) for r in analysis.roots(analysis.sources[0].ids))
    unit = Unit("conv", (analysis.sources[0].node,), (g1, g0), 2)
    assert fold_plan(analysis, [unit], {g1}, {g0: 0.0, g1: 2.0}) == {g0}
    assert fold_plan(analysis, [unit], {g1}, {g0: 2.0, g1: 0.0}) == {g1}
    assert fold_plan(analysis, [unit], {g1}, {g0: np.nan, g1: 3.0}) == {g1}  # NaN ranks last
    assert fold_plan(analysis, [unit], set(), {g0: 0.0, g1: 2.0}) == set()
