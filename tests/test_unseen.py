"""The estimate of agreement on unseen inputs (fidelity_metrics.unseen) and the search that
judges discrete metrics by it: known answers on tiny graphs and arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from judge_helpers import margin_classifier

import onnxprune
from onnxprune.fidelity_metrics.unseen import ctc_margins, estimate_agreement, flip_rate, top1_margins
from onnxprune.sensitivity_analysis import TrialRunner


def _feeds(*rows: tuple[float, float, float]) -> list[dict[str, np.ndarray]]:
    return [{"x": np.array(r, np.float32).reshape(1, 3, 1, 1)} for r in rows]


NEAR = (1.0, 0.95, 0.1)  # class 0 by 1.1 - 0.95 = 0.15; without x2 by 0.05: no flip, a loss of 0.1
FAR = (5.0, 1.0, 0.1)  # class 0 by 4.1; the same loss of 0.1


def _judged(feeds: list[dict[str, np.ndarray]]):
    model = margin_classifier()
    analysis = onnxprune.analyze(model)
    conv = next(s for s in analysis.sources if s.op == "Conv")
    third = int(analysis.roots(conv.ids)[2])
    return TrialRunner(model, analysis, feeds).judged([third], None)


def test_near_ties_are_flagged_before_they_flip() -> None:
    judged = _judged(_feeds(*[NEAR] * 4, *[FAR] * 4))
    # No answer changes on these samples (the old judge, the worse half, saw 1.0)...
    assert judged.pooled == 1.0 and judged.worst_half == 1.0
    # ...but every loss (0.1) is 2/3 of the smallest margin (0.15): margins' distribution
    # function through (0, 0) and (0.15, 1/9): P(M <= 0.1) = (0.1 / 0.15) / 9 for every loss.
    assert judged.estimate == pytest.approx(1 - (0.1 / 0.15) / 9, abs=1e-6)
    # The judge (a lower bound, fidelity_metrics.unseen_bound) cannot do better than the worst
    # resample, which here is the estimate itself (a resample with a NEAR sample).
    assert judged.value == judged.bound == pytest.approx(judged.estimate, abs=1e-6) and judged.value < 0.95


def test_a_loss_far_from_every_margin_is_not_flagged() -> None:
    judged = _judged(_feeds(*[FAR] * 8))
    assert judged.pooled == 1.0
    assert judged.estimate == pytest.approx(1 - (0.1 / 4.1) / 9, abs=1e-6) and judged.value > 0.997


def _calibration(tmp_path: Path, row: tuple[float, float, float], n: int = 8) -> str:
    path = tmp_path / "c.npz"
    np.savez(path, x=np.tile(np.array(row, np.float32).reshape(1, 3, 1, 1), (n, 1, 1, 1)))
    return str(path)


@pytest.mark.parametrize(("row", "floor", "removed"), [(NEAR, 0.95, 0), (FAR, 0.99, 1)])
def test_the_search_keeps_near_ties(tmp_path: Path, row: tuple, floor: float, removed: int) -> None:
    calib = _calibration(tmp_path, row)
    options = {"calibration": calib, "verification_inputs": calib, "compensation": "none"}
    r = onnxprune.prune(margin_classifier(), "l2", min_fidelity=floor, **options)
    assert len(r.plan.removed_groups) == removed
    assert r.report.fidelity_score == 1.0  # not one answer changes either way


def test_095_and_099_are_different_targets(tmp_path: Path) -> None:
    """Margin 0.37, loss 0.1 on 8 samples: the estimate is 1 - (0.1 / 0.37) / 9 = 0.970, so a
    plan removing the channel holds 0.95 and not 0.99 (with no flip on the samples, both
    targets were "no flip" before)."""
    calib = _calibration(tmp_path, (1.0, 0.73, 0.1))
    options = {"calibration": calib, "verification_inputs": calib, "compensation": "none"}
    at95 = onnxprune.prune(margin_classifier(), "l2", min_fidelity=0.95, **options)
    at99 = onnxprune.prune(margin_classifier(), "l2", min_fidelity=0.99, **options)
    assert len(at95.plan.removed_groups) == 1 and at99.plan.removed_groups == ()
    est = at95.report.to_dict()["generalisation"]["estimate"]
    assert est["fidelity"] == pytest.approx(1 - (0.1 / 0.37) / 9, abs=1e-6) and est["samples"] == 8


def test_top1_margins_read_probabilities_as_log_probabilities() -> None:
    ref = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    got = np.array([[0.5, 0.4, 0.1], [0.1, 0.8, 0.1]])
    m, d = top1_margins(ref, got)
    assert m == pytest.approx([np.log(2), np.log(8)])
    assert d == pytest.approx([np.log(2) - np.log(1.25), np.log(8) - np.log(1 / 8)])
    # The second sample flipped (its loss passes its own margin); on logits the same margins:
    assert top1_margins(np.log(ref) + 3.0, np.log(got) - 1.0)[0] == pytest.approx(m)
    assert flip_rate(np.array([1.0, 2.0]), np.array([0.0, -1.0])) == 0.0  # no loss, no flip
    assert flip_rate(np.array([1.0, 2.0]), np.array([2.5, 2.5])) == 1.0  # past every margin


def _ctc(path: list[int], near: dict[int, tuple[int, float]], classes: int = 4) -> np.ndarray:
    """Scores [1, T, classes]: the path's class 5 at every step, except where ``near`` gives a
    rival class within a margin at that step."""
    s = np.zeros((1, len(path), classes))
    for t, c in enumerate(path):
        s[0, t, c] = 5.0
        if t in near:
            k, margin = near[t]
            s[0, t, k] = 5.0 - margin
    return s


def test_ctc_strings_margin_is_their_closest_string_changing_step() -> None:
    # Path a a - b (blank 0, a = 1, b = 2) decodes to "ab". Step 1 turning blank (a - - b) or
    # step 2 turning a (a a a b) keeps "ab": those near rivals do not count, the next rival
    # of every step is a zero score (margin 5). Step 0 turning b (b a - b: "bab") counts.
    harmless = _ctc([1, 1, 0, 2], {1: (0, 0.1), 2: (1, 0.1)})
    assert ctc_margins(harmless, harmless)[0] == pytest.approx([5.0])
    near = _ctc([1, 1, 0, 2], {0: (2, 0.1)})
    m, d = ctc_margins(near, near)
    assert m == pytest.approx([0.1]) and d == pytest.approx([0.0])
    # A candidate shrinking that margin to 0.05 (no flip yet) lost 0.05: one string, margins'
    # distribution through (0, 0) and (0.1, 1/2): 1 - 0.25.
    closer = _ctc([1, 1, 0, 2], {0: (2, 0.05)})
    assert ctc_margins(near, closer)[1] == pytest.approx([0.05])
    assert estimate_agreement("ctc", {"blank": 0}, near, closer) == pytest.approx(0.75)
    # Moving a harmless edge, or the character by one step (a - - b -> - a - b), loses nothing.
    edge = _ctc([1, 1, 0, 2], {1: (0, 0.05), 2: (1, 0.1)})
    assert estimate_agreement("ctc", {"blank": 0}, harmless, edge) == 1.0
    shifted = _ctc([0, 1, 0, 2], {})
    assert estimate_agreement("ctc", {"blank": 0}, _ctc([1, 0, 0, 2], {}), shifted) == 1.0
    # Another string (b a - b) is past the margin: the flip is certain.
    flipped = _ctc([2, 1, 0, 2], {0: (1, 0.1)})
    assert ctc_margins(near, flipped)[1] == pytest.approx([0.2]) and estimate_agreement("ctc", {}, near, flipped) == 0.0
    assert estimate_agreement("cosine", {}, near, near) is None


def test_digits_plan_chosen_on_64_images_holds_099_on_540_others() -> None:
    """The regression the estimate fixes: judged by "no flip on the calibration images", the
    plan chosen for 0.99 on the 64 calibration images agreed on 96.5% of the 540 test images."""
    from onnxprune.runtime import session

    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    calib, model = str(fixtures / "digits_calibration.npz"), str(fixtures / "digits_cnn.onnx")
    r = onnxprune.prune(model, "l2", min_fidelity=0.99, calibration=calib, verification_inputs=calib)
    assert r.report.macs_after < 0.9 * r.report.macs_before  # it still prunes (13% of the MACs)
    x = np.load(fixtures / "digits_test.npz")["input"]
    agree = np.mean(session(model)({"input": x})[0].argmax(1) == session(r.model)({"input": x})[0].argmax(1))
    assert agree >= 0.99
