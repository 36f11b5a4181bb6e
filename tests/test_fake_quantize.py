"""Tiny onnx.helper models of the patterns NNCF's int8 exports use (issue 11 item 1), each
pruned by onnxprune and checked independently: FakeQuantize models in OpenVINO at f32 (which
runs the op natively), QDQ models in onnxruntime on both its paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.errors import VerificationFailed
from onnxprune.fake_quantize import expand_fake_quantize, fake_quantize_values
from onnxprune.quantized import FLIP_LIMIT, check_quantized, quantization_form

ov = pytest.importorskip("openvino")
F = np.float32
DOMAIN = "org.openvinotoolkit"
# A zero filter's range (NNCF keeps the trained one): FakeQuantize's float formula maps 0 to
# 1.5e-8 with it, not to 0.
ZERO_FILTER_HIGH = F(0.11407035)


class Builder:
    """Nodes, Constant-node parameters (as NNCF writes them) and initializers of one graph."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.k = 0

    def name(self, base: str) -> str:
        self.k += 1
        return f"{base}{self.k}"

    def const(self, value: np.ndarray, base: str = "c") -> str:
        out = self.name(base)
        self.nodes.append(
            helper.make_node(
                "Constant", [], [out], name=out + "_node", value=numpy_helper.from_array(np.asarray(value), out + "_t")
            )
        )
        return out

    def init(self, value: np.ndarray, base: str = "i") -> str:
        out = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), out))
        return out

    def op(self, op: str, inputs: list[str], domain: str = "", **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", domain=domain, **attrs))
        return out

    def fq(self, x: str, low: str, high: str) -> str:
        """NNCF's form: one Constant as input_low and output_low, one as input_high and output_high."""
        return self.op("FakeQuantize", [x, low, high, low, high], domain=DOMAIN, levels=256)

    def weight_fq(self, w: np.ndarray) -> str:
        """A weight as a Constant node through a per-output-channel FakeQuantize ([C,1,1,1])."""
        high = np.abs(w).reshape(len(w), -1).max(axis=1).reshape(-1, 1, 1, 1).astype(F)
        high[high == 0] = ZERO_FILTER_HIGH
        return self.fq(
            self.const(w.astype(F), "w"), self.const((-128 / 127 * high).astype(F), "lo"), self.const(high, "hi")
        )

    def bn(self, x: str, c: int, zero: list[int]) -> str:
        """BatchNormalization as NNCF leaves it after a masked conv: scale and bias 0 on ``zero``,
        running statistics not masked."""
        scale = self.rng.uniform(0.5, 1.5, c).astype(F)
        bias = self.rng.uniform(-0.5, 0.5, c).astype(F)
        scale[zero] = 0
        bias[zero] = 0
        mean, var = self.rng.uniform(-0.2, 0.2, c).astype(F), self.rng.uniform(0.5, 1.5, c).astype(F)
        return self.op("BatchNormalization", [x, *(self.const(v, "bn") for v in (scale, bias, mean, var))])

    def model(self, outputs: dict[str, list[int]], shape: list[int], fq: bool = True) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
            self.inits,
        )
        opsets = [helper.make_opsetid("", 14)] + ([helper.make_opsetid(DOMAIN, 1)] if fq else [])
        return helper.make_model(graph, opset_imports=opsets)

    def filters(self, cout: int, cin: int, k: int, zero: list[int]) -> np.ndarray:
        w = self.rng.standard_normal((cout, cin, k, k)).astype(F) * F(0.5)
        w[zero] = 0
        return w


def conv_bn_fq_model() -> onnx.ModelProto:
    """Conv (weight through FakeQuantize, filters 2 and 5 zero) -> BN (scale, bias 0 there) -> Relu
    -> activation FakeQuantize (per tensor; its low Constant shared with the next one) -> Conv
    (weight through FakeQuantize, padded) -> activation FakeQuantize -> output."""
    b = Builder(1)
    w1 = b.filters(8, 3, 3, [2, 5])
    y = b.op("Conv", ["input", b.weight_fq(w1)], pads=[1, 1, 1, 1])
    y = b.op("Relu", [b.bn(y, 8, [2, 5])])
    zero = b.const(np.array([0], F), "zero")
    y = b.fq(y, zero, b.const(np.array([3.1], F), "hi"))
    y = b.op("Conv", [y, b.weight_fq(b.filters(4, 8, 3, []))], pads=[1, 1, 1, 1])
    y = b.op("Relu", [y])
    y = b.fq(y, zero, b.const(np.array([4.2], F), "hi"))
    b.nodes.append(helper.make_node("Identity", [y], ["out"], name="out_node"))
    return b.model({"out": [1, 4, 8, 8]}, [1, 3, 8, 8])


def depthwise_shared_ranges_model() -> onnx.ModelProto:
    """Two branches whose activation FakeQuantizes share one per-channel [1,8,1,1] input_low /
    output_low Constant (and one high): branch 1 (conv filters 1 and 6 zero, BNs masked) feeds a
    depthwise conv, branch 2 keeps every channel."""
    b = Builder(2)
    low = b.const((-0.01 * np.arange(1, 9, dtype=F)).reshape(1, 8, 1, 1), "lo")
    high = b.const(np.linspace(1.0, 2.0, 8, dtype=F).reshape(1, 8, 1, 1), "hi")
    y = b.op("Conv", ["input", b.weight_fq(b.filters(8, 3, 1, [1, 6]))])
    y = b.op("Relu", [b.bn(y, 8, [1, 6])])
    y = b.fq(y, low, high)
    y = b.op("Conv", [y, b.weight_fq(b.filters(8, 1, 3, [1, 6]))], group=8, pads=[1, 1, 1, 1])
    y = b.op("Relu", [b.bn(y, 8, [1, 6])])
    b.nodes.append(helper.make_node("Conv", [y, b.weight_fq(b.filters(4, 8, 1, []))], ["out1"], name="head1"))
    z = b.op("Relu", [b.op("Conv", ["input", b.weight_fq(b.filters(8, 3, 1, []))])])
    z = b.fq(z, low, high)
    b.nodes.append(helper.make_node("Conv", [z, b.weight_fq(b.filters(4, 8, 1, []))], ["out2"], name="head2"))
    return b.model({"out1": [1, 4, 8, 8], "out2": [1, 4, 8, 8]}, [1, 3, 8, 8])


def openvino_outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    outs = [compiled({"input": x[i : i + 1]}) for i in range(len(x))]
    return [np.concatenate([o[compiled.outputs[k]] for o in outs]) for k in range(len(compiled.outputs))]


def producer_of(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if name in n.output), None)


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray:
    inits = {i.name: i for i in model.graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producer_of(model, name)
    assert node.op_type == "Constant"
    return numpy_helper.to_array(node.attribute[0].t)


def weight_behind(model: onnx.ModelProto, conv: onnx.NodeProto) -> tuple[np.ndarray, onnx.NodeProto]:
    fq = producer_of(model, conv.input[1])
    assert fq.op_type == "FakeQuantize"
    return constant_value(model, fq.input[0]), fq


def test_zero_filters_behind_fake_quantize_are_proved_by_batchnorm() -> None:
    """The zero filters are not zero after FakeQuantize by its float formula; the BN whose scale
    and bias are 0 proves the channels zero, and exactly they go. OpenVINO (f32) gives the
    same outputs for both models."""
    model = conv_bn_fq_model()
    b = Builder(1)
    w1 = b.filters(8, 3, 3, [2, 5])
    high = np.abs(w1).reshape(8, -1).max(axis=1).astype(F)
    high[high == 0] = ZERO_FILTER_HIGH
    after_fq = fake_quantize_values(np.zeros(8, F), -128 / 127 * high, high, -128 / 127 * high, high, 256)
    assert np.all(after_fq[[2, 5]] != 0)  # the float formula leaves them a few 1e-8 off zero
    conv1 = next(n for n in model.graph.node if n.op_type == "Conv")
    assert np.array_equal(weight_behind(model, conv1)[0], w1)

    result = onnxprune.prune(model, "zero")
    assert result.report.channels_removed == 2
    assert quantization_form(model) == "FakeQuantize" and result.report.verification.quantized.passed
    pruned_conv1 = next(n for n in result.model.graph.node if n.op_type == "Conv")
    w, fq = weight_behind(result.model, pruned_conv1)
    assert np.array_equal(w, np.delete(w1, [2, 5], axis=0))
    assert fq.input[1] == fq.input[3] and constant_value(result.model, fq.input[1]).shape == (6, 1, 1, 1)
    assert np.array_equal(constant_value(result.model, fq.input[2]), high[[0, 1, 3, 4, 6, 7]].reshape(6, 1, 1, 1))

    x = np.random.default_rng(0).standard_normal((16, 1, 3, 8, 8)).astype(F).reshape(16, 3, 8, 8)
    (before,), (after,) = openvino_outputs(model, x), openvino_outputs(result.model, x)
    assert float(np.abs(before - after).max()) <= 1e-5 * float(np.abs(before).max())

    # Without the BatchNormalization's proof the channels stay: FakeQuantize alone does not give 0.
    unproved = onnx.ModelProto()
    unproved.CopyFrom(model)
    bn = next(n for n in unproved.graph.node if n.op_type == "BatchNormalization")
    scale = producer_of(unproved, bn.input[1])
    values = numpy_helper.to_array(scale.attribute[0].t).copy()
    values[[2, 5]] = 1.0
    scale.attribute[0].t.CopyFrom(numpy_helper.from_array(values, scale.attribute[0].t.name))
    assert onnxprune.prune(unproved, "zero").report.channels_removed == 0


def test_shared_per_channel_ranges_are_sliced_copy_on_write() -> None:
    """One [1,8,1,1] Constant is input_low and output_low of two activation FakeQuantizes: the
    pruned branch's copy loses channels 1 and 6 (sliced once for both of its inputs), the
    other branch keeps all 8; OpenVINO (f32) gives the same outputs."""
    model = depthwise_shared_ranges_model()
    result = onnxprune.prune(model, "zero")
    assert result.report.channels_removed == 2
    fqs = [
        n
        for n in result.model.graph.node
        if n.op_type == "FakeQuantize" and getattr(producer_of(result.model, n.input[0]), "op_type", "") == "Relu"
    ]
    shapes = sorted(constant_value(result.model, n.input[1]).shape[1] for n in fqs)
    assert shapes == [6, 8]
    for n in fqs:
        assert n.input[1] == n.input[3] and n.input[2] == n.input[4]
    sliced = next(n for n in fqs if constant_value(result.model, n.input[1]).shape[1] == 6)
    assert np.allclose(constant_value(result.model, sliced.input[1]).reshape(-1), -0.01 * np.array([1, 3, 4, 5, 6, 8]))
    depthwise = next(
        n for n in result.model.graph.node if n.op_type == "Conv" and any(a.name == "group" for a in n.attribute)
    )
    assert next(a.i for a in depthwise.attribute if a.name == "group") == 6

    x = np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(F)
    for before, after in zip(openvino_outputs(model, x), openvino_outputs(result.model, x)):
        assert float(np.abs(before - after).max()) <= 1e-5 * float(np.abs(before).max())


def test_analysis_reads_weights_behind_fake_quantize() -> None:
    """Each conv behind FakeQuantize is a layer: analysis sources and l2 scores see its filters."""
    model = depthwise_shared_ranges_model()
    analysis = onnxprune.analyze(model)
    assert len(analysis.sources) == 5 - 1  # the depthwise conv maps its input's ids
    result = onnxprune.prune(model, "l2", ratio=0.25)
    assert result.report.channels_removed > 2 and result.report.verification.passed


def test_expansion_matches_openvino() -> None:
    """The standard-ops expansion onnxruntime runs computes what OpenVINO's FakeQuantize does:
    per-channel and per-tensor ranges, values below, inside and above them, levels 256 and 16."""
    for levels in (256, 16):
        b = Builder(3)
        low = b.const(np.array([-1.0, -0.5, 0.0, -2.0], F).reshape(1, 4, 1, 1), "lo")
        high = b.const(np.array([1.0, 0.25, 3.0, 2.0], F).reshape(1, 4, 1, 1), "hi")
        y = b.op(
            "FakeQuantize",
            ["input", low, high, b.const(np.array([-3.0], F)), b.const(np.array([5.0], F))],
            domain=DOMAIN,
            levels=levels,
        )
        b.nodes.append(helper.make_node("Identity", [y], ["out"], name="out_node"))
        model = b.model({"out": [1, 4, 16, 16]}, [1, 4, 16, 16])
        x = (np.random.default_rng(levels).standard_normal((4, 4, 16, 16)) * 2).astype(F)
        sess = ort.InferenceSession(expand_fake_quantize(model).SerializeToString(), providers=["CPUExecutionProvider"])
        ours = np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
        (theirs,) = openvino_outputs(model, x)
        step = 8.0 / (levels - 1)
        diff = np.abs(ours - theirs)
        assert float(diff.max()) <= step * 1.0001  # a value on a rounding edge may land one step away
        assert np.count_nonzero(diff > 1e-5) <= 2
        assert not any(n.op_type == "FakeQuantize" for n in expand_fake_quantize(model).graph.node)


def test_quantized_check_catches_a_wrong_slice() -> None:
    """A surgery bug (two kept filters swapped, their ranges not) moves every sample: the
    quantized rule (isolated rounding flips) does not hide it."""
    model = conv_bn_fq_model()
    pruned = onnxprune.prune(model, "zero").model
    broken = onnx.ModelProto()
    broken.CopyFrom(pruned)
    conv1 = next(n for n in broken.graph.node if n.op_type == "Conv")
    fq = producer_of(broken, conv1.input[1])
    const = producer_of(broken, fq.input[0]) if fq.input[0] not in {i.name for i in broken.graph.initializer} else None
    w = constant_value(broken, fq.input[0]).copy()
    w[[0, 1]] = w[[1, 0]]
    if const is None:
        t = next(i for i in broken.graph.initializer if i.name == fq.input[0])
        t.CopyFrom(numpy_helper.from_array(w, t.name))
    else:
        const.attribute[0].t.CopyFrom(numpy_helper.from_array(w, const.attribute[0].t.name))
    x = np.random.default_rng(2).standard_normal((8, 1, 3, 8, 8)).astype(F)
    feeds = [{"input": s} for s in x]
    good = check_quantized("FakeQuantize", model, pruned, feeds, lambda _n, scale: 1e-5 * scale)
    bad = check_quantized("FakeQuantize", model, broken, feeds, lambda _n, scale: 1e-5 * scale)
    assert good.passed and not bad.passed
    assert bad.paths[0].flipped_samples == 8 and bad.paths[0].max_abs_diff > FLIP_LIMIT * bad.paths[0].scale


def test_convert_int8_tolerance_still_catches_a_broken_ir(tmp_path: Path) -> None:
    """convert of a quantized model allows OpenVINO's int8 rounding, not a wrong IR."""
    from onnxprune import openvino_ir

    model = conv_bn_fq_model()
    feeds = [{"input": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(F)}]
    check = openvino_ir.convert_to_ir(model, tmp_path / "m.xml", check_feeds=feeds)
    assert (
        check is not None
        and check.passed
        and check.quantized == "FakeQuantize"
        and check.tolerance == openvino_ir.IR_TOLERANCE["int8"]
    )
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    conv1 = next(n for n in broken.graph.node if n.op_type == "Conv")
    const = producer_of(broken, producer_of(broken, conv1.input[1]).input[0])
    w = numpy_helper.to_array(const.attribute[0].t).copy()
    const.attribute[0].t.CopyFrom(
        numpy_helper.from_array(w[::-1].copy(), const.attribute[0].t.name)
    )  # filters out of order
    core_model = ov.convert_model(__import__("io").BytesIO(broken.SerializeToString()))
    with pytest.raises(VerificationFailed, match="int8 path"):
        openvino_ir._check_ir(ov, core_model, model, feeds, "fp32", "m.onnx")
