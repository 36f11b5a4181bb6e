"""tensor_cones on what the recalibration tests' plain conv chains do not have: subgraphs that
read outer tensors without naming them as inputs (If / Loop bodies), and sparse initializers.
A digest that missed them would let re-calibration's memo reuse statistics of a changed cone."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.runtime import session
from onnxprune.tensor_cones import cone_digests, cone_model


def _if_model(nested: bool = False) -> onnx.ModelProto:
    """x -> Conv(w) -> r = Relu; c -> If: then Identity(r) (nested: inside a second If), else
    Neg(r) -> y. The If names only ``c`` as its input; its branches read ``r`` from outside.
    A second, unrelated Conv(v) -> z is an output too."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), "w")
    v = numpy_helper.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), "v")
    out = helper.make_tensor_value_info("t", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Identity", ["r"], ["t"])], "then", [], [out])
    if nested:
        inner = helper.make_node("If", ["c"], ["t"], then_branch=then, else_branch=then)
        then = helper.make_graph([inner], "outer_then", [], [out])
    other = helper.make_graph([helper.make_node("Neg", ["r"], ["t"])], "else", [], [out])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other),
        helper.make_node("Conv", ["x", "v"], ["z"], name="side"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
        ],
        [w, v],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _scaled(model: onnx.ModelProto, name: str, factor: float) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    t = next(t for t in out.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), name))
    return out


def test_a_subgraphs_outer_read_is_part_of_the_digest() -> None:
    for nested in (False, True):
        model = _if_model(nested)
        before = cone_digests(model)
        after = cone_digests(_scaled(model, "w", 2.0))
        assert after["y"] != before["y"], nested  # read only inside the If's branches
        assert after["z"] == before["z"] and after["x"] == before["x"]
        side = cone_digests(_scaled(model, "v", 2.0))
        assert side["y"] == before["y"] and side["z"] != before["z"]


def test_the_cut_model_keeps_what_a_subgraph_reads() -> None:
    model = _if_model(nested=True)
    cut = cone_model(model, ["y"])
    assert [n.name for n in cut.graph.node] == ["conv", "relu", "if"]  # not the side conv
    assert [t.name for t in cut.graph.initializer] == ["w"]
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    for c in (True, False):
        feed = {"x": x, "c": np.array(c)}
        (want,) = session(model).run(feed, ["y"])
        (got,) = session(cut).run(feed, ["y"])
        assert np.array_equal(want, got)
        assert np.array_equal(got, np.maximum(want, 0) if c else want) and np.any(got != 0)


def _sparse_model(values: list[float]) -> onnx.ModelProto:
    """y = x @ S, S a 3x2 sparse initializer with ``values`` at (0, 0) and (2, 1)."""
    dense = helper.make_tensor("S", TensorProto.FLOAT, [2], values)
    indices = helper.make_tensor("S_idx", TensorProto.INT64, [2], [0, 5])
    sparse = helper.make_sparse_tensor(dense, indices, [3, 2])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "S"], ["y"]), helper.make_node("Relu", ["x"], ["r"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
        ],
        sparse_initializer=[sparse],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_sparse_initializers_values_are_part_of_the_digest() -> None:
    before = cone_digests(_sparse_model([1.0, 2.0]))
    after = cone_digests(_sparse_model([1.0, 3.0]))
    assert before["y"] != after["y"] and before["r"] == after["r"]
    assert cone_digests(_sparse_model([1.0, 2.0])) == before
    assert len(cone_model(_sparse_model([1.0, 2.0]), ["y"]).graph.sparse_initializer) == 1
    assert len(cone_model(_sparse_model([1.0, 2.0]), ["r"]).graph.sparse_initializer) == 0
