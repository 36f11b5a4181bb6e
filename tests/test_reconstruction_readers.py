"""Reconstruction's readers (onnxprune.reconstruction_readers) on tiny graphs whose
least-squares answer is known in closed form: a removal through a depthwise conv is read by the
projection, a reader before a BatchNormalization or with weights computed by nodes is refitted
(the nodes go), readers sharing one weight are refitted together and keep sharing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run
from onnx import numpy_helper
from recovery_helpers import calib as _calib
from recovery_helpers import held_out_error as _held_out_error
from recovery_helpers import unread_nodes as _unread_nodes
from recovery_helpers import weight as _weight

import onnxprune
from onnxprune.testing import GraphBuilder


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


def _steps_model() -> onnx.ModelProto:
    """x [N, 4] -> MatMul (4 -> 3 features, feature 2 = 0.5 x feature 1) -> two "steps",
    Relu(h) and Relu(-h) (feature 2 is still 0.5 x feature 1 in each) -> one Gemm weight and
    bias shared by both steps, as an unrolled recurrent cell's -> Add."""
    b = GraphBuilder(opset=17, seed=41)
    x = b.input("x", [None, 4])
    w1 = b.weights([4, 3], axis=1)
    w1[:, 0] *= 3
    w1[:, 1] *= 3
    w1[:, 2] = 0.5 * w1[:, 1]
    h = b.op("MatMul", x, b.const(w1, "W1"), channels=3)
    w2, b2 = b.const(b.weights([2, 3]), "W2"), b.const(np.array([0.1, -0.2], np.float32), "B2")
    steps = [b.op("Relu", h), b.op("Relu", b.op("Neg", h))]
    outs = [b.op("Gemm", s, w2, b2, channels=2, transB=1) for s in steps]
    b.output(b.op("Add", *outs))
    return b.build()


def test_readers_of_one_weight_at_different_steps_are_refitted_together(tmp_path: Path) -> None:
    """An unrolled recurrent cell reads each time step with the same weight: the steps' rows are
    pooled into one fit and the readers keep sharing one refitted weight (no copy per step)."""
    model = _steps_model()
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(4).standard_normal((32, 4)).astype(np.float32))
    r = onnxprune.prune(model, "l2", ratio=0.34, calibration=str(calib), compensation="none", reconstruct=True)
    readers = [n for n in r.model.graph.node if n.op_type == "Gemm"]
    assert r.report.channels_removed == 1 and len(r.report.reconstructed_layers) == 2
    assert len({n.input[1] for n in readers}) == 1 and len({n.input[2] for n in readers}) == 1
    feeds = {"x": np.random.default_rng(5).standard_normal((8, 4)).astype(np.float32)}
    ref, got = run(model, feeds)[0], run(r.model, feeds)[0]
    assert float(np.abs(got - ref).max()) <= 1e-4 * float(np.abs(ref).max())
    assert len(r.model.graph.initializer) <= len(model.graph.initializer)
