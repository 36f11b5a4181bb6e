"""Recovery on compact networks: reconstruction through depthwise convs, of grouped convs, of
layers read by a BatchNormalization or whose weights are computed by nodes; each on a tiny
graph whose least-squares answer is known in closed form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run
from onnx import numpy_helper

import onnxprune
from onnxprune.testing import GraphBuilder


def _calib(tmp_path: Path, shape: tuple[int, ...], n: int = 32, name: str = "x", seed: int = 0) -> str:
    path = tmp_path / f"calib_{seed}.npz"
    np.savez(path, **{name: np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)})
    return str(path)


def _weight(model: onnx.ModelProto, node_name: str, index: int = 1) -> np.ndarray:
    """A node's weight in a (pruned) model, read through Constant nodes, Cast and Mul."""
    from onnxprune.analysis import import_graph
    from onnxprune.params import ParamResolver

    graph = import_graph(model)
    node = next(n for n in graph.nodes if n.name == node_name)
    return np.asarray(ParamResolver()(node.inputs[index]).values, dtype=np.float64)


def _unread_nodes(model: onnx.ModelProto) -> list[str]:
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if not any(o in read for o in n.output)]


def _held_out_error(model: onnx.ModelProto, pruned: onnx.ModelProto, shape: tuple[int, ...]) -> float:
    feeds = {"x": np.random.default_rng(99).standard_normal((8, *shape)).astype(np.float32)}
    ref, got = run(model, feeds)[0], run(pruned, feeds)[0]
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _depthwise_chain() -> tuple[onnx.ModelProto, np.ndarray]:
    """1x1 expand (4) -> Relu -> 3x3 depthwise -> Relu -> 1x1 project (3). Expand channel 3 is
    0.5 x channel 1 with the same depthwise filter, so after both Relus it is still 0.5 x
    channel 1: the projection absorbs its removal exactly with column 1 += 0.5 x column 3."""
    b = GraphBuilder(opset=17, seed=31)
    x = b.input("x", [None, 3, 6, 6])
    we = b.weights([4, 3, 1, 1])
    we[0] *= 3
    we[2] *= 3
    we[3] = 0.5 * we[1]
    be = np.array([0.1, 0.2, -0.1, 0.1], np.float32)
    wd = b.weights([4, 1, 3, 3])
    wd[3] = wd[1]
    bd = np.array([0.05, 0.1, 0.0, 0.05], np.float32)
    wp = b.weights([3, 4, 1, 1])
    h = b.op("Relu", b.conv(x, 4, k=1, pads=0, weight=b.const(we, "We"), bias=be))
    h = b.op("Relu", b.conv(h, 4, k=3, pads=1, group=4, weight=b.const(wd, "Wd"), bias=bd))
    b.output(b.conv(h, 3, k=1, pads=0, weight=b.const(wp, "Wp"), bias=np.zeros(3, np.float32)))
    return b.build(), wp


def test_removal_through_a_depthwise_conv_refits_the_projection(tmp_path: Path) -> None:
    """The depthwise conv passes the removed channel through (the same channel), so the first
    reader that mixes channels, the projection, is refitted against the original's output."""
    model, wp = _depthwise_chain()
    r = onnxprune.prune(
        model, "l2", ratio=0.25, calibration=_calib(tmp_path, (3, 6, 6)), compensation="none", reconstruct=True
    )
    assert r.report.channels_removed == 1 and r.report.verification.passed
    project = [s for s in r.analysis.sinks if s.node.startswith("Conv")][-1].node
    assert [x.node for x in r.report.reconstructed_layers] == [project]
    expected = wp[:, [0, 1, 2], 0, 0].astype(np.float64)
    expected[:, 1] += 0.5 * wp[:, 3, 0, 0]
    got = _weight(r.model, project)[:, :, 0, 0]
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()
    assert _held_out_error(model, r.model, (3, 6, 6)) <= 1e-4
    plain = onnxprune.prune(model, "l2", ratio=0.25, calibration=_calib(tmp_path, (3, 6, 6)), compensation="none")
    assert _held_out_error(model, plain.model, (3, 6, 6)) > 1e-2


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


def _bn_model(weights_as: str) -> tuple[onnx.ModelProto, np.ndarray]:
    """Conv A (4, no bias) -> BatchNormalization -> Relu -> Conv B (1x1, 5, no bias) ->
    BatchNormalization. A's channel 3 is 0.5 x channel 1 and its BatchNormalization keeps that
    (same gamma/var, half the mean and beta), so B absorbs the removal with column 1 += 0.5 x
    column 3. Weights are Constant nodes ('constant') or int8 through Cast -> Mul ('int8')."""
    b = GraphBuilder(opset=17, seed=33)
    x = b.input("x", [None, 3, 6, 6])
    wa = b.weights([4, 3, 3, 3])
    wa[0] *= 3
    wa[2] *= 3
    wa[3] = 0.5 * wa[1]
    wb = b.weights([5, 4, 1, 1])

    def weight(w: np.ndarray, base: str) -> str:
        if weights_as == "constant":
            return b.const(w, base, as_node=True)
        scale = np.float32(np.abs(w).max() / 127)
        q = np.round(w / scale).astype(np.int8)
        return b.op("Mul", b.op("Cast", b.const(q, base + "_q"), to=onnx.TensorProto.FLOAT), b.const(scale, "s"))

    wa_used = wa
    if weights_as == "int8":  # the model computes with the dequantised values: B's answer uses them
        s = np.float32(np.abs(wb).max() / 127)
        wb = np.round(wb / s).astype(np.int8).astype(np.float32) * s
        sa = np.float32(np.abs(wa).max() / 127)
        wa_used = np.round(wa / sa).astype(np.int8).astype(np.float32) * sa
        assert np.allclose(wa_used[3], 0.5 * wa_used[1], atol=0.6 * sa)  # quantised: only nearly redundant
    h = b.op("Conv", x, weight(wa, "Wa"), channels=4, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    gamma = np.array([1.0, 0.8, 1.2, 0.8], np.float32)
    var = np.array([1.0, 2.0, 0.5, 2.0], np.float32)
    mean = np.array([0.1, 0.4, -0.2, 0.2], np.float32)
    beta = np.array([0.3, 0.2, 0.1, 0.1], np.float32)
    h = b.op("BatchNormalization", h, *(b.const(v, n) for v, n in ((gamma, "g"), (beta, "b"), (mean, "m"), (var, "v"))))
    h = b.op("Relu", h)
    h = b.op("Conv", h, weight(wb, "Wb"), channels=5, kernel_shape=[1, 1])
    b.output(b.bn(h))
    return b.build(), wb


@pytest.mark.parametrize("weights_as", ["constant", "int8"])
def test_reader_with_computed_weights_before_batchnorm_is_refitted(tmp_path: Path, weights_as: str) -> None:
    """The refitted reader's output is the BatchNormalization's input: each output channel is
    its own least-squares problem and the BatchNormalization a per-channel affine map, so
    matching its input matches its output. A weight computed by nodes (Constant, Cast -> Mul)
    is replaced by the refitted initializer and the nodes that computed it go."""
    model, wb = _bn_model(weights_as)
    r = onnxprune.prune(
        model, "l2", ratio=0.25, calibration=_calib(tmp_path, (3, 6, 6)), compensation="none", reconstruct=True
    )
    assert r.report.channels_removed == 1 and r.report.verification.passed
    assert len(r.report.reconstructed_layers) == 1
    reader = r.report.reconstructed_layers[0].node
    expected = wb[:, [0, 1, 2], 0, 0].astype(np.float64)
    expected[:, 1] += 0.5 * wb[:, 3, 0, 0]
    got = _weight(r.model, reader)[:, :, 0, 0]
    if weights_as == "constant":
        assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()
        assert _held_out_error(model, r.model, (3, 6, 6)) <= 1e-4
    else:  # int8 rounding leaves channel 3 only nearly 0.5 x channel 1: the refit is near the answer
        assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()
    assert _unread_nodes(r.model) == []
    node = next(n for n in r.model.graph.node if n.name == reader)
    init = {t.name: t for t in r.model.graph.initializer}[node.input[1]]
    assert numpy_helper.to_array(init).dtype == np.float32
    if weights_as == "int8":  # the other layer keeps its int8 weight
        assert sum(t.data_type == onnx.TensorProto.INT8 for t in r.model.graph.initializer) == 1
    onnx.checker.check_model(r.model, full_check=True)


def test_reconstructed_model_still_reads_as_onnx_after_dropping_chains(tmp_path: Path) -> None:
    """Two readers of one shared weight (the same removed channels) are refitted together on
    their pooled rows and keep sharing one refitted weight; the Constant that computed it goes."""
    b = GraphBuilder(opset=17, seed=34)
    x = b.input("x", [None, 3, 6, 6])
    wa = b.weights([4, 3, 3, 3])
    wa[3] = 0.1 * wa[1]
    h = b.op("Relu", b.conv(x, 4, weight=b.const(wa, "Wa")))
    shared = b.const(b.weights([2, 4, 1, 1]), "Ws")
    p = b.conv(h, 2, k=1, pads=0, weight=shared, bias=False)
    q = b.conv(h, 2, k=1, pads=0, weight=shared, bias=False)
    b.output(b.op("Add", p, q))
    model = b.build()
    r = onnxprune.prune(
        model, "l2", ratio=0.25, calibration=_calib(tmp_path, (3, 6, 6)), compensation="none", reconstruct=True
    )
    assert len(r.report.reconstructed_layers) == 2
    readers = [n for n in r.model.graph.node if n.op_type == "Conv" and n.input[0] != "x"]
    assert len(readers) == 2 and len({n.input[1] for n in readers}) == 1
    assert {r.node for r in r.report.reconstructed_layers} == {n.name for n in readers}
    onnx.checker.check_model(r.model, full_check=True)
    assert _unread_nodes(r.model) == []


# -- re-calibration ------------------------------------------------------------------------------


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
            exclude=("Conv_node_1[0-9]",),
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
