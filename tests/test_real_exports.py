"""Issue 11 items 6 and 7: static shapes from the data (--inputs, calibration .npz), MACs
unknown (never a partial sum) with the reason, budgets that refuse to rank on unknown MACs,
extra non-image inputs (a scalar sample rate, a recurrent state with its batch on axis 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from onnxprune.errors import UsageError
from onnxprune.metrics import model_cost
from onnxprune.testing import GraphBuilder


def _flatten_head(zero: tuple[int, ...] = (1,)) -> onnx.ModelProto:
    """Conv (filters ``zero`` are zero) -> Relu -> Flatten -> Gemm on an input with dynamic
    height and width: the Flatten needs static shapes to map the conv's channels."""
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("input", [None, 3, "h", "w"])
    b.channels[x] = 3
    y = b.op("Relu", b.conv(x, 4, zero=zero))
    f = b.op("Flatten", y, axis=1)
    w = b.const(b.rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32), "G")
    b.output(b.op("Gemm", f, w, transB=1))
    return b.build()


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_shapes_from_inputs_give_the_analysis_macs_and_verification(tmp_path: Path) -> None:
    model = _flatten_head()
    data = _npz(tmp_path / "x.npz", input=np.random.default_rng(0).random((3, 3, 6, 6), dtype=np.float32))
    without = onnxprune.prune(model, verify=False)
    assert without.report.channels_removed == 0  # the Flatten pins the conv without shapes
    assert without.report.macs_before is None and without.report.macs_after is None
    r = onnxprune.prune(model, verification_inputs=data)
    # The zero filter goes: the Flatten maps channels at the data's 6x6.
    assert r.report.channels_removed == 1 and r.report.verification.passed
    assert r.report.macs_before == 4 * 36 * 27 + 5 * 144 and r.report.macs_after == 3 * 36 * 27 + 5 * 108
    assert r.report.macs_unknown == "" and r.report.to_dict()["macs_unknown"] is None
    given = onnxprune.prune(model, input_shapes={"input": (1, 3, 6, 6)})
    assert (given.report.macs_before, given.report.macs_after) == (r.report.macs_before, r.report.macs_after)
    feed = {"input": np.random.default_rng(1).random((1, 3, 6, 6), dtype=np.float32)}
    want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    got = ort.InferenceSession(r.model.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_macs_unknown_in_text_json_and_markdown(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(_flatten_head(), src)
    rep, md = tmp_path / "r.json", tmp_path / "r.md"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxprune",
            "prune",
            str(src),
            "-o",
            str(tmp_path / "o.onnx"),
            "--no-verify",
            "--report",
            str(rep),
            "--markdown",
            str(md),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(rep.read_text())
    assert d["macs_before"] is None and d["macs_after"] is None and d["macs_complete"] is False
    assert "give --input-shape for 'input'" in d["macs_unknown"] and "--inputs" in d["macs_unknown"]
    # The known layers' partial sum (the Gemm alone: 720) is shown nowhere.
    partial = model_cost(_flatten_head(), {}).macs
    row = next(line for line in p.stdout.splitlines() if line.startswith("MACs"))
    assert "unknown" in row and "give --input-shape for 'input'" in row and f"{partial}" not in row
    md_row = next(line for line in md.read_text().splitlines() if line.startswith("| MACs"))
    assert md_row.startswith("| MACs (batch 1) | unknown | unknown |") and "'input'" in md_row


def test_macs_target_on_unknown_shapes_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(_flatten_head(zero=()), src)
    with pytest.raises(UsageError, match=r"macs_target needs the MACs of every layer.*give input_shapes for 'input'"):
        onnxprune.prune(str(src), "l2", macs_target=0.7)
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", "prune", str(src), "-o", str(tmp_path / "o.onnx"), "--macs-target", "0.7"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and str(src) in p.stderr, p.stderr
    assert not (tmp_path / "o.onnx").exists()
    # With the shapes from data it plans on the full count and meets the target.
    data = _npz(tmp_path / "x.npz", input=np.random.default_rng(0).random((4, 3, 6, 6), dtype=np.float32))
    r = onnxprune.prune(str(src), "l2", macs_target=0.7, verification_inputs=data)
    assert r.report.macs_after <= 0.7 * r.report.macs_before


def _scalar_and_state_model() -> onnx.ModelProto:
    """y = Conv1x1(Relu(Conv(x)) * sr / 16000) + ReduceSum(state); state [2, B, 4] (batch on axis 1), sr an
    int64 scalar; the conv's filter 2 is zero."""
    b = GraphBuilder(opset=17, seed=4)
    x = b.input("x", [None, 2, "t"])
    sr = b.input("sr", [], dtype=onnx.TensorProto.INT64)
    state = b.input("state", [2, None, 4])
    b.channels[x] = 2
    w = b.weights([3, 2, 3], zero_rows=[2])
    y = b.op("Conv", x, b.const(w, "W"), channels=3, kernel_shape=[3], pads=[1, 1])
    scale = b.op("Div", b.op("Cast", sr, to=onnx.TensorProto.FLOAT), b.const(np.array(16000, np.float32)))
    s = b.op("ReduceSum", state, b.const(np.array([0, 2], np.int64)), keepdims=0)  # [B]
    s = b.op("Unsqueeze", s, b.const(np.array([1, 2], np.int64)))
    h = b.op("Mul", b.op("Relu", y), scale)
    b.channels[h] = 3
    w2 = b.const(b.weights([1, 3, 1]), "W")
    b.output(b.op("Add", b.op("Conv", h, w2, channels=1, kernel_shape=[1]), s))
    return b.build()


def test_scalar_and_state_inputs_from_data(tmp_path: Path) -> None:
    model = _scalar_and_state_model()
    rng = np.random.default_rng(0)
    data = _npz(
        tmp_path / "x.npz",
        x=rng.random((2, 2, 10), dtype=np.float32),
        sr=np.array([16000, 8000], np.int64),  # one scalar per sample
        state=rng.random((2, 2, 1, 4), dtype=np.float32),  # whole [2, B, 4] states, stacked
    )
    r = onnxprune.prune(model, verification_inputs=data)
    assert r.report.channels_removed == 1 and r.report.verification.passed
    assert r.report.verification.outputs[0].samples == 2
    sess = ort.InferenceSession(r.model.SerializeToString())
    ref = ort.InferenceSession(model.SerializeToString())
    feed = {
        "x": rng.random((1, 2, 10), dtype=np.float32),
        "sr": np.array(8000, np.int64),
        "state": rng.random((2, 1, 4), dtype=np.float32),
    }
    np.testing.assert_allclose(sess.run(None, feed)[0], ref.run(None, feed)[0], rtol=0, atol=1e-6)
    assert r.report.macs_before == 3 * 10 * 6 + 10 * 3  # the data's t=10: shapes from the data


def test_scalar_array_must_hold_one_value_per_sample(tmp_path: Path) -> None:
    data = _npz(
        tmp_path / "x.npz",
        x=np.zeros((1, 2, 10), np.float32),
        sr=np.array(16000, np.int64),
        state=np.zeros((1, 2, 1, 4), np.float32),
    )
    with pytest.raises(UsageError, match=r"input 'sr' is a scalar in"):
        onnxprune.prune(_scalar_and_state_model(), verification_inputs=data)


# -- item 5: whole groups of a grouped Conv ---------------------------------------------------


def _grouped(dead_inputs: bool) -> onnx.ModelProto:
    """Conv A (4 -> 8) -> Relu -> grouped Conv G (8 -> 8, group=2) -> Relu -> Conv C (8 -> 2).
    G's second group has zero filters and bias; with ``dead_inputs`` so have A's filters 4..7,
    the channels that group reads (so every channel of the group is dead)."""
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [1, 4, 8, 8])
    b.channels[x] = 4
    a = b.op("Relu", b.conv(x, 8, zero=(4, 5, 6, 7) if dead_inputs else ()))
    g = b.op("Relu", b.conv(a, 8, group=2, zero=(4, 5, 6, 7)))
    b.output(b.conv(g, 2, k=1))
    return b.build()


def _conv_attrs(model: onnx.ModelProto) -> list[tuple[str, int, tuple[int, ...]]]:
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            out.append((n.name, int(group), inits[n.input[1]]))
    return out


def test_a_dead_group_of_a_grouped_conv_goes_whole() -> None:
    model = _grouped(dead_inputs=True)
    r = onnxprune.prune(model, "zero")
    assert r.report.verification.passed and r.report.channels_removed == 8  # A's 4 and G's 4
    shapes = [(group, w) for _, group, w in _conv_attrs(r.model)]
    assert shapes == [(1, (4, 4, 3, 3)), (1, (4, 4, 3, 3)), (1, (2, 4, 1, 1))], shapes
    onnx.checker.check_model(r.model, full_check=True)
    feed = {"x": np.random.default_rng(2).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    got = ort.InferenceSession(r.model.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # exact up to float summation order


def test_a_group_with_live_inputs_stays() -> None:
    r = onnxprune.prune(_grouped(dead_inputs=False), "zero")
    # G's dead outputs alone cannot go: the group still reads live channels, and removing 4
    # outputs from one group only would unbalance it.
    assert r.report.channels_removed == 0
    kept = [reason for g in r.report.kept_groups for reason in g.reasons]
    assert any(
        "every group must lose the same number of channels, or all of its inputs and outputs" in k for k in kept
    ), kept
    assert [group for _, group, _ in _conv_attrs(r.model)] == [1, 2, 1]


def _one_output_per_group() -> onnx.ModelProto:
    """Conv A (3 -> 8) -> Relu -> grouped Conv G (8 -> 4, group=4: 2 inputs, 1 output per
    group) -> Relu -> Conv C (4 -> 2, 1x1). A's filters 0 and 2 (groups 0 and 1) and G's filter
    1 are small: a 25% cut takes channels from two groups of G, which cannot be balanced."""
    b = GraphBuilder(opset=17, seed=8)
    x = b.input("x", [1, 3, 8, 8])
    b.channels[x] = 3
    wa = b.rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    wa[[0, 2]] *= 0.2
    wg = b.rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    wg[1] *= 0.05
    a = b.op("Relu", b.conv(x, 8, weight=b.const(wa, "WA")))
    g = b.op("Relu", b.conv(a, 4, group=4, weight=b.const(wg, "WG")))
    b.output(b.conv(g, 2, k=1))
    return b.build()


def _zeroed(model: onnx.ModelProto, filters: dict[str, list[int]]) -> onnx.ModelProto:
    """The model with these Conv filters and their biases zeroed (node name -> filters)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for n in out.graph.node:
        for index in (1, 2):
            if n.name in filters and index < len(n.input):
                values = onnx.numpy_helper.to_array(inits[n.input[index]]).copy()
                values[filters[n.name]] = 0
                inits[n.input[index]].CopyFrom(onnx.numpy_helper.from_array(values, n.input[index]))
    return out


@pytest.mark.parametrize("budget", [{"ratio": 0.25}, {"macs_target": 0.9}])
def test_lossy_planning_removes_a_whole_group_when_equal_removal_is_blocked(budget: dict) -> None:
    from onnxprune.planning import enforce_constraints

    model = _one_output_per_group()
    a = onnxprune.analyze(model)
    conv_a, conv_g = (s.node for s in a.sources[:2])
    # The lowest-scored channels alone: one output of G and inputs of two groups. Every grouped
    # Conv group must lose as many, so all of them are put back (before, nothing went).
    lowest = {int(a.root_of[a.sources[0].ids[c]]) for c in (0, 2)} | {int(a.root_of[a.sources[1].ids[1]])}
    assert enforce_constraints(a, lowest, {}) == set()
    r = onnxprune.prune(model, "l2", compensation="none", **budget)
    # G's group 1 goes whole: its inputs (A's channels 2 and 3) and its output (G's channel 1).
    removed = {m for g in r.plan.removed_groups for m in r.plan.members[g]}
    assert removed == {(conv_a, 2), (conv_a, 3), (conv_g, 1)}, removed
    assert [(group, w) for _, group, w in _conv_attrs(r.model)] == [
        (1, (6, 3, 3, 3)),
        (3, (3, 2, 3, 3)),
        (1, (2, 3, 1, 1)),
    ]
    assert r.report.verification.passed and r.report.macs_after < r.report.macs_before
    onnx.checker.check_model(r.model, full_check=True)
    # Independently: the pruned model equals the original with those filters zeroed (what its
    # readers then read: 0 after Relu, as compensation none replaces them).
    masked = _zeroed(model, {conv_a: [2, 3], conv_g: [1]})
    for seed in range(4):
        feed = {"x": np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)}
        want = ort.InferenceSession(masked.SerializeToString()).run(None, feed)[0]
        got = ort.InferenceSession(r.model.SerializeToString()).run(None, feed)[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


# -- a run-time target shape whose channel entry is a constant part of a Concat -----------------


def _view_head() -> onnx.ModelProto:
    """torch.export's ``x.view(x.size(0), 6)``: Conv (filters 1, 4 zero) -> Relu -> global
    pool -> Reshape(Concat(Shape(input)[0:1], [6])) -> Gemm, with a dynamic batch."""
    b = GraphBuilder(opset=17, seed=6)
    x = b.input("input", [None, 3, 5, 5])
    b.channels[x] = 3
    y = b.op("GlobalAveragePool", b.op("Relu", b.conv(x, 6, zero=(1, 4))))
    batch = b.op("Shape", x, end=1)
    target = b.op("Concat", batch, b.const(np.array([6], np.int64)), axis=0)
    flat = b.op("Reshape", y, target, channels=6)
    w = b.const(b.rng.standard_normal((3, 6)).astype(np.float32), "G")
    b.output(b.op("Gemm", flat, w, transB=1))
    return b.build()


def test_constant_channel_entry_of_a_concat_target_is_rewritten() -> None:
    model = _view_head()
    r = onnxprune.prune(model)  # verified at batch 1 and 2: the batch stays dynamic
    assert r.report.channels_removed == 2 and r.report.verification.passed
    assert {o.batch for o in r.report.verification.outputs} == {1, 2}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in r.model.graph.initializer}
    concat = next(n for n in r.model.graph.node if n.op_type == "Concat")
    assert inits[concat.input[1]].tolist() == [4]
    feed = {"input": np.random.default_rng(3).standard_normal((3, 3, 5, 5)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    got = ort.InferenceSession(r.model.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_written_file_has_protobufs_field_order(tmp_path: Path) -> None:
    """opset_import and metadata after the graph, as onnx.save writes them: OpenVINO's format
    detection refused picodet's pruned file (its metadata came before the graph)."""
    model = _flatten_head()
    onnx.helper.set_model_props(model, {"character": "a\nb\nc\u4e2d"})
    path = tmp_path / "o.onnx"
    onnxprune.prune(model, input_shapes={"input": (1, 3, 6, 6)}, output=path)
    data = path.read_bytes()
    assert data == onnx.load(path).SerializeToString()
    import openvino as ov

    assert len(ov.Core().read_model(str(path)).outputs) == 1


def test_convert_check_of_a_topk_head_compares_before_the_decisions(tmp_path: Path) -> None:
    """A YOLO end-to-end head whose near-tied scores reorder its rows between onnxruntime and
    OpenVINO: the IR check compares the tensors before TopK (and the output where both took
    the same decisions), as verification does; the rows themselves differ by half the scale."""
    from test_verification_tails import yolo_end2end

    src = tmp_path / "e2e.onnx"
    onnx.save(yolo_end2end(), src)
    from onnxprune.openvino_ir import convert_to_ir
    from onnxprune.verification import make_inputs

    model = onnxprune.load(src)
    feeds = [make_inputs(model, {"x": (1, 8, 32, 32)}, 1, 0, str(src))]
    check = convert_to_ir(
        model,
        str(tmp_path / "e2e.xml"),
        input_shapes={"x": (1, 8, 32, 32)},
        check_feeds=feeds,
        source=str(src),
        tolerance=1e-2,
    )
    assert check.passed and check.max_abs_diff <= 1e-2 * check.scale
    assert (tmp_path / "e2e.xml").exists() and (tmp_path / "e2e.bin").exists()


def _int8_weight_matmul() -> onnx.ModelProto:
    """x [1, 256] @ (Cast(int8 W) * scale) -> Relu: a weight-only int8 layer, for which
    OpenVINO's CPU plugin quantizes the activations dynamically unless told not to."""
    rng = np.random.default_rng(7)
    w = rng.integers(-127, 128, (256, 256), dtype=np.int8)
    nodes = [
        onnx.helper.make_node("Cast", ["W"], ["Wf"], to=onnx.TensorProto.FLOAT),
        onnx.helper.make_node("Mul", ["Wf", "S"], ["Wd"]),
        onnx.helper.make_node("MatMul", ["x", "Wd"], ["h"]),
        onnx.helper.make_node("Relu", ["h"], ["y"]),
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 256])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 256])],
        [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(np.full((1, 256), 0.01, np.float32), "S")],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_convert_check_runs_int8_weight_layers_in_f32(tmp_path: Path) -> None:
    src = tmp_path / "w8.onnx"
    onnx.save(_int8_weight_matmul(), src)
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", "convert", str(src), "-o", str(tmp_path / "w8.xml"), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr  # within 1e-4 x scale: no dynamic quantization in the check
    assert (tmp_path / "w8.xml").exists()
