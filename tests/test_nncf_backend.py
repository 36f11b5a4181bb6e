"""What NNCF is handed: weights stored as int8 x scale (``INT8 initializer -> Cast ->
Mul(per-channel scale)``, tinyocr's PP-OCRv6 recogniser) folded to float32 initializers, and an
opset before 13 converted so that NNCF's ONNX backend quantizes weights per channel; and
``quantize`` on such a model (before: NNCF's ONNX backend failed with an AttributeError in
eliminate_nop_cast, and an opset 11 model's weights were quantized per tensor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.nncf_backend import PER_CHANNEL_OPSET, fold_cast_weights, per_channel_opset
from onnxprune.quantization import quantize

CONV_SCALES = np.array([0.01, 0.02, 0.005, 0.04], np.float32)  # per output channel
FC_SCALE = np.float32(0.03)


def _stored() -> tuple[np.ndarray, np.ndarray]:
    """The int8 weights of the conv [4, 3, 3, 3] and the MatMul [4, 5], each output channel
    reaching -127 or 127 (as a symmetric per-channel int8 quantizer stores them)."""
    rng = np.random.default_rng(0)
    conv = rng.integers(-100, 101, (4, 3, 3, 3)).astype(np.int8)
    conv[:, 0, 0, 0] = [127, -127, 127, -127]
    fc = rng.integers(-100, 101, (4, 5)).astype(np.int8)
    fc[0, :] = [127, -127, 127, -127, 127]
    return conv, fc


def int8_weight_model(opset: int = 11) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(Cast(int8) * scale[4,1,1,1], bias) -> Relu -> GlobalAveragePool ->
    Flatten -> MatMul(Cast(int8) * scale) -> y[N,5]. The MatMul's scale is also read by a Mul
    of the activations (so it must stay); a Cast of a stored int8 that no one reads is folded
    too (NNCF fails on any Cast of an initializer), a Relu no one reads stays."""
    conv, fc = _stored()
    inits = [
        numpy_helper.from_array(conv, "conv_q"),
        numpy_helper.from_array(CONV_SCALES.reshape(4, 1, 1, 1), "conv_scale"),
        numpy_helper.from_array(np.array([0.1, -0.2, 0.3, 0.0], np.float32), "conv_bias"),
        numpy_helper.from_array(fc, "fc_q"),
        numpy_helper.from_array(np.array(FC_SCALE), "fc_scale"),
        numpy_helper.from_array(np.array([1, 2], np.int8), "unused_q"),
    ]
    nodes = [
        helper.make_node("Cast", ["conv_q"], ["conv_f"], name="conv_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["conv_f", "conv_scale"], ["conv_w"], name="conv_dequant"),
        helper.make_node("Conv", ["x", "conv_w", "conv_bias"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Mul", ["f", "fc_scale"], ["fs"], name="activation_scale"),
        helper.make_node("Cast", ["fc_q"], ["fc_f"], name="fc_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["fc_f", "fc_scale"], ["fc_w"], name="fc_dequant"),
        helper.make_node("MatMul", ["fs", "fc_w"], ["y"], name="fc"),
        helper.make_node("Cast", ["unused_q"], ["unused_f"], name="unread_cast", to=TensorProto.FLOAT),
        helper.make_node("Relu", ["x"], ["unused_r"], name="unread_relu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    graph = helper.make_graph(nodes, "int8_weights", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _exact_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnxruntime without graph optimisations or weight pre-packing: the same kernels for a
    weight computed by nodes and for a stored one."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_int8_times_scale_weights_fold_to_the_float_values() -> None:
    model = int8_weight_model()
    before = model.SerializeToString()
    folded, names = fold_cast_weights(model)
    assert model.SerializeToString() == before  # a copy: the model given is untouched
    assert names == ("conv", "fc")
    inits = {i.name: i for i in folded.graph.initializer}
    conv, fc = _stored()
    # float32(int8) x float32 scale, one rounding each, as onnxruntime computes Cast -> Mul
    want_conv = conv.astype(np.float32) * CONV_SCALES.reshape(4, 1, 1, 1)
    want_fc = fc.astype(np.float32) * FC_SCALE
    assert inits["conv_w"].data_type == inits["fc_w"].data_type == TensorProto.FLOAT
    assert np.array_equal(numpy_helper.to_array(inits["conv_w"]), want_conv)
    assert np.array_equal(numpy_helper.to_array(inits["fc_w"]), want_fc)
    assert want_conv[1, 0, 0, 0] == np.float32(-127 * np.float32(0.02))  # one value by hand: -2.54 in float32
    # the nodes that computed them and the int8 tensors only they read are gone; the scale the
    # activations are also multiplied by stays, and so does the Relu no one read before
    assert [n.name for n in folded.graph.node] == [
        "conv",
        "relu",
        "gap",
        "flatten",
        "activation_scale",
        "fc",
        "unread_relu",
    ]
    assert sorted(inits) == ["conv_bias", "conv_w", "fc_scale", "fc_w"]
    onnx.checker.check_model(folded, full_check=True)
    # the weights equal what onnxruntime computes for them in the model as stored
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("conv_w", "fc_w"))
    x = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)
    y, conv_w, fc_w = _exact_session(probe).run(None, {"x": x})
    assert np.array_equal(conv_w, want_conv) and np.array_equal(fc_w, want_fc)
    assert np.array_equal(_exact_session(folded).run(None, {"x": x})[0], y)  # and so the outputs, bit for bit


def test_nothing_to_fold_returns_the_model_itself() -> None:
    conv, _ = _stored()
    w = numpy_helper.from_array(conv.astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        "float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    plain = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fold_cast_weights(plain) == (plain, ())
    stored, _ = fold_cast_weights(int8_weight_model())
    assert fold_cast_weights(stored) == (stored, ())  # folded once: nothing left
    to_int = helper.make_model(
        helper.make_graph(
            [helper.make_node("Cast", ["s"], ["y"], name="to_int", to=TensorProto.INT64)],
            "float_to_int",
            [],
            [helper.make_tensor_value_info("y", TensorProto.INT64, [2])],
            [numpy_helper.from_array(np.array([1.5, -2.5], np.float32), "s")],
        )
    )
    assert fold_cast_weights(to_int) == (to_int, ())  # a float to an integer is the runtime's to compute


def test_an_opset_before_13_is_converted_for_per_channel_weights() -> None:
    old = int8_weight_model(opset=11)
    converted, note = per_channel_opset(old)
    assert [(o.domain, o.version) for o in converted.opset_import] == [("", PER_CHANNEL_OPSET)]
    assert note.startswith("opset 11 converted to 13 in the model handed to NNCF")
    x = np.random.default_rng(2).random((2, 3, 8, 8)).astype(np.float32)
    assert np.array_equal(_exact_session(converted).run(None, {"x": x})[0], _exact_session(old).run(None, {"x": x})[0])
    new = int8_weight_model(opset=13)
    assert per_channel_opset(new) == (new, "")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, object]:
    tmp = tmp_path_factory.mktemp("int8w")
    model = tmp / "m.onnx"
    onnx.save(int8_weight_model(opset=11), model)
    cal = tmp / "cal.npz"
    np.savez(cal, x=np.random.default_rng(3).random((32, 3, 8, 8)).astype(np.float32))
    result = quantize(model, tmp / "q.onnx", calibration=cal)  # before: UnsupportedModel (NNCF's AttributeError)
    return onnx.load(tmp / "q.onnx"), result.report


def test_quantize_gives_the_int8_weights_back_per_channel(quantized: tuple[onnx.ModelProto, object]) -> None:
    q, report = quantized
    assert report.folded_weights == ("conv", "fc") and report.quantized_layers == ("conv", "fc")
    assert report.to_dict()["folded_weights"] == ["conv", "fc"]
    assert any(n.startswith("2 weights stored as int8 x scale (Cast -> Mul) were folded") for n in report.notes)
    assert any(n.startswith("opset 11 converted to 13") for n in report.notes)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}

    def weight(op: str) -> tuple[np.ndarray, np.ndarray]:
        dq = producers[next(n for n in q.graph.node if n.op_type == op).input[1]]
        assert dq.op_type == "DequantizeLinear"
        return inits[dq.input[0]], inits[dq.input[1]]

    conv, fc = _stored()
    # The MatMul: per output column (opset 13), on the stored int8 grid: each column's largest
    # |value| is 127, so NNCF's symmetric scale max|w| / 127 is the stored scale, and the int8
    # values come back as they were stored.
    fc_q, fc_s = weight("MatMul")
    assert fc_q.dtype == np.int8 and fc_s.shape == (5,) and np.array_equal(fc_q, fc)
    np.testing.assert_allclose(fc_s, np.full(5, FC_SCALE), rtol=1e-6, atol=0)
    # The conv, the first layer: per channel too, on 7 bits (NNCF's overflow fix for CPUs
    # without VNNI halves the first layer's range): within half a step of the stored weights.
    conv_q, conv_s = weight("Conv")
    assert conv_s.shape == (4,) and int(np.abs(conv_q).max()) == 64
    np.testing.assert_allclose(conv_s, CONV_SCALES * 127 / 63.5, rtol=1e-6, atol=0)
    folded = conv.astype(np.float32) * CONV_SCALES.reshape(4, 1, 1, 1)
    error = np.abs(conv_q.astype(np.float32) * conv_s.reshape(4, 1, 1, 1) - folded)
    assert np.all(error <= conv_s.reshape(4, 1, 1, 1) / 2 * (1 + 1e-5))  # ties (odd stored values) at half a step
    assert report.fidelity[0].score > 0.99  # the held-out samples: top-1 of 5 classes


def test_the_ir_keeps_the_stored_int8_weights(tmp_path: Path) -> None:
    """NNCF's OpenVINO backend is handed the model as stored: convert_model keeps the int8
    weights with their scales (OpenVINO's CPU plugin runs int8 kernels on them), so nothing is
    folded and the IR holds the stored int8 values, not a second rounding of them."""
    from onnxprune.openvino_ir import require_openvino

    model = tmp_path / "m.onnx"
    onnx.save(int8_weight_model(opset=11), model)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(3).random((32, 3, 8, 8)).astype(np.float32))
    report = quantize(model, tmp_path / "q.xml", calibration=cal).report
    assert report.folded_weights == () and not any("folded" in n for n in report.notes)
    ir = require_openvino().Core().read_model(tmp_path / "q.xml")
    int8 = [
        op.get_data()
        for op in ir.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"
    ]
    conv, fc = _stored()
    assert any(a.shape == conv.shape and np.array_equal(a, conv) for a in int8)
    assert any(a.shape == fc.shape and np.array_equal(a, fc) for a in int8)
