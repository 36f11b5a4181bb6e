"""One fidelity: the report's figures, the run's score and the search's trials agree, on exact
cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxprune
from onnxprune.fidelity import (
    cosine,
    fidelity_from_outputs,
    score_outputs,
    top1_agreement,
)
from onnxprune.sensitivity_analysis import TrialRunner

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _both(ref: list[list[float]], got: list[list[float]]) -> tuple[float, float]:
    """(the report's cosine, the search's score) of one output given as [samples, features]."""
    r, g = np.asarray(ref, np.float32), np.asarray(got, np.float32)
    (fid,) = fidelity_from_outputs(["y"], [[r]], [[g]], {"*": "cosine"})
    return fid.cosine, score_outputs(["y"], [r], [g], {"*": "cosine"})[0]


def test_an_all_zero_output_is_not_faithful() -> None:
    """The report said 1.0 here and the search 0.0: a zero vector has no direction, so it is
    unlike any nonzero one, and identical only to another zero vector."""
    assert _both([[1, 2, 3]], [[0, 0, 0]]) == (0.0, 0.0)
    assert _both([[0, 0, 0]], [[1, 2, 3]]) == (0.0, 0.0)
    assert _both([[0, 0, 0]], [[0, 0, 0]]) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("ref", "got", "want"),
    [
        ([[1, 2, 3]], [[2, 4, 6]], 1.0),  # same direction, any scale
        ([[1, 0]], [[0, 1]], 0.0),  # orthogonal
        ([[1, 2]], [[-1, -2]], -1.0),  # opposite
        ([[3, 4]], [[4, 3]], 24 / 25),
        ([[1, 2], [1, 0]], [[1, 2], [0, 1]], 0.5),  # mean over samples: 1 and 0
        ([[1, 2], [0, 0]], [[1, 2], [5, 5]], 0.5),  # a zero sample against a nonzero one counts 0
    ],
)
def test_cosine_exact_cases(ref: list[list[float]], got: list[list[float]], want: float) -> None:
    report, search = _both(ref, got)
    assert report == search
    assert report == pytest.approx(want, abs=1e-12)
    assert -1.0 <= report <= 1.0


def test_cosine_is_per_sample_over_all_other_axes() -> None:
    r = np.arange(1, 17, dtype=np.float64).reshape(2, 2, 2, 2)
    g = r.copy()
    g[1] = -g[1]
    assert cosine(r, g) == pytest.approx(0.0, abs=1e-12)  # +1 and -1
    assert cosine(r, r) == pytest.approx(1.0, abs=1e-12)


def test_top1_and_the_metric_of_each_output() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    got = np.array([[0.2, 0.8], [0.7, 0.3], [0.9, 0.1], [0.6, 0.4]], np.float32)
    assert top1_agreement(ref, got) == 0.75
    seq_ref = np.zeros((1, 3, 4), np.float32)
    seq_got = np.zeros((1, 3, 4), np.float32)
    seq_ref[0, :, 1] = 1
    seq_got[0, 0, 1] = seq_got[0, 1, 1] = seq_got[0, 2, 3] = 1  # 2 of 3 positions agree
    feature = np.ones((4, 8), np.float32)[:, :1]  # [N, 1]: one value, not class scores
    names = ["cls", "seq", "feat"]
    figures = fidelity_from_outputs(names, [[ref], [seq_ref], [feature]], [[got], [seq_got], [2 * feature]])
    by_name = {f.name: f for f in figures}
    assert [by_name[n].metric for n in names] == ["top1", "top1", "cosine"]
    assert by_name["cls"].top1_agreement == 0.75 and by_name["seq"].top1_agreement == pytest.approx(2 / 3)
    assert by_name["feat"].top1_agreement is None and by_name["feat"].cosine == 1.0
    assert by_name["feat"].max_abs_error == 1.0 and by_name["feat"].mean_abs_error == 1.0
    score, scores = score_outputs(names, [ref, seq_ref, feature], [got, seq_got, 2 * feature])
    assert [s.value for s in scores] == [f.score for f in figures] and score == pytest.approx(2 / 3)
    # Chosen cosine: the score follows the choice, the report still gives top-1 for class scores.
    (cls,) = fidelity_from_outputs(["cls"], [[ref]], [[got]], {"cls": "cosine"})
    assert cls.metric == "cosine" and cls.score == cls.cosine and cls.top1_agreement == 0.75


def test_feeds_are_concatenated_and_scalars_are_samples() -> None:
    """Per feed arrays (batch 1 and 2) are one set of samples; a scalar output is one sample."""
    r = [np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])]
    g = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 1.0]])]
    (fid,) = fidelity_from_outputs(["y"], [r], [g], {"*": "cosine"})
    assert fid.cosine == pytest.approx(2 / 3)
    (scalar,) = fidelity_from_outputs(
        ["s"], [[np.float32(2.0), np.float32(-1.0)]], [[np.float32(3.0), np.float32(1.0)]]
    )
    assert scalar.metric == "cosine" and scalar.cosine == 0.0 and scalar.max_abs_error == 2.0  # +1 and -1


def test_report_score_and_search_trial_agree(tmp_path: Path) -> None:
    """The report's per-output figures give its fidelity score, and the search's trial of the
    same removal on the same inputs measures the same fidelity."""
    model = FIXTURES / "digits_cnn.onnx"
    calib = str(FIXTURES / "digits_calibration.npz")
    r = onnxprune.prune(
        model, "l2", ratio=0.5, compensation="none", calibration=calib, verification_inputs=calib, calibration_limit=8
    )
    d = r.report.to_dict()
    assert r.report.fidelity and d["fidelity_score"] == min(f.score for f in r.report.fidelity)
    assert {f.name: f.score for f in r.report.fidelity} == {k: v["value"] for k, v in d["fidelity_metrics"].items()}
    assert d["fidelity_score"] < 0.999  # half of every layer removed: a real loss to compare
    data = np.load(calib)
    feeds = [{k: data[k][i : i + 1] for k in data.files} for i in range(8)]
    trial = TrialRunner(onnxprune.load(model), r.analysis, feeds).fidelity(r.plan.removed_groups, None)
    assert trial == pytest.approx(d["fidelity_score"], abs=1e-6)
