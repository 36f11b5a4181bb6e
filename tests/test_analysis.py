"""analysis.py's boundary with onnx-graphsurgeon: the graph import and export of the analysis
and the surgery (the channel rules have their own test modules)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def _bfloat16_output_model() -> onnx.ModelProto:
    """A Conv whose graph output is cast to bfloat16: graphsurgeon has no numpy type for it."""
    w = np.zeros((4, 3, 3, 3), np.float32)
    w[:2] = np.random.default_rng(0).standard_normal((2, 3, 3, 3))
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "W2"], ["d"], name="conv2"),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.BFLOAT16, name="cast"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 2, 4, 4])],
        [
            onnx.numpy_helper.from_array(w, "W"),
            onnx.numpy_helper.from_array(np.ones((2, 4, 3, 3), np.float32), "W2"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_graphsurgeon_warnings_are_not_printed(tmp_path) -> None:
    """The library never prints: graphsurgeon's logger printed its warnings on stdout ('[W]
    Could not convert: BFLOAT16 to a corresponding NumPy type'), which polluted the output of
    `analyze` and of any program calling the API. A fresh process: graphsurgeon logs that
    warning once per process."""
    path = tmp_path / "bf16.onnx"
    onnx.save(_bfloat16_output_model(), path)
    code = (
        "import sys, onnxprune\n"
        "a = onnxprune.analyze(sys.argv[1])\n"
        "r = onnxprune.prune(sys.argv[1], verify=False)\n"
        "assert a.summary()['channels'] == 6 and r.report.channels_removed == 2, (a.summary(), r.report.channels_removed)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
