"""What the int8 quantization tests share (tests/test_quantize.py, the library; tests/test_cli_quantize.py,
the quantize command and the prune --quantize chain): a tiny CNN, the module-scoped files NNCF
quantizes (models and calibration sets), and a look at an IR's weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

__all__ = ["files", "ir_weights_int8", "tiny_cnn"]


def tiny_cnn(custom: bool = False) -> onnx.ModelProto:
    """x[N,3,8,8] -> conv1 -> Relu -> conv2 -> Relu -> GlobalAveragePool -> Flatten -> fc -> [N,4]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w2"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b2"),
        numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "wf"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "bf"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node(
            "MyOp" if custom else "Relu", ["c2"], ["r2"], name="relu2", **({"domain": "com.example"} if custom else {})
        ),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom else [])
    return helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], inits), opset_imports=opsets)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(1)
    onnx.save(tiny_cnn(), d / "tiny.onnx")
    onnx.save(tiny_cnn(custom=True), d / "custom.onnx")
    np.savez(d / "cal.npz", x=rng.random((24, 3, 8, 8)).astype(np.float32))
    np.savez(d / "held.npz", x=rng.random((10, 3, 8, 8)).astype(np.float32))
    np.savez(d / "few.npz", x=rng.random((8, 3, 8, 8)).astype(np.float32))
    np.savez(d / "nhwc.npz", x=rng.random((24, 8, 8, 3)).astype(np.float32))
    return {p.stem: p for p in d.iterdir()}


def ir_weights_int8(xml: Path) -> dict[str, bool]:
    """Per Convolution of an IR: is an 8-bit constant or a FakeQuantize on its weights' path?"""
    import openvino as ov

    m = ov.Core().read_model(str(xml))
    out = {}
    for op in m.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        stack, found = [op.input_value(1).get_node()], False
        while stack:
            cur = stack.pop()
            t = cur.get_type_name()
            if t == "FakeQuantize" or (
                t == "Constant" and cur.get_output_element_type(0).get_type_name() in ("i8", "u8")
            ):
                found = True
            stack.extend(cur.input_value(i).get_node() for i in range(cur.get_input_size()))
        out[op.get_friendly_name()] = found
    return out
