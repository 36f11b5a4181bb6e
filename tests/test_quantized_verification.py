"""Verification of quantized models (issue 11 item 1): QDQ on the float emulation and on the
integer path onnxruntime deploys (QLinearConv), and the explicit rule that tells an isolated
rounding flip from a surgery bug, checked on onnxruntime runs of onnx.helper models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.quantized import (
    FLIP_LIMIT,
    FLIP_SHARE,
    check_quantized,
    quantization_form,
)

F = np.float32


def qdq_conv_model() -> onnx.ModelProto:
    """input -> Q/DQ -> Conv (int8 weight, per-channel scales; filter 2 zero) -> Q/DQ -> Conv ->
    Q/DQ -> output: the pattern onnxruntime's optimiser fuses into QLinearConv."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qdq(x: str, scale: float, tag: str) -> str:
        nodes.append(
            helper.make_node(
                "QuantizeLinear",
                [x, init(f"s_{tag}", np.array(scale, F)), init(f"z_{tag}", np.array(0, np.uint8))],
                [f"q_{tag}"],
                name=f"Q_{tag}",
            )
        )
        nodes.append(
            helper.make_node("DequantizeLinear", [f"q_{tag}", f"s_{tag}", f"z_{tag}"], [f"dq_{tag}"], name=f"DQ_{tag}")
        )
        return f"dq_{tag}"

    def weight(cout: int, cin: int, zero: list[int], tag: str) -> str:
        w = rng.integers(-100, 100, (cout, cin, 3, 3)).astype(np.int8)
        w[zero] = 0
        init(f"w_{tag}", w)
        init(f"ws_{tag}", rng.uniform(0.002, 0.01, cout).astype(F))
        init(f"wz_{tag}", np.zeros(cout, np.int8))
        nodes.append(
            helper.make_node(
                "DequantizeLinear", [f"w_{tag}", f"ws_{tag}", f"wz_{tag}"], [f"wdq_{tag}"], name=f"WDQ_{tag}", axis=0
            )
        )
        return f"wdq_{tag}"

    x = qdq("input", 0.02, "in")
    nodes.append(helper.make_node("Conv", [x, weight(8, 3, [2, 5], "1")], ["c1"], name="conv1", pads=[1, 1, 1, 1]))
    x = qdq("c1", 0.03, "1")
    nodes.append(helper.make_node("Conv", [x, weight(4, 8, [], "2")], ["c2"], name="conv2", pads=[1, 1, 1, 1]))
    out = qdq("c2", 0.05, "2")
    nodes.append(helper.make_node("Identity", [out], ["out"], name="out_node"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def optimized_ops(model: onnx.ModelProto, tmp_path: Path) -> set[str]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node}


def run(model: onnx.ModelProto, x: np.ndarray, optimize: bool) -> np.ndarray:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])


def test_qdq_is_verified_on_both_paths(tmp_path: Path) -> None:
    """The zero filters go; the report proves the result on the float emulation and on the
    optimised session, where onnxruntime runs QLinearConv; both agree with the original."""
    model = qdq_conv_model()
    assert quantization_form(model) == "QDQ"
    assert "QLinearConv" in optimized_ops(model, tmp_path)
    result = onnxprune.prune(model, "zero")
    assert result.report.channels_removed == 2
    assert "QLinearConv" in optimized_ops(result.model, tmp_path)
    q = result.report.verification.quantized
    assert q.form == "QDQ" and [p.passed for p in q.paths] == [True, True]
    assert "optimisations off" in q.paths[0].runtime and "optimisations on" in q.paths[1].runtime
    assert result.report.to_dict()["verification"]["quantized"]["paths"][1]["samples"] == 8
    x = np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(F)
    for optimize in (False, True):
        before, after = run(model, x, optimize), run(result.model, x, optimize)
        assert float(np.abs(before - after).max()) <= 1e-5 * float(np.abs(before).max())


def tie_model(nudge: float) -> onnx.ModelProto:
    """input (+ nudge) -> QuantizeLinear (scale 0.125) -> DequantizeLinear -> x10: an input of
    0.0625 lies on a rounding edge (ties to even: step 0), a nudge moves it one step."""
    inits = [
        numpy_helper.from_array(np.array(nudge, F), "nudge"),
        numpy_helper.from_array(np.array(0.125, F), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.array(10, F), "ten"),
    ]
    nodes = [
        helper.make_node("Add", ["input", "nudge"], ["a"], name="add"),
        helper.make_node("QuantizeLinear", ["a", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
        helper.make_node("Mul", ["dq", "ten"], ["out"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def tie_feeds(ties: int, big: float) -> list[dict[str, np.ndarray]]:
    """8 samples; the first ``ties`` have an element on a rounding edge, every one holds ``big``."""
    feeds = []
    for i in range(8):
        x = np.array([[big, 1.0, -2.0, 0.0625 if i < ties else 0.25]], F)
        feeds.append({"input": x})
    return feeds


def test_one_rounding_flip_is_not_a_failure_but_many_are() -> None:
    """One sample of 8 one step off, by 1% of the scale: an isolated flip, passed on both paths.
    Every sample off, or one sample off by more than FLIP_LIMIT of the scale: failed."""
    reference, candidate = tie_model(0.0), tie_model(1e-4)

    def limit(_name: str, scale: float) -> float:
        return 1e-5 * scale

    one = check_quantized("QDQ", reference, candidate, tie_feeds(1, 12.0), limit)
    assert one.passed and [p.flipped_samples for p in one.paths] == [1, 1]
    assert one.paths[0].max_abs_diff == 1.25 and 1.25 <= FLIP_LIMIT * one.paths[0].scale
    many = check_quantized("QDQ", reference, candidate, tie_feeds(8, 12.0), limit)
    assert not many.passed and many.paths[0].flipped_samples == 8 > FLIP_SHARE * 8
    large = check_quantized("QDQ", reference, candidate, tie_feeds(1, 2.0), limit)
    assert not large.passed  # 1.25 of a scale of 20: no rounding flip of this model moves it so far
    same = check_quantized("QDQ", reference, tie_model(0.0), tie_feeds(8, 12.0), limit)
    assert same.passed and same.paths[0].max_abs_diff == 0


def argmax_tie_model(nudge: float) -> onnx.ModelProto:
    """tie_model followed by TopK(k=1): its indices jump when a rounding flip makes a near-tie."""
    m = tie_model(nudge)
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "k"))
    g.node.append(helper.make_node("TopK", ["out", "k"], ["top", "index"], name="topk", axis=1))
    del g.output[:]
    g.output.extend(
        [
            helper.make_tensor_value_info("top", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("index", TensorProto.INT64, [1, 1]),
        ]
    )
    return m


def test_a_flip_that_flips_a_decision_is_judged_before_it() -> None:
    """A rounding flip that turns a near-tie into a tie changes TopK's index by a whole
    position: the quantized rule judges the scores TopK ranks instead (see tails)."""
    feeds = [{"input": np.array([[0.0625, 0.1, -2.0, -3.0]], F)}]
    feeds += [{"input": np.array([[0.5, 0.25, -2.0, 12.0]], F)} for _ in range(7)]
    reference, candidate = argmax_tie_model(0.0), argmax_tie_model(1e-4)
    sess = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (reference, candidate)
    ]
    assert [int(s.run(["index"], feeds[0])[0][0, 0]) for s in sess] == [1, 0]  # the decision flips
    check = check_quantized("QDQ", reference, candidate, feeds, lambda _n, scale: 1e-5 * scale)
    assert check.passed and check.paths[0].worst_output == "out" and check.paths[0].flipped_samples == 1
