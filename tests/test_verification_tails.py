"""Verification behind discontinuous tails (issue 11 item 3): outputs behind TopK / ArgMax
decisions are verified before them, compared where the decisions agree. Split from
test_verification.py, whose noise-floor, fault, NaN and interface tests stay there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from test_verification import dropped_bias_fold, noisy_cnn, run, wrong_slice_index

import onnxprune
from onnxprune.compensation import reader_masks, removed_id_mask
from onnxprune.errors import VerificationFailed
from onnxprune.masking import masked_reference
from onnxprune.tails import find_tails
from onnxprune.testing import GraphBuilder
from onnxprune.verification import SCALE_FLOOR


def yolo_end2end(seed: int = 0, anchors_side: int = 32, k: int = 100, noisy: bool = True) -> onnx.ModelProto:
    """Conv trunk -> per-anchor scores (``noisy``: the small difference of two nearly equal
    convolutions, amplified; else one convolution) through Sigmoid, and boxes -> TopK over all
    anchors -> GatherElements of the boxes -> [N, k, 5], like a YOLO end-to-end head: near-tied
    scores reorder rows on float noise alone."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", [None, 8, anchors_side, anchors_side])
    h = b.op("Relu", b.conv(x, 32))
    h = b.op("Relu", b.conv(h, 32))
    w = b.weights([1, 32, 1, 1]) * 4
    la = b.conv(h, 1, 1, weight=b.const(w, "Wa"), bias=False)
    lb = b.conv(
        h, 1, 1, weight=b.const(w + (1e-3 * b.rng.standard_normal(w.shape)).astype(np.float32), "Wb"), bias=False
    )
    gain = np.float32(30.0 if noisy else 0.05)  # not noisy: no saturated (tied) scores either
    logits = b.op("Mul", b.op("Sub", la, lb) if noisy else la, b.const(gain, "gain"))
    scores = b.op("Reshape", b.op("Sigmoid", logits), b.const(np.array([0, -1], np.int64), "shape"))
    boxes = b.conv(h, 4, 1)
    boxes = b.op("Transpose", b.op("Reshape", boxes, b.const(np.array([0, 4, -1], np.int64), "bshape")), perm=[0, 2, 1])
    values, indices = b.op("TopK", scores, b.const(np.array([k], np.int64), "k"), outputs=2, axis=-1)
    idx = b.op(
        "Tile",
        b.op("Unsqueeze", indices, b.const(np.array([2], np.int64), "ax")),
        b.const(np.array([1, 1, 4], np.int64), "reps"),
    )
    picked = b.op("GatherElements", boxes, idx, axis=1)
    b.output(
        b.op("Concat", picked, b.op("Unsqueeze", values, b.const(np.array([2], np.int64), "ax2")), axis=2),
        shape=[None, k, 5],
    )
    return b.build("yolo_end2end")


# -- item 3: discontinuous tails ----------------------------------------------------------------


def test_tails_found_behind_topk_and_argmax() -> None:
    tails = find_tails(yolo_end2end())
    (tail,) = tails.tails
    assert len(tail.ops) == 1 and tail.ops[0].startswith("TopK ")
    assert len(tail.decisions) == 1 and tail.decisions[0].startswith("TopK")
    # the scores TopK ranks and the boxes GatherElements picks from: continuous,
    # and the top-k scores themselves (order statistics: continuous)
    assert {n.split("_")[0] for n in tail.frontier} == {"Reshape", "Transpose", "Unsqueeze"}
    b = GraphBuilder()
    x = b.input("x", [1, 4, 3, 3])
    b.output(b.op("ArgMax", b.conv(x, 5), axis=1), TensorProto.INT64)
    b.output(b.op("Relu", b.conv(x, 2)))
    (only,) = find_tails(b.build()).tails
    assert only.ops[0].startswith("ArgMax") and only.frontier and find_tails(noisy_cnn()).tails == ()


def test_tails_computed_by_keeps_only_the_tails_a_candidate_still_computes() -> None:
    model = yolo_end2end()
    tails = find_tails(model)
    assert tails.computed_by(model) == tails
    (tail,) = tails.tails
    for gone in (tail.frontier[0], tail.decisions[0]):
        cut = onnx.ModelProto()
        cut.CopyFrom(model)
        for node in cut.graph.node:  # a candidate that no longer computes this tensor under its name
            node.output[:] = [o + "_renamed" if o == gone else o for o in node.output]
        assert tails.computed_by(cut).tails == (), gone


def _tail_inputs(tmp_path: Path, n: int = 6) -> str:
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(7).standard_normal((n, 8, 32, 32)).astype(np.float32))
    return str(path)


def test_yolo_end2end_lossy_prune_reorders_rows_but_passes(tmp_path: Path) -> None:
    model = yolo_end2end()
    inputs = _tail_inputs(tmp_path)
    result = onnxprune.prune(model, "l2", ratio=0.25, verification_inputs=inputs)
    v = result.report.verification
    assert v.passed and result.report.channels_removed > 0
    out = model.graph.output[0].name
    (tail,) = v.tails
    final = next(o for o in v.outputs if o.name == out)
    stand_ins = [o for o in v.outputs if o.stands_in_for]
    assert {o.name for o in stand_ins} == set(tail.frontier) and all(o.stands_in_for == (out,) for o in stand_ins)
    assert final.behind == tail.ops and final.samples == 6
    # Rows did reorder on float noise (that is what failed before): not compared where they did.
    assert final.compared < final.samples
    # Independently: the pruned model's TopK picks other rows than the masked original's on some
    # sample, by far more than any tolerance; its scores and boxes before the TopK stay close.
    from onnxprune.compensation import data_free_values
    from onnxprune.planning import PruningPlan

    estimates = data_free_values(
        model, result.analysis, PruningPlan("tmp", result.plan.removed_groups), onnxprune.default_registry(), {}
    )
    masked = masked_reference(
        model, result.analysis, reader_masks(result.analysis, removed_id_mask(result.analysis, result.plan), estimates)
    )
    xs = np.load(inputs)["x"]
    worst_row_jump = worst_frontier = 0.0
    for i in range(len(xs)):
        f = {"x": xs[i : i + 1]}
        ref, got = run(masked, f, extra=tail.frontier), run(result.model, f, extra=tail.frontier)
        worst_row_jump = max(worst_row_jump, float(np.abs(ref[out] - got[out]).max() / np.abs(ref[out]).max()))
        for n in tail.frontier:
            worst_frontier = max(
                worst_frontier, float(np.abs(ref[n] - got[n]).max() / max(np.abs(ref[n]).max(), SCALE_FLOOR))
            )
    assert worst_row_jump > 1e-2 and worst_frontier < 1e-2
    d = v.to_dict()
    assert d["discontinuous_outputs"][0]["output"] == out and d["discontinuous_outputs"][0]["verified_at"] == list(
        tail.frontier
    )


def test_discontinuous_output_compared_where_decisions_agree(tmp_path: Path) -> None:
    """Well separated scores: no decision flips, so the output itself is compared on every
    sample (and would fail like any other output past its limit)."""
    model = yolo_end2end(anchors_side=8, k=10, noisy=False)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.random.default_rng(3).standard_normal((4, 8, 8, 8)).astype(np.float32))
    v = onnxprune.prune(model, "l2", ratio=0.25, verification_inputs=str(inputs)).report.verification
    final = next(o for o in v.outputs if o.name == model.graph.output[0].name)
    assert final.behind and final.compared == final.samples == 4 and final.passed
    assert final.max_abs_diff <= final.limit < 1e-3 * final.scale


def test_yolo_end2end_fault_before_topk_fails(tmp_path: Path) -> None:
    inputs = _tail_inputs(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        wrong_slice_index(mp)
        with pytest.raises(VerificationFailed, match="verification failed"):
            onnxprune.prune(yolo_end2end(), "l2", ratio=0.25, verification_inputs=inputs)
    with pytest.MonkeyPatch.context() as mp:
        dropped_bias_fold(mp)
        with pytest.raises(VerificationFailed, match=r"verified for the discontinuous output|output"):
            onnxprune.prune(yolo_end2end(), "l2", ratio=0.25, verification_inputs=inputs)


def test_tail_tensors_are_not_added_to_the_written_model(tmp_path: Path) -> None:
    src, out = tmp_path / "y.onnx", tmp_path / "o.onnx"
    onnx.save(yolo_end2end(), src)
    onnxprune.prune(str(src), "l2", ratio=0.25, output=str(out), verification_inputs=_tail_inputs(tmp_path))
    assert [o.name for o in onnx.load(str(out)).graph.output] == [o.name for o in onnx.load(str(src)).graph.output]
