"""Criteria pick the channels they should, and lossy pruning is proven against the masked original."""

from __future__ import annotations

import numpy as np
import pytest

import onnxprune
from onnxprune.testing import GraphBuilder


def _two_conv(weights: np.ndarray, bn_gamma: np.ndarray | None = None, bias: np.ndarray | None = None) -> tuple:
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [None, 3, 6, 6])
    c = b.op(
        "Conv",
        x,
        b.const(weights.astype(np.float32), "W"),
        b.const(np.zeros(len(weights), np.float32) if bias is None else bias, "B"),
        channels=len(weights),
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )
    if bn_gamma is not None:
        n = len(weights)
        c = b.op(
            "BatchNormalization",
            c,
            b.const(bn_gamma.astype(np.float32), "g"),
            b.const(np.zeros(n, np.float32), "be"),
            b.const(np.zeros(n, np.float32), "m"),
            b.const(np.ones(n, np.float32), "v"),
        )
    y = b.op("Relu", c)
    b.output(b.conv(y, 2, k=1, pads=0))
    return b.build(), b


def _removed_channels(result: onnxprune.PruneResult, layer_index: int = 0) -> list[int]:
    src = result.analysis.sources[layer_index]
    removed = set(result.plan.removed_groups)
    return [c for c, r in enumerate(result.analysis.roots(src.ids)) if int(r) in removed]


def test_l1_l2_remove_smallest_filters() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3))
    scale = np.array([1.0, 0.1, 1.0, 0.2, 1.0, 1.0, 0.05, 1.0]).reshape(8, 1, 1, 1)
    model, _ = _two_conv(w * scale)
    for crit in ("l1", "l2"):
        r = onnxprune.prune(model, crit, ratio=0.375)  # 3 of 8
        assert sorted(_removed_channels(r)) == [1, 3, 6]
        assert r.report.verification.passed


def test_fpgm_removes_filter_nearest_the_median() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 3, 3, 3)) * 3
    w[4] = np.median(np.delete(w, 4, axis=0), axis=0)  # the most replaceable filter
    model, _ = _two_conv(w)
    r = onnxprune.prune(model, "fpgm", ratio=1 / 6)
    assert _removed_channels(r) == [4]


def test_random_is_seeded() -> None:
    model, _ = _two_conv(np.random.default_rng(2).standard_normal((16, 3, 3, 3)))
    a = _removed_channels(onnxprune.prune(model, "random", ratio=0.5, seed=1))
    b = _removed_channels(onnxprune.prune(model, "random", ratio=0.5, seed=1))
    c = _removed_channels(onnxprune.prune(model, "random", ratio=0.5, seed=2))
    assert a == b and a != c and len(a) == 8


def test_kmeans_keeps_one_of_each_duplicate() -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((3, 3, 3, 3)) * 2
    w = np.concatenate([base, base * 1.001])  # 6 filters: 3 pairs of near-duplicates
    model, _ = _two_conv(w)
    r = onnxprune.prune(model, "kmeans", ratio=0.5, seed=0)
    removed = _removed_channels(r)
    assert len(removed) == 3
    assert sorted(c % 3 for c in removed) == [0, 1, 2]  # exactly one of each pair goes


def test_bn_gamma() -> None:
    w = np.random.default_rng(4).standard_normal((6, 3, 3, 3))
    model, _ = _two_conv(w, bn_gamma=np.array([1.0, 0.01, 2.0, 0.5, 0.02, 1.5]))
    r = onnxprune.prune(model, "bn-gamma", ratio=1 / 3)
    assert sorted(_removed_channels(r)) == [1, 4]


def test_bn_gamma_without_batchnorm_is_a_usage_error() -> None:
    """Nothing to score anywhere: say so and suggest another criterion (issue 14 item 10),
    instead of removing nothing silently."""
    model, _ = _two_conv(np.random.default_rng(5).standard_normal((6, 3, 3, 3)))
    with pytest.raises(
        onnxprune.UsageError, match=r"'bn-gamma' has nothing to score.*BatchNormalization.*try criterion l2"
    ):
        onnxprune.prune(model, "bn-gamma", ratio=0.5)


@pytest.mark.parametrize("criterion", ["apoz", "mean-activation"])
def test_activation_criteria_use_calibration(criterion: str, tmp_path) -> None:
    w = np.random.default_rng(6).standard_normal((6, 3, 3, 3)) * 0.1
    bias = np.array([0.0, -50.0, 0.0, 0.0, -50.0, 0.0], np.float32)  # channels 1, 4: always 0 after Relu
    model, _ = _two_conv(w, bias=bias)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 3, 6, 6)).astype(np.float32))
    r = onnxprune.prune(model, criterion, ratio=1 / 3, calibration=str(calib))
    assert sorted(_removed_channels(r)) == [1, 4]
    assert r.report.verification.passed


def test_activation_criterion_without_calibration_is_a_usage_error() -> None:
    model, _ = _two_conv(np.ones((4, 3, 3, 3)))
    with pytest.raises(onnxprune.UsageError, match="calibration"):
        onnxprune.prune(model, "apoz", ratio=0.5)


def test_lossy_without_budget_is_a_usage_error() -> None:
    model, _ = _two_conv(np.ones((4, 3, 3, 3)))
    with pytest.raises(onnxprune.UsageError, match="budget"):
        onnxprune.prune(model, "l2")


def test_user_criterion() -> None:
    model, _ = _two_conv(np.random.default_rng(7).standard_normal((6, 3, 3, 3)))
    criteria = onnxprune.default_criteria().register(
        "first-is-worst", lambda layer, keep, rng: np.arange(len(layer.filters), dtype=float)
    )
    r = onnxprune.prune(model, "first-is-worst", ratio=0.5, criteria=criteria)
    assert _removed_channels(r) == [0, 1, 2]
    assert "first-is-worst" not in onnxprune.default_criteria().names()


def test_masked_verification_catches_wrong_surgery(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx import numpy_helper

    import onnxprune.api as api

    real = api.prune_deferred

    def broken(*args, **kwargs):
        deferred = real(*args, **kwargs)
        m = deferred.complete()
        init = next(i for i in m.graph.initializer if len(i.dims) == 4)
        arr = numpy_helper.to_array(init).copy()
        arr.flat[0] += 0.01  # a tiny error: the masked reference must still see it
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        return deferred

    monkeypatch.setattr(api, "prune_deferred", broken)
    model, _ = _two_conv(np.random.default_rng(8).standard_normal((6, 3, 3, 3)))
    with pytest.raises(onnxprune.VerificationFailed, match="replaced where read"):
        onnxprune.prune(model, "l2", ratio=0.5)


def _weighed_model() -> tuple:
    """1x1 Conv A (4 channels, no activation) -> 1x1 Conv B. A's channel 0 has the largest
    filter but B reads it with weights 1e-3 (its removal costs ~nothing); channel 3 has the
    smallest filter (the one L2 removes) and B reads it fully."""
    b = GraphBuilder(opset=17, seed=71)
    x = b.input("x", [None, 3, 6, 6])
    wa = np.random.default_rng(5).standard_normal((4, 3, 1, 1)).astype(np.float32)
    wa[0] *= 4.0
    wa[3] *= 0.3
    wb = np.random.default_rng(6).standard_normal((2, 4, 1, 1)).astype(np.float32)
    wb[:, 0] *= 1e-3
    h = b.conv(x, 4, k=1, pads=0, weight=b.const(wa, "Wa"), bias=np.array([0.5, -0.2, 0.1, 0.0], np.float32))
    b.output(b.conv(h, 2, k=1, pads=0, weight=b.const(wb, "Wb"), bias=np.zeros(2, np.float32)))
    return b.build(), wa, wb


def test_contribution_criterion_is_the_error_a_channel_leaves_replaced_by_its_mean(tmp_path) -> None:
    from onnxprune.calibration import load_calibration
    from onnxprune.criteria.reconstruction_error import reconstruction_scores

    model, wa, wb = _weighed_model()
    x = np.random.default_rng(0).standard_normal((16, 3, 6, 6)).astype(np.float32)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=x)
    analysis = onnxprune.analyze(model)
    scores = reconstruction_scores(model, analysis, load_calibration(str(calib), model), refit=False)
    # By hand: A's output rows (16 x 36 positions, every one read), centred covariance S; channel
    # c's error alone is S_cc |B[:, c]|^2 over B's output variance tr(B S B^T).
    z = np.einsum("oc,nchw->nhwo", wa[:, :, 0, 0].astype(np.float64), x.astype(np.float64)).reshape(-1, 4)
    s = np.cov(z.T, bias=True)
    w = wb[:, :, 0, 0].astype(np.float64)
    expected = np.diag(s) * np.square(w).sum(axis=0) / np.trace(w @ s @ w.T)
    (first,) = [s.node for s in analysis.sources if len(s.ids) == 4]
    got = scores[first]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    assert int(np.argmin(got)) == 0
    removed = {}
    for criterion in ("contribution", "l2"):
        r = onnxprune.prune(
            model, criterion, ratio=0.25, calibration=str(calib), compensation="calibration", exclude=("Conv_node_8",)
        )
        assert r.report.channels_removed == 1 and r.report.verification.passed
        removed[criterion] = _removed_channels(r)
    assert removed == {"contribution": [0], "l2": [3]}
    with pytest.raises(onnxprune.UsageError, match=r"'contribution' needs calibration inputs"):
        onnxprune.prune(model, "contribution", ratio=0.25)


def test_contribution_errors_alone_match_the_covariance_path() -> None:
    """Without the refit a block's errors alone come from each group's contribution x_J W_J^T
    (no covariance of all the columns): the same numbers as tr(W_J S_JJ W_J^T) / tr(W S W^T)
    from the covariance the refit path forms, to rounding."""
    from onnxprune.criteria.reconstruction_error import _block

    rng = np.random.default_rng(4)
    k, channels = 9, 6
    rows = rng.standard_normal((300, channels * k)) * rng.uniform(0.1, 3, channels * k) + 2.0
    w = rng.standard_normal((5, channels * k))
    roots = np.array([10, 11, 12, 12, 13, 14])  # one group on two channels
    full, alone = _block(rows, w, roots, k, 1e-4), _block(rows, w, roots, k, 1e-4, refit=False)
    assert full is not None and alone is not None
    assert alone.energy == pytest.approx(full.energy, rel=1e-12)
    assert alone.alone.keys() == full.alone.keys() == {10, 11, 12, 13, 14}
    for r, v in full.alone.items():
        assert alone.alone[r] == pytest.approx(v, rel=1e-10)
    assert _block(np.ones((20, channels * k)), w, roots, k, 1e-4, refit=False) is None  # constant rows
