"""A tiny dynamically quantized CNN (onnxruntime's ``quantize_dynamic``: DynamicQuantizeLinear ->
ConvInteger) whose own run-time quantization is noisy, and surgery-like faults in it: shared by
the OpenVINO IR check's tests and the pruning verification's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HW = 64
# Seed 2: onnxruntime's own noise runs flip 46 of the 4096 output elements past 1e-4 x scale,
# and OpenVINO's IR flips the same ones (measured on this project's CI machine).
NOISY_SEED = 2


def float_model(seed: int) -> onnx.ModelProto:
    """Conv(3->8) -> Relu -> Conv(8->8) -> Relu -> Conv(8->8) -> Relu -> Conv(8->1), 3x3, on 64x64."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, cin = [], [], "x", 3
    for i in range(4):
        cout = 1 if i == 3 else 8
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        if i < 3:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            x = f"r{i}"
        cin = cout
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
        [helper.make_tensor_value_info("c3", TensorProto.FLOAT, [1, 1, HW, HW])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def dynamic_model(tmp_path: Path, seed: int = NOISY_SEED) -> tuple[onnx.ModelProto, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(float_model(seed), tmp_path / "f.onnx")
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", weight_type=QuantType.QUInt8)
    return onnx.load(tmp_path / "q.onnx"), tmp_path / "q.onnx"


def noisy_feeds(seed: int = NOISY_SEED) -> list[dict[str, np.ndarray]]:
    return [{"x": np.random.default_rng(seed).random((1, 3, HW, HW)).astype(np.float32)}]


def with_fault(model: onnx.ModelProto, fault: str) -> onnx.ModelProto:
    """A copy with one surgery-like fault in the second ConvInteger: two filters swapped, or one
    channel's bias dropped."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    conv = [n for n in broken.graph.node if n.op_type == "ConvInteger"][1]
    inits = {i.name: i for i in broken.graph.initializer}
    if fault == "swap":
        w = numpy_helper.to_array(inits[conv.input[1]]).copy()
        w[[0, 1]] = w[[1, 0]]
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w, conv.input[1]))
    else:  # the bias the Add after ConvInteger -> Cast -> Mul reads (found by structure: pruning renames it)
        readers = {i: n for n in broken.graph.node for i in n.input}
        producers = {o: n for n in broken.graph.node for o in n.output}
        add = readers[readers[readers[conv.output[0]].output[0]].output[0]]
        name = next(i for i in add.input if i in inits or (i in producers and producers[i].op_type == "Reshape"))
        name = name if name in inits else producers[name].input[0]
        b = numpy_helper.to_array(inits[name]).copy()
        b.reshape(-1)[3] = 0
        inits[name].CopyFrom(numpy_helper.from_array(b, name))
    return broken


def dynamic_hw_model() -> onnx.ModelProto:
    """x[N,3,?,?] -> Conv -> y: a dynamic height and width, like the corpus's PP-OCR detector."""
    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])
    graph = helper.make_graph([node], "dynamic_hw", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
