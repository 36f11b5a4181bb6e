"""Reconstruction's least squares (onnxprune.least_squares): row factors, the ridge solved over
rows or columns, the cross-validated refusal of a refit that does worse on other samples; and
re-calibration's corrections built on the same cross-validation. What reconstruction builds on
it is tested in test_reconstruction_fit and test_reconstruction_readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

import onnxprune
from onnxprune.least_squares import RIDGES, Problem, _path_errors, _solve, factor, fit
from onnxprune.recalibration import _correction, _Moments
from onnxprune.testing import GraphBuilder


def _primal(a: np.ndarray, y: np.ndarray, theta0: np.ndarray, rel: float) -> np.ndarray:
    lam = rel * float(np.mean(np.diag(a.T @ a)))
    return np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y + lam * theta0)


@pytest.mark.parametrize("rows", [3, 40])
def test_factor_keeps_the_gram_matrix(rows: int) -> None:
    r = np.random.default_rng(0).standard_normal((rows, 6))
    aug = np.concatenate([r, np.ones((rows, 1))], axis=1)
    f = factor(r)
    assert f.shape == (min(rows, 7), 7)
    assert np.abs(f.T @ f - aug.T @ aug).max() <= 1e-9 * np.abs(aug.T @ aug).max()


@pytest.mark.parametrize("rows", [5, 30])
def test_ridge_over_rows_or_columns_is_the_same_solution(rows: int) -> None:
    """Fewer rows than columns: solved over the rows (push-through identity); both ways agree
    with the textbook normal equations, for the final solve and along the ridge path."""
    rng = np.random.default_rng(1)
    a, y, theta0 = rng.standard_normal((rows, 12)), rng.standard_normal((rows, 3)), rng.standard_normal((12, 3))
    for rel in (1e-4, 1e-1, 10.0):
        got, want = _solve(a, y, theta0, rel), _primal(a, y, theta0, rel)
        assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max()
    w_aug = np.concatenate([rng.standard_normal((3, 12)), np.zeros((3, 1))], axis=1)
    fitted = Problem(np.concatenate([a, np.ones((rows, 1))], axis=1), np.arange(12), w_aug)
    judged = Problem(np.concatenate([rng.standard_normal((7, 12)), np.ones((7, 1))], axis=1), np.arange(12), w_aug)
    errors = _path_errors(fitted, judged, theta0, RIDGES)
    want = [judged.error(_primal(fitted.a, fitted.y, theta0, rel)) for rel in RIDGES]
    assert errors is not None and np.allclose(errors, want, rtol=1e-7, atol=0)


def test_refit_that_does_worse_on_the_other_samples_is_refused() -> None:
    """Column 1 (kept) stands in for the removed column 0 with opposite signs on the two sample
    sets: whatever ridge, the refit on one set moves the weights the wrong way for the other,
    so the weights are kept (None). The same columns with one sign: refitted exactly."""
    rng = np.random.default_rng(2)
    c = rng.standard_normal(20)
    w_aug = np.array([[1.0, 0.0, 0.0]])  # y = column 0
    select = np.array([1, 2])  # column 0 removed; column 1 and the ones column kept
    theta0 = np.zeros((2, 1))

    def problem(sign: float, part: slice) -> Problem:
        rows = np.stack([sign * c[part], c[part], np.ones(10)], axis=1)
        return Problem(rows, select, w_aug)

    assert fit([problem(1.0, slice(0, 10)), problem(-1.0, slice(10, 20))], theta0, 1e-5) is None
    theta = fit([problem(1.0, slice(0, 10)), problem(1.0, slice(10, 20))], theta0, 1e-5)
    assert theta is not None and abs(theta[0, 0] - 1.0) <= 1e-4 and abs(theta[1, 0]) <= 1e-4


def _moments_of(values: np.ndarray) -> _Moments:
    m = _Moments()
    m.add(values, 1)
    return m


def test_recalibration_makes_only_corrections_that_carry_over_to_the_other_half() -> None:
    """Channel 0 drifts the same way on both halves of the samples (+1, scale 2): corrected
    fully. Channel 1's drift flips sign between the halves (noise): any correction computed
    on one half is worse than none on the other, so none is made. Channel 2's mean drifts
    systematically, its scale up on one half and down on the other: the mean is corrected, not
    the scale."""
    rng = np.random.default_rng(6)
    ref = [rng.standard_normal((40, 3)) for _ in range(2)]
    now = [r.copy() for r in ref]
    for h, sign in ((0, 1.0), (1, -1.0)):
        now[h][:, 0] = 2 * ref[h][:, 0] + 1
        now[h][:, 1] = ref[h][:, 1] + sign
        now[h][:, 2] = ref[h][:, 2] * (3.0 if h == 0 else 1 / 3) + 0.5
    a, c = _correction([_moments_of(v) for v in now], [_moments_of(v) for v in ref], variance=True)
    mean_p, std_p = (np.concatenate(now).mean(0), np.concatenate(now).std(0))
    mean_o, std_o = (np.concatenate(ref).mean(0), np.concatenate(ref).std(0))
    assert a[0] == pytest.approx(std_o[0] / std_p[0], rel=1e-9)
    assert c[0] == pytest.approx(mean_o[0] - a[0] * mean_p[0], rel=1e-9)
    assert a[1] == 1.0 and c[1] == 0.0
    assert a[2] == 1.0 and c[2] == pytest.approx(mean_o[2] - mean_p[2], rel=1e-9)


def _two_level_relu_cnn(seed: int) -> tuple:
    """Three convs with Relus between (two depth levels to re-calibrate), its analysis, a plan
    removing two groups, the pruned model and 8 seeded inputs."""
    from onnxprune.planning import PruningPlan
    from onnxprune.surgery import apply_pruning

    b = GraphBuilder(opset=17, seed=seed)
    x = b.input("x", [None, 3, 6, 6])
    h = b.op("Relu", b.conv(x, 6))
    h = b.op("Relu", b.conv(h, 5, k=1, pads=0))
    b.output(b.conv(h, 4, k=1, pads=0))
    model = b.build()
    analysis = onnxprune.analyze(model)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 6, 6)).astype(np.float32)} for i in range(8)]
    plan = PruningPlan("p", (0, 2))
    return model, analysis, plan, apply_pruning(model, analysis, plan), feeds


def test_recalibration_without_the_after_measurement_and_with_cached_statistics_is_the_same(
    tmp_path: Path,
) -> None:
    """The search's trials skip the measurements of the drift (before and after) and reuse the
    original's statistics: the model is the one a plain call makes, only the drift figures are nan."""
    from onnxprune.recalibration import recalibrate

    model, analysis, plan, pruned, feeds = _two_level_relu_cnn(43)
    plain, layers = recalibrate(model, pruned, analysis, plan, feeds)
    cache: dict = {}
    recalibrate(model, pruned, analysis, plan, feeds, cache=cache)
    assert cache
    fast, fast_layers = recalibrate(model, pruned, analysis, plan, feeds, cache=cache, measure=False)
    assert layers and [x.node for x in layers] == [x.node for x in fast_layers]
    assert all(
        np.isnan(x.mean_shift_after) and np.isnan(x.mean_shift_before) and y.mean_shift_before > 0
        for x, y in zip(fast_layers, layers)
    )
    for t, u in zip(plain.graph.initializer, fast.graph.initializer, strict=True):
        assert t.name == u.name and np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(u))


def test_recalibration_of_the_shallow_levels_only_leaves_the_deeper_ones() -> None:
    """``shallow_only`` with one pass (the search's trials, bounded): the first level is
    corrected exactly as a full run corrects it, the second level is left as it was."""
    from onnxprune.recalibration import recalibrate

    model, analysis, plan, pruned, feeds = _two_level_relu_cnn(44)
    full, full_layers = recalibrate(model, pruned, analysis, plan, feeds)
    one, one_layers = recalibrate(model, pruned, analysis, plan, feeds, max_passes=1, shallow_only=True)
    assert len(full_layers) == 2 and [x.node for x in one_layers] == [full_layers[0].node]
    first, second = (next(n for n in full.graph.node if n.name == x.node) for x in full_layers)
    before = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in one.graph.initializer}
    want = {t.name: numpy_helper.to_array(t) for t in full.graph.initializer}
    assert not np.array_equal(want[first.input[1]], before[first.input[1]])
    assert np.array_equal(got[first.input[1]], want[first.input[1]])
    assert np.array_equal(got[first.input[2]], want[first.input[2]])
    assert np.array_equal(got[second.input[1]], before[second.input[1]])
