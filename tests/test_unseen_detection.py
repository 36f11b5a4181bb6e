"""The search's judge beyond its calibration samples, for detection heads and for reconstructed
candidates: a detection's margin is its distance to the score threshold (known answers from the
interpolated distribution function), a plan that keeps every calibration detection but moves
near-threshold ones is refused, and a refit is judged on the samples it did not see."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxprune
from onnxprune.fidelity_metrics.detection import detection, detection_parts
from onnxprune.fidelity_metrics.unseen_bound import bootstrap_bound, unseen
from onnxprune.planning import PruningPlan
from onnxprune.reconstruction_trials import ReconstructedTrials
from onnxprune.recovery import recover_model
from onnxprune.runtime import session
from onnxprune.search_judgement import search_score
from onnxprune.surgery import apply_pruning
from onnxprune.testing import GraphBuilder


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _heads(scores: list[float], background: float = 0.01) -> np.ndarray:
    """End-to-end rows [N, 5, 6]: one box (0, 0, 10, 10) of class 0 at each score, and
    background rows far from it (50, 50, 60, 60, ...), the best at ``background``."""
    out = np.zeros((len(scores), 5, 6))
    out[:, 0] = [0, 0, 10, 10, 0, 0]
    for k in range(1, 5):
        out[:, k] = [50 * k, 50, 50 * k + 10, 60, background / k, 0]
    out[:, 0, 4] = scores
    return out


def test_detection_margins_are_distances_to_the_score_threshold() -> None:
    """Every box 1 logit above 0.25, the background 3.4965 below it; the candidate moves each
    box 0.5 logit down (still detected: score 1.0 on the samples). 64 margins (32 at 1, 32
    at 3.4965): F(0.5) = (0 + 0.5 / 1) / 65, a lost box costs its page everything (1 box)."""
    n, t = 32, _logit(0.25)
    ref = _heads([_sigmoid(t + 1.0)] * n)
    got = _heads([_sigmoid(t + 0.5)] * n)
    parts = detection_parts(ref, got)
    assert np.allclose(parts.values, 1.0) and detection(ref, got).value == 1.0
    assert np.allclose(np.stack(parts.margins), [[1.0, t - _logit(0.01)]] * n)
    assert np.allclose(np.stack(parts.losses), [[0.5, 0.0]] * n)
    assert np.allclose(np.stack(parts.costs), [[1.0, 0.5]] * n)  # a lost box of 1; a gained one beside 1
    u = unseen("detection", {}, ref, got)
    assert u is not None and u.estimate == pytest.approx(1 - 0.5 / 65)
    assert u.bound == pytest.approx(1 - 0.5 / 65)  # every page alike: every resample gives the same
    # A box the candidate no longer has at any score is past every margin (a flip), and so is
    # a background row that rises above the threshold (a gained box, half of a one-box page).
    lost = got.copy()
    lost[0, 0, :4] = [30, 30, 40, 40]  # moved away: no box of the candidate overlaps the original's
    gained = got.copy()
    gained[1, 2, 4] = 0.5
    parts = detection_parts(ref, np.concatenate([lost[:1], gained[1:]]))
    assert parts.losses[0][0] > 1e6 and parts.losses[1][1] == pytest.approx(_logit(0.5) - _logit(0.01))
    assert parts.values[0] == 0.0 and parts.values[1] == 0.5


def test_a_raw_head_reads_its_anchors_as_rows() -> None:
    """[N, 4 + 1, anchors] (anchors last): anchor 0 the object (score 0.6), anchor 1 a duplicate
    of it (0.4, removed by NMS), anchors 2-5 the background (0.1 at best). The candidate drops
    the object's anchor to 0.3 and its duplicate to 0.35: the object's loss is its score minus
    the best of the candidate's rows that overlap it (the duplicate's); the background's, 0."""
    ref = np.zeros((1, 5, 6))
    ref[0, :4] = [[5, 5.2, 50, 80, 110, 140], [5, 5, 50, 50, 50, 50], [10, 10, 10, 10, 10, 10], [10] * 6]
    ref[0, 4] = [0.6, 0.4, 0.1, 0.05, 0.02, 0.01]
    got = ref.copy()
    got[0, 4, :2] = [0.3, 0.35]
    parts = detection_parts(ref, got)
    assert parts.margins[0] == pytest.approx([_logit(0.6) - _logit(0.25), _logit(0.25) - _logit(0.1)])
    assert parts.losses[0] == pytest.approx([_logit(0.6) - _logit(0.35), 0.0])


def test_weights_give_each_flip_its_cost_and_equal_weights_the_old_rate() -> None:
    rng = np.random.default_rng(0)
    m, d = rng.exponential(1.0, (20, 3)), rng.exponential(0.3, (20, 3))
    a = np.ones(20)
    assert bootstrap_bound(m, d, a, weights=np.full((20, 3), 1 / 3)) == bootstrap_bound(m, d, a)
    # One decision per sample costs all of it, padding costs nothing and has no margin.
    w = np.zeros((20, 3))
    w[:, 0] = 1.0
    padded = np.where(w > 0, m, 7.0)  # the padding's values are never read
    assert bootstrap_bound(padded, d, a, weights=w) == bootstrap_bound(m[:, :1], d[:, :1], a)


def test_search_refuses_a_plan_that_keeps_every_detection_but_moves_near_threshold_ones() -> None:
    """32 pages, one box each; 5 boxes 0.05-0.3 logit above the threshold, the rest 2-4 above.
    The candidate keeps every box (score 1.0 on every half: the old judge's 1.0) but moves
    scores by up to 0.6 logit: the near-threshold boxes of other pages would go."""
    t = _logit(0.25)
    rng = np.random.default_rng(1)
    margins = np.concatenate([[0.05, 0.1, 0.15, 0.2, 0.3], rng.uniform(2, 4, 27)])
    losses = np.concatenate([[-0.2] * 5, rng.uniform(-0.6, 0.6, 27)])
    ref = _heads([_sigmoid(t + x) for x in margins])
    got = _heads([_sigmoid(t + x - y) for x, y in zip(margins, losses)])
    halves = [([ref[:16]], [got[:16]]), ([ref[16:]], [got[16:]])]
    det = {"*": "detection"}  # (5 rows a page: too few for the detection to be detected from the shape)
    judged = search_score(["det"], [ref], [got], halves, det)
    assert judged.pooled == 1.0 and judged.worst_half == 1.0
    assert judged.estimate is not None and judged.estimate < 0.99 and judged.value < 0.99
    # The same scores unmoved: nothing is lost, nothing is at risk.
    assert search_score(["det"], [ref], [ref], [([ref[:16]], [ref[:16]]), ([ref[16:]], [ref[16:]])], det).value == 1.0


def _two_channel_model() -> object:
    """x [N, 2, 1, 1] -> 1x1 Conv diag(1, 0.5) -> Flatten -> Gemm (identity, 2 -> 2): outputs
    (x0, 0.5 x1). Removing channel 1 (the lower norm) loses the second output; reconstruction
    refits the Gemm from channel 0 alone."""
    b = GraphBuilder(opset=17, seed=0)
    x = b.input("x", [None, 2, 1, 1])
    w = np.diag([1.0, 0.5]).astype(np.float32).reshape(2, 2, 1, 1)
    conv = b.conv(x, 2, k=1, pads=0, bias=False, weight=b.const(w, "W"))
    flat = b.op("Flatten", conv, axis=1)
    eye = np.eye(2, dtype=np.float32)
    b.output(b.op("Gemm", flat, b.const(eye, "G"), b.const(np.zeros(2, np.float32), "g"), channels=2, transB=1))
    return b.build()


def test_a_refit_that_fits_its_samples_exactly_is_judged_on_the_others(tmp_path: Path) -> None:
    """The first 16 calibration samples have x1 = 2 x0, the last 16 x1 = -2 x0. A refit on
    either half reproduces that half exactly (output 2 = +-x0 from channel 0) and gets the
    other half's second output backwards: in-sample cosine 1, out of sample 0. The search's
    trials judge every sample by the refit that did not see it, so the plan is refused."""
    model = _two_channel_model()
    analysis = onnxprune.analyze(model)
    t = np.random.default_rng(0).uniform(1.0, 2.0, 32).astype(np.float32)
    sign = np.where(np.arange(32) < 16, 2.0, -2.0).astype(np.float32)
    x = np.stack([t, sign * t], axis=1).reshape(32, 2, 1, 1)
    feeds = [{"x": x[i : i + 1]} for i in range(32)]
    conv = next(s for s in analysis.sources if s.op == "Conv")
    channel1 = int(analysis.roots(conv.ids)[1])
    plan = PruningPlan("trial", (channel1,))
    pruned = apply_pruning(model, analysis, plan)
    cosine = {"*": "cosine"}
    fitted, _, _ = recover_model(model, pruned, analysis, plan, feeds[:16], reconstruct=True, recalibrate=False)
    ref, got = (session(m).outputs(feeds[:16])[0] for m in (model, fitted))
    in_sample = np.sum(ref * got, axis=1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert np.allclose(in_sample, 1.0, atol=1e-4)  # the refit reproduces its own samples
    trials = ReconstructedTrials(model, analysis, feeds)
    # Judged out of fold: output (t, t) against (t, -t), cosine 0, on every sample.
    assert trials.fidelity([channel1], None, cosine) == pytest.approx(0.0, abs=1e-3)
    assert trials.fidelity([channel1], None, cosine, search=True) == pytest.approx(0.0, abs=1e-3)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=x)
    r = onnxprune.prune(model, "l2", calibration=str(calib), compensation="none", min_fidelity=0.9, reconstruct=True)
    assert r.plan.removed_groups == ()


def test_one_lost_box_in_32_is_bounded_by_the_binomial_spread() -> None:
    """32 one-box pages, the candidate loses page 0's box (moved away: that page scores 0, and
    the moved box is a gained one away from the original's, so the page loses at most all of
    it) and keeps the rest exactly: estimate 31/32, and resampled K ~ Binomial(32, 1/32) lost
    pages put the 95% bound at 29/32, as for top-1."""
    t = _logit(0.25)
    ref = _heads([_sigmoid(t + 1.0)] * 32)
    got = ref.copy()
    got[0, 0, :4] = [30, 30, 40, 40]
    u = unseen("detection", {}, ref, got)
    assert u is not None and detection(ref, got).value == pytest.approx(31 / 32)
    assert u.estimate == pytest.approx(31 / 32) and u.bound == pytest.approx(29 / 32)


def test_a_score_that_rose_counts_as_one_that_fell_by_as_much() -> None:
    """The first test's pages with every box raised 0.5 logit instead of lowered: the same
    estimate, 1 - 0.5 / 65 (a move the search keeps because it raised these samples' scores
    moves other inputs' scores either way), while the samples' own score is 1 either way."""
    n, t = 32, _logit(0.25)
    ref = _heads([_sigmoid(t + 1.0)] * n)
    up, down = _heads([_sigmoid(t + 1.5)] * n), _heads([_sigmoid(t + 0.5)] * n)
    assert np.allclose(detection_parts(ref, up).losses[0], [-0.5, 0.0])
    rose, fell = unseen("detection", {}, ref, up), unseen("detection", {}, ref, down)
    assert rose is not None and fell is not None
    assert rose.estimate == pytest.approx(1 - 0.5 / 65) and rose == fell
