"""Reconstruction's refit (onnxprune.reconstruction_fit) on tiny graphs: a grouped conv is
refitted group by group, a refit the other half of the samples rejects is not kept, and the
cache across the search's trials gives the uncached weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from recovery_helpers import calib as _calib
from recovery_helpers import held_out_error as _held_out_error
from recovery_helpers import weight as _weight

import onnxprune
from onnxprune.testing import GraphBuilder


def _grouped_reader() -> tuple[onnx.ModelProto, np.ndarray]:
    """Conv (4) -> Relu -> grouped 1x1 Conv (group 2, 4 -> 4). Channel 1 = 0.5 x channel 0
    (group 0) and channel 3 = 0.5 x channel 2 (group 1): each group absorbs its own removal."""
    b = GraphBuilder(opset=17, seed=32)
    x = b.input("x", [None, 2, 5, 5])
    wa = b.weights([4, 2, 3, 3])
    wa[0] *= 3
    wa[2] *= 3
    wa[1] = 0.5 * wa[0]
    wa[3] = 0.5 * wa[2]
    ba = np.array([0.2, 0.1, -0.2, -0.1], np.float32)
    wg = b.weights([4, 2, 1, 1])
    h = b.op("Relu", b.conv(x, 4, k=3, pads=1, weight=b.const(wa, "Wa"), bias=ba))
    b.output(b.conv(h, 4, k=1, pads=0, group=2, weight=b.const(wg, "Wg"), bias=np.zeros(4, np.float32)))
    return b.build(), wg


def test_grouped_conv_is_refitted_group_by_group(tmp_path: Path) -> None:
    model, wg = _grouped_reader()
    r = onnxprune.prune(
        model, "l2", ratio=0.5, calibration=_calib(tmp_path, (2, 5, 5)), compensation="none", reconstruct=True
    )
    assert r.report.channels_removed == 2 and r.report.verification.passed
    reader = [x.node for x in r.report.reconstructed_layers]
    assert len(reader) == 1
    got = _weight(r.model, reader[0])
    assert got.shape == (4, 1, 1, 1)  # one kept input per group
    expected = wg[:, 0, 0, 0] + 0.5 * wg[:, 1, 0, 0]  # in each group: kept column += 0.5 x removed one
    assert np.abs(got[:, 0, 0, 0] - expected).max() <= 1e-3 * np.abs(expected).max()
    assert _held_out_error(model, r.model, (2, 5, 5)) <= 1e-4


def _mlp(sign_flip: bool) -> tuple[onnx.ModelProto, np.ndarray]:
    """x [N, 3] -> Gemm (identity, feature 2 scaled 0.1: the lowest L2, removed) -> Gemm reader
    (3 -> 1). The calibration samples' feature 2 is 5 x feature 0 on their first half and
    -5 x (or, without ``sign_flip``, 5 x) feature 0 on their second (prune keeps every 4th
    sample for its own check: the refit's two halves are the 12 + and the 12 - samples)."""
    b = GraphBuilder(opset=17, seed=40)
    x = b.input("x", [None, 3])
    w1 = np.diag([1.0, 1.0, 0.1]).astype(np.float32)
    h = b.op("Gemm", x, b.const(w1, "W1"), b.const(np.zeros(3, np.float32), "B1"), channels=3, transB=1)
    w2 = np.array([[0.5, 0.3, 10.0]], np.float32)
    b.output(b.op("Gemm", h, b.const(w2, "W2"), b.const(np.zeros(1, np.float32), "B2"), channels=1, transB=1))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 3)).astype(np.float32)
    x[:, 2] = 5 * x[:, 0]
    if sign_flip:
        x[16:, 2] *= -1
    return b.build(), x


@pytest.mark.parametrize("sign_flip", [True, False])
def test_reconstruction_never_keeps_a_refit_the_held_out_half_rejects(tmp_path: Path, sign_flip: bool) -> None:
    model, x = _mlp(sign_flip)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=x)
    kw = {"ratio": 0.34, "calibration": str(calib), "compensation": "none"}
    plain = onnxprune.prune(model, "l2", **kw)
    rec = onnxprune.prune(model, "l2", reconstruct=True, **kw)
    assert plain.report.channels_removed == rec.report.channels_removed == 1
    reader = next(n for n in rec.model.graph.node if n.op_type == "Gemm" and n.input[0] != "x")
    weights = {t.name: numpy_helper.to_array(t) for t in rec.model.graph.initializer}
    plain_w = {t.name: numpy_helper.to_array(t) for t in plain.model.graph.initializer}
    if sign_flip:  # left exactly as the surgery left it
        assert rec.report.reconstructed_layers == ()
        assert np.array_equal(weights[reader.input[1]], plain_w[reader.input[1]])
    else:  # feature 0 takes over feature 2's weight: 0.5 + 10 x 0.1 x 5
        assert [r.node for r in rec.report.reconstructed_layers] == [reader.name]
        assert abs(float(weights[reader.input[1]][0, 0]) - 5.5) <= 1e-3


def test_cache_across_calls_gives_the_uncached_weights(tmp_path: Path) -> None:
    """The search's trials share a ReconstructionCache per sample set: a plan refitted after
    others, from cached row factors and fits, gets the very weights a fresh call gives."""
    from onnxprune.planning import PruningPlan
    from onnxprune.reconstruction import ReconstructionCache, reconstruct
    from onnxprune.surgery import apply_pruning

    b = GraphBuilder(opset=17, seed=42)
    x = b.input("x", [None, 3, 6, 6])
    h = b.op("Relu", b.conv(x, 6))
    h = b.op("Relu", b.conv(h, 5))
    b.output(b.conv(h, 4))
    model = b.build()
    analysis = onnxprune.analyze(model)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 6, 6)).astype(np.float32)} for i in range(8)]
    plans = [PruningPlan("p", tuple(g)) for g in ([0], [0, 7], [7], [0])]
    cache = ReconstructionCache()
    sizes = []
    for plan in plans:
        pruned = apply_pruning(model, analysis, plan)
        cached, layers = reconstruct(model, pruned, analysis, plan, feeds, cache=cache)
        fresh, fresh_layers = reconstruct(model, pruned, analysis, plan, feeds)
        assert layers == fresh_layers and layers
        for t, u in zip(cached.graph.initializer, fresh.graph.initializer, strict=True):
            assert t.name == u.name and np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(u))
        sizes.append(len(cache.fits))
    assert sizes[0] < sizes[1] and sizes[3] == sizes[2]  # the first plan again: nothing solved anew
    with pytest.raises(ValueError, match="one set of calibration samples"):
        reconstruct(model, apply_pruning(model, analysis, plans[0]), analysis, plans[0], feeds[:4], cache=cache)
