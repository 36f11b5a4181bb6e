"""Plans chosen on calibration samples, judged on held-out ones: the report's calibration and
held-out fidelity side by side, the search's judge (the worse of two halves for a continuous
metric, the estimate on unseen inputs for a discrete one), and the note
when the calibration set is too small for the fidelity asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from judge_helpers import identity_classifier

import onnxprune
from onnxprune.config import PruneConfig
from onnxprune.fidelity_metrics.unseen import flip_rate, top1_margins
from onnxprune.runtime import session
from onnxprune.sensitivity_analysis import TrialRunner
from onnxprune.stages.decide import small_calibration_note
from onnxprune.testing import GraphBuilder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_search_judges_the_worse_half_of_a_continuous_metric() -> None:
    model = identity_classifier()
    analysis = onnxprune.analyze(model)
    # First half: channel 1 wins (0.5 < 1); second half: channel 0 wins (2 > 1). Removing
    # channel 0 (replaced by 0) keeps every first-half answer and flips every second-half one.
    feeds = [{"x": np.array([[[[0.5]], [[1.0]]]], np.float32)}] * 4 + [
        {"x": np.array([[[[2.0]], [[1.0]]]], np.float32)}
    ] * 4
    conv = next(s for s in analysis.sources if s.op == "Conv")
    channel0 = int(analysis.roots(conv.ids)[0])
    runner = TrialRunner(model, analysis, feeds)
    cosine = {"*": "cosine"}  # (0.5, 1) -> (0, 1): cosine 1 / sqrt(1.25); (2, 1) -> (0, 1): 1 / sqrt(5)
    assert runner.fidelity([channel0], None, cosine) == pytest.approx((1 / np.sqrt(1.25) + 1 / np.sqrt(5)) / 2)
    assert runner.fidelity([channel0], None, cosine, search=True) == pytest.approx(1 / np.sqrt(5))  # the worse half
    assert runner.runs == 1  # both figures from one run: the plan is cached, never run twice
    # Top-1 (a discrete metric) is judged on all the samples and by its estimate on unseen
    # inputs: margins 0.5 (first half) and 1 (second half); the losses are -0.5 (the first
    # half's margin grew to 1) and 2 (past every margin): half the pairs flip.
    judged = runner.judged([channel0], None)
    assert judged.pooled == pytest.approx(0.5) and judged.worst_half == 0.0  # the second half loses them all
    assert judged.estimate == pytest.approx(0.5)
    # The search judges by the bound at 0.95 (bootstrap over the 8 samples): resampled flips
    # K ~ Binomial(8, 1/2), P(K >= 7) = 9/256 < 5% <= P(K >= 6) = 37/256: agreement 2/8.
    assert judged.bound == pytest.approx(0.25) and judged.value == pytest.approx(0.25)
    assert runner.fidelity([channel0], None, search=True) == pytest.approx(0.25) and runner.runs == 2
    assert runner.fidelity([channel0], None) == pytest.approx(0.5) and runner.runs == 2
    point = TrialRunner(model, analysis, feeds, confidence=0.5)  # the point judge: min(agreement, estimate)
    assert point.fidelity([channel0], None, search=True) == pytest.approx(0.5)


def test_report_gives_calibration_and_held_out_fidelity_side_by_side() -> None:
    calib = FIXTURES / "digits_calibration.npz"
    r = onnxprune.prune(FIXTURES / "digits_cnn.onnx", calibration=str(calib), min_fidelity=0.99)
    g = r.report.to_dict()["generalisation"]
    x = np.load(calib)["input"]
    cal, held = x[[i for i in range(len(x)) if i % 4 != 3]], x[3::4]  # the 3:1 split
    assert g["calibration"]["samples"] == len(cal) == 48 and g["held_out"]["samples"] == len(held) == 16
    original, pruned = session(str(FIXTURES / "digits_cnn.onnx")), session(r.model)

    def agreement(samples: np.ndarray) -> float:
        return float(np.mean(original({"input": samples})[0].argmax(1) == pruned({"input": samples})[0].argmax(1)))

    assert g["calibration"]["fidelity"] == pytest.approx(agreement(cal), abs=1e-12)
    assert g["held_out"]["fidelity"] == pytest.approx(agreement(held), abs=1e-12) == r.report.fidelity_score
    assert g["gap"] == pytest.approx(g["calibration"]["fidelity"] - g["held_out"]["fidelity"])
    # The estimate on unseen inputs the search judged the plan by (top-1: margins paired with
    # the margin losses), on the calibration samples: at least the floor.
    ref, got = original({"input": cal})[0], pruned({"input": cal})[0]
    estimate = 1.0 - flip_rate(*top1_margins(ref, got))
    assert g["estimate"]["fidelity"] == pytest.approx(estimate, abs=1e-9) and 0.99 <= estimate < 1.0
    assert g["estimate"]["samples"] == 48 and "an estimate" in g["estimate"]["what"]
    assert any("calibration set small for fidelity >= 0.99" in n and "needs about 300" in n for n in r.report.notes)


def test_small_calibration_note_follows_the_rule_of_three() -> None:
    config = PruneConfig(min_fidelity=0.99, calibration="c.npz")
    note = small_calibration_note(config, 48, 64)
    assert "48 calibration samples" in note and "needs about 300" in note and "rule of three" in note
    assert "--calibration-limit 64" in note  # 64 read: the limit is what capped them
    assert "--calibration-limit" not in small_calibration_note(config, 48, 60)
    assert small_calibration_note(config, 300, 400) == ""
    assert "needs about 60" in small_calibration_note(PruneConfig(min_fidelity=0.95, calibration="c.npz"), 59, 59)
    assert small_calibration_note(PruneConfig(min_fidelity=0.95, calibration="c.npz"), 60, 60) == ""
    assert small_calibration_note(PruneConfig(min_fidelity=1.0, calibration="c.npz"), 5, 5) == ""
    assert "needs about 100" in small_calibration_note(PruneConfig(max_drop="3%", calibration="c.npz"), 10, 10)
    with pytest.raises(onnxprune.UsageError, match="calibration limit"):
        PruneConfig(calibration_limit=0)


def _free_and_busy_model() -> onnx.ModelProto:
    """Two branches of 8 channels: the reader of 'free' has zero weights for it (removing any
    of it changes nothing), 'busy' matters."""
    b = GraphBuilder(opset=17, seed=21)
    x = b.input("x", [None, 3, 6, 6])
    free = b.op("Relu", b.conv(x, 8))
    busy = b.op("Relu", b.conv(x, 8))
    w = b.weights([4, 16, 1, 1])
    w[:, :8] = 0
    cat = b.op("Concat", free, busy, axis=1, channels=16)
    pooled = b.op("Flatten", b.op("GlobalAveragePool", b.conv(cat, 4, k=1, pads=0, weight=b.const(w, "W"))), axis=1)
    b.output(b.gemm(pooled, 4, 3))
    return b.build()


def test_sensitivity_skips_ratios_past_the_floor(tmp_path: Path) -> None:
    """A unit whose 25% already falls below the search's floor is not tried at 50%: here the
    'busy' branch and the 1x1 conv reading both (4 channels), two trials fewer, and the
    skipped moves are never in the plan."""
    model = _free_and_busy_model()
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((16, 3, 6, 6)).astype(np.float32))
    options = {"calibration": str(path), "compensation": "none", "fidelity_metrics": {"*": "cosine"}}
    r = onnxprune.prune(model, "l2", min_fidelity=0.9999, **options)
    sens = r.report.sensitivity
    free, busy = [s.node for s in r.analysis.sources][:2]
    units = {u.unit.layers[0]: u for u in sens.units}
    # 8 channels: 10% is no channel (1.0), 25% two, 50% four.
    assert units[busy].fidelity[0.25] < 0.9999 and units[busy].skipped == (0.5,)
    assert [u.skipped for u in sens.units] == [(), (0.5,), (0.5,)]
    assert units[busy].fidelity[0.5] == units[busy].fidelity[0.25]  # the bound, not a measurement
    assert units[free].skipped == () and all(v == pytest.approx(1.0) for v in units[free].fidelity.values())
    full = onnxprune.sensitivity(model, str(path), "l2", compensation="none", fidelity_metrics={"*": "cosine"})
    assert sens.trials == full.trials - 2 == len(sens.units) * 3 - 2
    assert {u.unit.layers[0]: u for u in full.units}[busy].skipped == ()  # the sensitivity command runs all
    removed = set(r.plan.removed_groups)
    cut = {s.node: sum(int(x) in removed for x in r.analysis.roots(s.ids)) for s in r.analysis.sources}
    assert cut[free] >= 4 and cut[busy] == 0
    assert [u["skipped"] for u in r.report.to_dict()["sensitivity"]["units"]] == [[], ["0.5"], ["0.5"]]
