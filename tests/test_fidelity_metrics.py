"""Task-aware fidelity metrics on tiny arrays with known answers: each catches a change that
breaks the task while cosine alone does not; each output's metric is detected from its shape
and values (with a reason), or chosen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import onnxprune
from onnxprune.config import PruneConfig
from onnxprune.errors import UsageError
from onnxprune.fidelity import (
    fidelity_from_outputs,
    output_batch_axes,
    parse_metric_choices,
    run_score,
    score_outputs,
)
from onnxprune.fidelity_metrics import (
    cosine,
    ctc,
    ctc_decode,
    dense,
    detect_metric,
    detect_metrics,
    detection,
    edit_distance,
    parse_metric,
)
from onnxprune.fidelity_metrics.detection import coco_credit
from onnxprune.quantize_config import QuantizeConfig

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DIGITS, CALIBRATION = FIXTURES / "digits_cnn.onnx", FIXTURES / "digits_calibration.npz"


# -- detection -------------------------------------------------------------------------------


def _raw_head(anchors: int = 400, classes: int = 2, seed: int = 0) -> np.ndarray:
    """[1, 4 + C, anchors]: boxes (cx, cy, w, h) in pixels, class scores near 0 except on five
    anchors, confident (0.9) in class 0 or 1."""
    rng = np.random.default_rng(seed)
    head = np.empty((1, 4 + classes, anchors))
    head[0, :2] = rng.uniform(100, 600, (2, anchors))
    head[0, 2:4] = rng.uniform(20, 200, (2, anchors))
    head[0, 4:] = 0.01
    for k, a in enumerate((3, 50, 120, 200, 333)):
        head[0, 4 + k % classes, a] = 0.9
    return head


def _end_to_end(rows: int = 300, seed: int = 0) -> np.ndarray:
    """[1, rows, 6] (x1, y1, x2, y2, score, class): five confident detections, the rest 0.001."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(100, 500, (rows, 2))
    out = np.concatenate([xy, xy + rng.uniform(20, 100, (rows, 2)), np.full((rows, 1), 0.001), np.zeros((rows, 1))], 1)
    out[:5, 4] = 0.9
    out[:5, 5] = [0, 1, 2, 1, 0]
    return out[None]


def test_zeroed_class_scores_of_a_raw_head_look_fine_to_cosine_but_not_to_detection() -> None:
    ref = _raw_head()
    got = ref.copy()
    got[:, 4:] = 0.0  # every class score wiped out; the boxes, most of the vector, stay
    assert cosine(ref, got) >= 0.99
    assert detection(ref, got).value == 0.0
    assert detection(ref, ref).value == 1.0
    # The same head with anchors first reads the same.
    assert detection(np.swapaxes(ref, 1, 2), np.swapaxes(got, 1, 2)).value == 0.0


def test_zeroed_scores_of_an_end_to_end_head_look_fine_to_cosine_but_not_to_detection() -> None:
    ref = _end_to_end()
    got = ref.copy()
    got[..., 4] = 0.0
    assert cosine(ref, got) >= 0.99
    r = detection(ref, got)
    assert r.value == 0.0 and r.details["reference_detections"] == 5 and r.details["candidate_detections"] == 0


def test_end_to_end_rows_are_matched_as_sets() -> None:
    ref = _end_to_end()
    got = ref[:, np.random.default_rng(1).permutation(300)]  # same detections, other order
    assert cosine(ref, got) < 0.95
    assert detection(ref, got).value == 1.0


def test_end_to_end_credit_follows_box_iou_and_class() -> None:
    ref = np.zeros((1, 20, 6))
    ref[0, :2] = [[0, 0, 100, 100, 0.9, 1], [300, 300, 400, 400, 0.8, 2]]
    shifted = ref.copy()
    shifted[0, 1, 3] = 390  # IoU 0.9: passes 9 of COCO's 10 thresholds
    assert coco_credit(np.array([0.9, 0.95, 0.5, 0.49])).tolist() == [0.9, 1.0, 0.1, 0.0]
    assert detection(ref, shifted).value == pytest.approx((1 + 0.9) / 2, abs=1e-12)
    other_class = ref.copy()
    other_class[0, 1, 5] = 0
    r = detection(ref, other_class)
    assert r.value == 0.5 and r.details["class_agreement"] == 0.5 and r.details["matched"] == 2
    extra = ref.copy()
    extra[0, 2] = [600, 600, 650, 650, 0.7, 0]  # a detection the original did not make
    assert detection(ref, extra).value == pytest.approx(2 / 3, abs=1e-12)
    stricter = detection(ref, extra, score=0.75)  # the extra one is below the threshold
    assert stricter.value == 1.0 and stricter.details["reference_detections"] == 2


def test_raw_head_detections_are_compared_after_nms() -> None:
    ref = _raw_head()
    got = ref.copy()
    got[0, 4:, 3] = got[0, 4:, 3][::-1]  # anchor 3 changes class (0 -> 1): 4 of 5 agree
    r = detection(ref, got)
    assert r.value == pytest.approx(4 / 5, abs=1e-12) and r.details["class_agreement"] == 0.8
    # Three anchors see one object; NMS keeps the best. A duplicate dropping below the
    # threshold changes nothing the post-processing returns.
    dup = np.zeros((1, 5, 200))
    dup[0, :4] = [[300], [300], [100], [100]]  # every anchor: the same box (cx, cy, w, h)
    dup[0, 2:4, 1] = 96  # anchor 1: slightly smaller, IoU 0.92 with the others
    dup[0, 4, :3] = [0.9, 0.3, 0.28]
    fewer = dup.copy()
    fewer[0, 4, 2] = 0.2
    assert detection(dup, fewer).value == 1.0 and detection(dup, fewer).details["reference_detections"] == 1
    assert detection(dup, fewer, nms=1.0).value == pytest.approx(2 / 3, abs=1e-12)  # no suppression: 3 vs 2


def test_nms_keeps_the_best_of_each_class() -> None:
    from onnxprune.fidelity_metrics.detection import nms

    rows = np.array(
        [
            [0, 0, 10, 10, 0.5, 0],
            [0, 0, 10, 9, 0.9, 0],  # IoU 0.9 with the first: it goes
            [0, 0, 10, 10, 0.8, 1],  # another class: stays
            [20, 20, 30, 30, 0.7, 0],
        ]
    )
    assert nms(rows, 0.7)[:, 4].tolist() == [0.9, 0.8, 0.7]
    assert nms(rows, 0.95)[:, 4].tolist() == [0.9, 0.8, 0.7, 0.5]
    assert nms(rows, 0.7, most=2)[:, 4].tolist() == [0.9, 0.8]


# -- sequences / CTC -------------------------------------------------------------------------


def _ctc_logits(steps: int = 100, classes: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (2, steps, classes))
    x[..., 0] = 5.0  # the blank wins every step ...
    for t, c in [(5, 3), (6, 3), (15, 7)]:
        x[:, t, c] = 6.0  # ... but these: "3 7" in both samples
    return x


def test_a_string_changed_by_one_step_looks_fine_to_cosine_but_not_to_ctc() -> None:
    ref = _ctc_logits()
    got = ref.copy()
    got[0, 40, 7] = 6.0  # sample 0 now reads "3 7 7"
    assert cosine(ref, got) >= 0.99
    r = ctc(ref, got)
    assert r.value == 0.5  # one of two strings changed
    assert r.details["mean_edit_distance"] == pytest.approx((1 / 3 + 0) / 2, abs=1e-12)
    assert r.details["step_top1"] == pytest.approx(1 - 1 / 200, abs=1e-12)  # per step: almost perfect
    assert ctc(ref, ref).value == 1.0


def test_ctc_decoding_and_edit_distance() -> None:
    steps = np.eye(6)[[0, 3, 3, 0, 3, 5, 5, 0]][None]  # blank 0
    assert ctc_decode(steps) == [(3, 3, 5)]
    assert ctc_decode(steps, blank=5) == [(0, 3, 0, 3, 0)]
    assert edit_distance((3, 7), (3, 7, 7)) == 1 and edit_distance((), (1, 2)) == 2
    assert edit_distance((1, 2, 3), (2, 3, 4)) == 2


# -- dense maps ------------------------------------------------------------------------------


def test_a_map_shifted_by_four_pixels_looks_fine_to_cosine_but_not_to_iou() -> None:
    ref = np.full((2, 1, 64, 64), 0.4)
    ref[0, 0, 8:16, 8:16] = 0.6
    got = np.full_like(ref, 0.4)
    got[0, 0, 8:16, 12:20] = 0.6  # the region moved 4 pixels right
    assert cosine(ref[:1], got[:1]) >= 0.99
    r = dense(ref, got)
    # sample 0: IoU 32/96; sample 1: nothing above 0.5 in either map, identical
    assert r.value == pytest.approx((1 / 3 + 1) / 2, abs=1e-12)
    assert r.details["max_error_of_range"] == pytest.approx(1.0, abs=1e-9)
    assert dense(ref, got, threshold=0.3).value == 1.0  # everything is above 0.3 in both


def test_dense_threshold_rules() -> None:
    logits = np.array([[-2.0, 1.0, 3.0, -1.0]])
    assert dense(logits, np.array([[-2.0, 1.0, -3.0, -1.0]])).value == 0.5  # above 0: 2 vs 1 cell
    assert dense(logits, logits).details["threshold"].startswith("0 (logits")
    positive = np.array([[1.0, 2.0, 9.0, 10.0]])  # midpoint 5.5
    assert dense(positive, np.array([[1.0, 6.0, 9.0, 10.0]])).value == pytest.approx(2 / 3, abs=1e-12)


# -- which metric ----------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_metric_detection_from_shape_and_values() -> None:
    rng = np.random.default_rng(0)
    e2e = np.concatenate([_end_to_end(), _end_to_end(seed=1)])
    c = detect_metric(e2e)
    assert c.metric == "detection" and c.reason.startswith("shape [N,300,6]: end-to-end detections")
    raw = detect_metric(_raw_head())
    assert raw.metric == "detection" and "400 anchors" in raw.reason
    assert detect_metric(np.swapaxes(_raw_head(), 1, 2)).metric == "detection"
    prob_map = 1 / (1 + np.exp(-rng.normal(size=(2, 1, 16, 16))))
    assert detect_metric(prob_map).metric == "dense"
    seq = _softmax(_ctc_logits(steps=40))
    c = detect_metric(seq)
    assert (c.metric, c.params) == ("ctc", {"blank": 0}) and "class 0 on top on 92% of steps" in c.reason
    last_blank = _ctc_logits(steps=40)[..., ::-1]
    assert detect_metric(last_blank).params == {"blank": 11}
    assert detect_metric(rng.normal(size=(4, 40, 12))).metric == "top1"  # no blank: per position
    assert detect_metric(rng.normal(size=(4, 10))).metric == "top1"
    assert detect_metric(_softmax(rng.normal(size=(4, 10)))).metric == "top1"
    assert detect_metric(rng.normal(size=(4, 1, 1, 96))).metric == "cosine"
    assert detect_metric(np.tanh(rng.normal(size=(4, 2, 128)))).metric == "cosine"  # an LSTM state
    assert detect_metric(rng.normal(size=(4, 1))).metric == "cosine"
    assert detect_metric(np.full((4, 1), 0.2)).metric == "cosine"  # all on one side: nothing decided


def test_one_probability_per_sample_is_judged_by_its_decision() -> None:
    ref = np.array([[0.9], [0.2], [0.7], [0.1]])
    got = np.array([[0.95], [0.6], [0.7], [0.1]])  # sample 1 crosses 0.5
    assert cosine(ref, got) == 1.0  # one positive number per sample: cosine cannot see it
    (fid,) = fidelity_from_outputs(["p"], [[ref]], [[got]])
    assert fid.metric == "dense" and fid.score == 0.75 and "the decision at 0.5" in fid.reason


def test_sequence_first_outputs_are_read_on_their_batch_axis() -> None:
    seq = _ctc_logits(steps=40)  # [N, T, C]
    first = np.moveaxis(seq, 0, 1)  # [T, N, C], as a recurrent export gives
    changed = first.copy()
    changed[30, 0, 7] = 6.0
    (fid,) = fidelity_from_outputs(["logits"], [[first]], [[changed]], batch_axes={"logits": 1})
    assert fid.metric == "ctc" and fid.score == 0.5
    assert fid.reason.startswith("shape [40,N,12], samples on axis 1")
    assert score_outputs(["logits"], [first], [changed], batch_axes={"logits": 1})[0] == 0.5


def test_a_score_map_and_its_box_regression() -> None:
    """PicoDet-style heads: per-anchor sigmoid class scores (dense), and beside them, with the
    same anchors, box distributions that are not class scores (cosine)."""
    rng = np.random.default_rng(0)
    scores = 1 / (1 + np.exp(-rng.normal(-2, 2, size=(1, 500, 10))))
    boxes = rng.normal(size=(1, 500, 32))
    cls, reg = detect_metrics(["cls", "reg"], [scores, boxes], [0, 0])
    assert cls.metric == "dense"
    assert reg.metric == "cosine" and reg.reason == (
        "shape [N,500,32]: box regression beside the scores 'cls' (the same 500 anchors)"
    )
    assert detect_metric(boxes).metric == "top1"  # alone it would look like class scores


def test_a_metric_with_nothing_to_compare_falls_back_to_cosine_and_says_so() -> None:
    ref = _end_to_end()
    ref[..., 4] = 0.01  # nothing above 0.25
    got = ref * 1.01
    (fid,) = fidelity_from_outputs(["det"], [[ref]], [[got]])
    assert fid.metric == "cosine" and fid.score == fid.cosine
    assert "but detection has nothing to compare (no detection with score >= 0.25" in fid.reason


def test_output_batch_axes_from_the_declared_shapes() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    outs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("s", TensorProto.FLOAT, [20, "batch", 37]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, [20, "other", 37]),
    ]
    model = helper.make_model(helper.make_graph([], "g", [x], outs))
    assert output_batch_axes(model) == {"s": 1}
    # A batch fixed to 1: the only axis of size 1, when the first is not.
    x1 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    fixed = [
        helper.make_tensor_value_info("s", TensorProto.FLOAT, [20, 1, 37]),
        helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 1, 8, 8]),
        helper.make_tensor_value_info("u", TensorProto.FLOAT, [20, 1, 1]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, [20, 37]),
    ]
    assert output_batch_axes(helper.make_model(helper.make_graph([], "g", [x1], fixed))) == {"s": 1}


# -- choosing ----------------------------------------------------------------------------------


def test_choices_parse_and_refuse_with_the_list() -> None:
    assert parse_metric_choices(
        ["logits=ctc:blank=36", "a=b=dense", "*=detection:score=0.4,iou=0.6", "serving:0=top1"]
    ) == {"logits": "ctc:blank=36", "a=b": "dense", "*": "detection:score=0.4,iou=0.6", "serving:0": "top1"}
    assert parse_metric("detection:score=0.4,iou=0.6") == ("detection", {"score": 0.4, "iou": 0.6})
    for bad in ("x=foo", "x", "x=ctc:blank=-1", "x=ctc:width=3", "x=detection:score=2", "x=dense:threshold=a"):
        with pytest.raises(UsageError, match="top1, ctc, dense, detection, cosine"):
            parse_metric_choices([bad])
    for config in (PruneConfig, QuantizeConfig):
        with pytest.raises(UsageError, match="'nope': unknown metric; choose one of top1, ctc"):
            config(fidelity_metrics={"y": "nope"})


def test_a_choice_overrides_the_detected_metric_and_says_so() -> None:
    ref = _end_to_end()
    got = ref.copy()
    got[..., 4] = 0.0
    (fid,) = fidelity_from_outputs(["det"], [[ref]], [[got]], {"det": "cosine"})
    assert fid.metric == "cosine" and fid.reason == "chosen: det=cosine" and fid.score >= 0.99
    (fid,) = fidelity_from_outputs(["det"], [[ref]], [[got]], {"*": "detection:score=0.95"})
    assert fid.metric == "cosine" and "no detection with score >= 0.95" in fid.reason  # nothing that confident
    with pytest.raises(UsageError, match="'ctc' cannot read 'cls'"):
        fidelity_from_outputs(["cls"], [[np.eye(3)]], [[np.eye(3)]], {"*": "ctc"})


def test_the_api_takes_a_metric_per_output() -> None:
    r = onnxprune.prune(
        DIGITS,
        "l2",
        ratio=0.3,
        calibration=str(CALIBRATION),
        calibration_limit=16,
        fidelity_metrics={"logits": "dense"},
    )
    (fid,) = r.report.fidelity
    d = r.report.to_dict()
    assert fid.metric == "dense" and fid.reason == "chosen: logits=dense"
    assert d["fidelity"][0]["metric"] == "dense" and d["fidelity"][0]["details"]["threshold"].startswith("0 (logits")
    assert (
        d["fidelity_metrics"]["logits"] == {"metric": "dense", "value": fid.score} and d["fidelity_score"] == fid.score
    )
    default = onnxprune.prune(DIGITS, "l2", ratio=0.3, calibration=str(CALIBRATION), calibration_limit=16)
    assert default.report.fidelity[0].metric == "top1"
    assert default.report.fidelity[0].reason == "shape [N,10]: class scores (10 classes)"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], capture_output=True, text=True, timeout=300)


def test_the_cli_takes_a_metric_per_output(tmp_path: Path) -> None:
    common = ["sensitivity", str(DIGITS), "--calibration", str(CALIBRATION), "--ratios", "0.5"]
    chosen = _cli(*common, "--fidelity-metric", "logits=cosine", "--json", str(tmp_path / "c.json"))
    assert chosen.returncode == 0, chosen.stderr
    assert "fidelity of 'logits': cosine (chosen: logits=cosine)" in chosen.stdout
    detected = _cli(*common, "--json", str(tmp_path / "d.json"))
    assert detected.returncode == 0, detected.stderr
    c, d = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "cd")
    assert c["metrics"] == {"logits": {"metric": "cosine", "reason": "chosen: logits=cosine"}}
    assert d["metrics"] == {"logits": {"metric": "top1", "reason": "shape [N,10]: class scores (10 classes)"}}
    assert c["units"][0]["fidelity"] != d["units"][0]["fidelity"]  # scored differently
    bad = _cli(*common, "--fidelity-metric", "logits=iou")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "top1, ctc, dense, detection, cosine" in bad.stderr


def test_every_report_shows_the_metric_and_why() -> None:
    from onnxprune.cli_text import format_report
    from onnxprune.quant_report import FidelityAgainst, format_quantize, quantize_markdown
    from onnxprune.render import metric_label, to_markdown

    r = onnxprune.prune(DIGITS, "l2", ratio=0.3, calibration=str(CALIBRATION), calibration_limit=16)
    d = {**r.report.to_dict(), "output": "out.onnx"}
    (f,) = r.report.fidelity
    assert f"  logits: top1 {f.score:.4f}  cosine" in format_report(d)
    assert "    metric top1: shape [N,10]: class scores (10 classes)" in format_report(d)
    md = to_markdown(d)
    assert f"| `logits` | top1 | {f.score:.4f} | {f.cosine:.4f} |" in md
    assert "- `logits`: **top1**, shape [N,10]: class scores (10 classes)" in md
    ref = _ctc_logits(steps=40)
    got = ref.copy()
    got[0, 30, 7] = 6.0
    outputs = fidelity_from_outputs(["seq"], [[ref]], [[got]])
    against = FidelityAgainst("float model", 0.5, run_score(outputs)[1], outputs).to_dict()
    assert against["metrics"]["seq"]["metric"] == "ctc" and against["metrics"]["seq"]["value"] == 0.5
    assert against["metrics"]["seq"]["reason"].startswith("shape [N,40,12]: 12 class scores per step")
    quant = {
        "model": "m.onnx",
        "output": "q.onnx",
        "model_format": "onnx",
        "backend": "ONNX",
        "preset": "performance",
        "fast_bias_correction": True,
        "calibration_samples": 8,
        "subset_size": 300,
        "evaluation": "2 held-out samples",
        "quantized_layers": [],
        "float_layers": [],
        "size_after": None,
        "size_before": 1,
        "runtime": "onnxruntime",
        "fidelity": [against],
        "notes": [],
        "accuracy_control": None,
    }
    shown = "seq: ctc 0.5000 (shape [N,40,12]: 12 class scores per step"
    assert shown in format_quantize(quant) and shown in "\n".join(quantize_markdown(quant))
    assert against["outputs"][0]["details"]["mean_edit_distance"] == pytest.approx(1 / 6, abs=1e-12)
    assert metric_label({"a": {"metric": "ctc"}, "b": {"metric": "dense"}}, most=1) == "a: ctc, +1 more"
