"""Recovery on compact networks: re-calibration of known statistics and in dependency order,
the reconstruction criterion, the calibration compensation; each on a tiny graph whose answer
is known in closed form. Reconstruction's own tests: test_reconstruction_readers,
test_reconstruction_fit, test_reconstruction_sequential."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from recovery_helpers import calib as _calib
from recovery_helpers import held_out_error as _held_out_error

import onnxprune
from onnxprune.testing import GraphBuilder


def _recal_model(bn: bool) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """x (2 channels) -> 1x1 Conv A = diag(1, 0.5) -> 1x1 Conv B (3) [-> BatchNormalization].
    Removing A's channel 1 (the smaller filter) takes 0.5 * B[:, 1] * x1 out of B's output:
    its variance drops by 0.25 B[:, 1]^2 var(x1) and its mean by 0.5 B[:, 1] mean(x1), known."""
    b = GraphBuilder(opset=17, seed=41)
    x = b.input("x", [None, 2, 4, 4])
    wa = np.zeros((2, 2, 1, 1), np.float32)
    wa[0, 0], wa[1, 1] = 1.0, 0.5
    wb = b.weights([3, 2, 1, 1])
    bias = np.array([0.1, -0.2, 0.3], np.float32)
    h = b.conv(x, 2, k=1, pads=0, weight=b.const(wa, "Wa"), bias=np.zeros(2, np.float32))
    y = b.conv(h, 3, k=1, pads=0, weight=b.const(wb, "Wb"), bias=bias)
    b.output(b.bn(y) if bn else y)
    return b.build(), wb[:, :, 0, 0].astype(np.float64), bias.astype(np.float64)


def _shifted_calib(tmp_path: Path, name: str, seed: int) -> tuple[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((16, 2, 4, 4)).astype(np.float32)
    x[:, 1] += 1.5  # a mean the removal takes away
    path = tmp_path / f"{name}.npz"
    np.savez(path, x=x)
    return str(path), x.astype(np.float64)


@pytest.mark.parametrize("bn", [True, False])
def test_recalibration_restores_the_known_mean_and_variance(tmp_path: Path, bn: bool) -> None:
    """B's outputs before the correction are B[:, 0] x0 + b (x1's part is gone); the correction
    a = std_o / std_p, c = mean_o - a mean_p, from the calibration samples, is folded into the
    BatchNormalization's scale and bias (exactly: s a and beta + s (c + (a - 1) m) / d) or,
    without one, into B's weights (a B) and bias (a b + c)."""
    model, wb, bias = _recal_model(bn)
    calib, x = _shifted_calib(tmp_path, "cal", 1)
    held, _ = _shifted_calib(tmp_path, "held", 2)
    r = onnxprune.prune(
        model, "l2", ratio=0.5, calibration=calib, verification_inputs=held, compensation="none", recalibrate=True
    )
    assert r.report.channels_removed == 1 and r.report.verification.passed
    y_o = np.einsum("oc,nchw->nohw", wb, 0.5 * np.stack([2 * x[:, 0], x[:, 1]], 1)) + bias[None, :, None, None]
    y_p = np.einsum("o,nhw->nohw", wb[:, 0], x[:, 0]) + bias[None, :, None, None]
    mean_o, std_o = y_o.mean(axis=(0, 2, 3)), y_o.std(axis=(0, 2, 3))
    mean_p, std_p = y_p.mean(axis=(0, 2, 3)), y_p.std(axis=(0, 2, 3))
    a = std_o / std_p
    c = mean_o - a * mean_p
    (layer,) = r.report.recalibrated_layers
    conv_b = [n for n in r.model.graph.node if n.op_type == "Conv"][1]
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in r.model.graph.initializer}
    if bn:
        norm = next(n for n in r.model.graph.node if n.op_type == "BatchNormalization")
        orig = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
        s, beta, m, v = (orig[i] for i in norm.input[1:])
        assert layer.folded_into == norm.name
        np.testing.assert_allclose(inits[norm.input[1]], s * a, rtol=1e-4)
        np.testing.assert_allclose(
            inits[norm.input[2]], beta + s * (c + (a - 1) * m) / np.sqrt(v + 1e-5), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(inits[conv_b.input[1]][:, 0, 0, 0], wb[:, 0], rtol=1e-6)  # the Conv unchanged
    else:
        assert layer.folded_into == conv_b.name
        np.testing.assert_allclose(inits[conv_b.input[1]][:, 0, 0, 0], a * wb[:, 0], rtol=1e-4)
        np.testing.assert_allclose(inits[conv_b.input[2]], a * bias + c, rtol=1e-4, atol=1e-5)
    assert layer.mean_shift_before > 0.3 and layer.std_change_before > 0.05
    assert layer.mean_shift_after < 1e-4 and layer.std_change_after < 1e-4
    d = r.report.to_dict()["recalibrated_layers"][0]
    assert d["node"] == layer.node and d["folded_into"] == layer.folded_into


def _chain(tmp_path: Path) -> tuple[onnx.ModelProto, str]:
    b = GraphBuilder(opset=17, seed=42)
    x = b.input("x", [None, 3, 6, 6])
    h = b.op("Relu", b.conv(x, 6, k=3))
    h = b.op("Relu", b.conv(h, 6, k=1, pads=0))
    b.output(b.conv(h, 4, k=1, pads=0))
    return b.build(), _calib(tmp_path, (3, 6, 6), n=24)


def test_recalibration_corrects_layers_in_dependency_order(tmp_path: Path) -> None:
    """The second reader's statistics are measured after the first was corrected (each depth
    level in its own pass): after both corrections every layer matches on the calibration
    samples. Measured in one pass, the second's correction would be computed before the
    first's changed its input."""
    model, calib = _chain(tmp_path)
    r = onnxprune.prune(model, "l2", ratio=0.34, calibration=calib, compensation="none", recalibrate=True)
    layers = r.report.recalibrated_layers
    assert len(layers) == 2
    assert all(x.mean_shift_before > 1e-2 for x in layers)
    assert all(x.mean_shift_after < 1e-4 and x.std_change_after < 1e-4 for x in layers)
    from onnxprune.recalibration import recalibrate

    plain = onnxprune.prune(model, "l2", ratio=0.34, calibration=calib, compensation="none")
    from onnxprune.calibration import load_calibration

    feeds = load_calibration(calib, model)
    _, one_pass = recalibrate(model, plain.model, r.analysis, r.plan, feeds, max_passes=1)
    assert max(x.mean_shift_after + x.std_change_after for x in one_pass) > 1e-3


def test_recalibrate_needs_calibration_and_is_a_cli_flag(tmp_path: Path) -> None:
    from cli_helpers import one_line_error, run_cli

    model, calib = _chain(tmp_path)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    msg = one_line_error(run_cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.3", "--recalibrate"))
    assert "--recalibrate" in msg and "--calibration" in msg
    out = tmp_path / "o.onnx"
    p = run_cli(
        "prune",
        path,
        "-o",
        out,
        "--ratio",
        "0.34",
        "--recalibrate",
        "--calibration",
        calib,
        "--report",
        tmp_path / "r.json",
    )
    assert p.returncode == 0, p.stderr
    import json

    d = json.loads((tmp_path / "r.json").read_text())
    assert len(d["recalibrated_layers"]) == 2 and out.exists()


# -- channel selection by reconstruction error ------------------------------------------------


def _combination_model() -> onnx.ModelProto:
    """Conv A (4 channels, no activation) -> 1x1 Conv B. A's channel 2 = channel 0 + channel 1
    (weights and bias): any one of channels 0, 1, 2 is a linear combination of the other two,
    so B absorbs its removal exactly; channel 3 is independent, and the smallest filter (the one
    L2 removes)."""
    b = GraphBuilder(opset=17, seed=51)
    x = b.input("x", [None, 3, 6, 6])
    wa = b.weights([4, 3, 3, 3])
    wa[2] = wa[0] + wa[1]
    wa[3] *= 0.5
    ba = np.array([0.1, -0.2, -0.1, 0.05], np.float32)
    h = b.conv(x, 4, k=3, pads=1, weight=b.const(wa, "Wa"), bias=ba)
    b.output(b.conv(h, 3, k=1, pads=0))
    return b.build()


def test_reconstruction_criterion_picks_the_channel_that_is_a_combination_of_others(tmp_path: Path) -> None:
    from onnxprune.calibration import load_calibration
    from onnxprune.criteria.reconstruction_error import reconstruction_scores

    model = _combination_model()
    calib = _calib(tmp_path, (3, 6, 6), n=16)
    analysis = onnxprune.analyze(model)
    scores = reconstruction_scores(model, analysis, load_calibration(calib, model))
    first = np.sort(scores[analysis.sources[0].node])
    assert first[0] < 1e-4 < 1e-2 < first[1]  # one of the dependent three costs (nearly: the ridge) nothing
    kept = {}
    for criterion in ("reconstruction", "l2"):
        r = onnxprune.prune(
            model,
            criterion,
            ratio=0.25,
            calibration=calib,
            compensation="none",
            reconstruct=True,
            exclude=("Conv_node_8",),  # B: only A loses a channel
        )
        assert r.report.channels_removed == 1 and r.report.verification.passed
        (gone,) = [
            i for i, g in enumerate(r.analysis.roots(r.analysis.sources[0].ids)) if int(g) in set(r.plan.removed_groups)
        ]
        kept[criterion] = (gone, _held_out_error(model, r.model, (3, 6, 6)))
    assert kept["reconstruction"][0] in (0, 1, 2) and kept["l2"][0] == 3
    assert kept["reconstruction"][1] <= 1e-4 < kept["l2"][1]


def test_reconstruction_criterion_needs_calibration(tmp_path: Path) -> None:
    from cli_helpers import one_line_error, run_cli

    path = tmp_path / "m.onnx"
    onnx.save(_combination_model(), path)
    msg = one_line_error(
        run_cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.25", "--criterion", "reconstruction")
    )
    assert "reconstruction" in msg and "--calibration" in msg
    assert "reconstruction" in onnxprune.default_criteria().names()


# -- compensation through the nonlinearity ----------------------------------------------------


def test_calibration_compensation_folds_the_mean_after_the_activation(tmp_path: Path) -> None:
    """Conv A -> Relu -> 1x1 Conv B: the value folded into B's bias for A's removed channel is
    B[:, c] x E[relu(z_c)] over the calibration samples (exact in expectation for the linear
    reader), not B[:, c] x relu(E[z_c]); here z_c has mean ~0, so the two differ by ~0.4 std."""
    b = GraphBuilder(opset=17, seed=61)
    x = b.input("x", [None, 2, 5, 5])
    wa = np.array([[3.0, 0.0], [0.0, 1.0]], np.float32).reshape(2, 2, 1, 1)
    wb = b.weights([3, 2, 1, 1])
    h = b.op("Relu", b.conv(x, 2, k=1, pads=0, weight=b.const(wa, "Wa"), bias=np.zeros(2, np.float32)))
    b.output(b.conv(h, 3, k=1, pads=0, weight=b.const(wb, "Wb"), bias=np.zeros(3, np.float32)))
    model = b.build()
    calib, held = _calib(tmp_path, (2, 5, 5), n=24, seed=1), _calib(tmp_path, (2, 5, 5), n=8, seed=2)
    r = onnxprune.prune(model, "l2", ratio=0.5, calibration=calib, verification_inputs=held, compensation="calibration")
    assert r.report.channels_removed == 1 and r.report.verification.passed
    z = np.load(calib)["x"][:, 1].astype(np.float64)  # A's channel 1 before the Relu
    expected = wb[:, 1, 0, 0] * np.maximum(z, 0).mean()
    conv_b = [n for n in r.model.graph.node if n.op_type == "Conv"][1]
    folded = numpy_helper.to_array({t.name: t for t in r.model.graph.initializer}[conv_b.input[2]])
    np.testing.assert_allclose(folded, expected, rtol=1e-4)
    assert np.abs(expected - wb[:, 1, 0, 0] * max(z.mean(), 0.0)).max() > 0.2 * np.abs(wb[:, 1]).max()
