"""With --reconstruct and --min-fidelity the search judges plans cross-fitted (each calibration
sample scored by the model recovered on the other half); the final model is refitted on all the
calibration samples, so its fidelity on them is in-sample. The report shows the cross-fitted
value the search judged, labelled, beside the in-sample one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

import onnxprune
from onnxprune.cli_text import generalisation_lines
from onnxprune.reconstruction_trials import ReconstructedTrials
from onnxprune.render import to_markdown
from onnxprune.testing import GraphBuilder

COSINE = {"*": "cosine"}


def _overfitting_model() -> onnx.ModelProto:
    """8 channels read by a 3x3 conv on 3x3 maps: the readers' refit has 9 x kept + 1 unknowns
    per output channel and only 9 positions a sample, so 12 samples fit it closely in-sample and
    less closely on samples it did not see."""
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [None, 4, 3, 3])
    y = b.op("Relu", b.conv(x, 8, k=3, pads=1))
    b.output(b.conv(y, 4, k=3, pads=1))
    return b.build()


def _calibration(tmp_path: Path, n: int = 16) -> tuple[str, list[dict[str, np.ndarray]]]:
    x = np.random.default_rng(3).standard_normal((n, 4, 3, 3)).astype(np.float32)
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    # prune splits one set 3:1 (calibration.split_calibration): every 4th sample is held out
    return str(path), [{"x": x[i : i + 1]} for i in range(n) if i % 4 != 3]


def test_report_shows_the_cross_fitted_value_the_search_judged(tmp_path: Path) -> None:
    model = _overfitting_model()
    calib, cal_feeds = _calibration(tmp_path)
    r = onnxprune.prune(
        model,
        "l2",
        min_fidelity=0.5,
        calibration=calib,
        compensation="none",
        reconstruct=True,
        fidelity_metrics=COSINE,
    )
    assert r.plan.removed_groups  # the search removed something, judged on refitted models
    g = r.report.to_dict()["generalisation"]
    cross = g["cross_fitted"]
    # What the search's trial runner computes for the delivered plan, recomputed from scratch.
    trials = ReconstructedTrials(model, onnxprune.analyze(model), cal_feeds)
    judged = trials.judged(r.plan.removed_groups, None, COSINE)
    assert cross["judged"] == judged.value and cross["fidelity"] == judged.pooled  # exact
    assert cross["worst_half"] == judged.worst_half and cross["estimate"] is None is judged.estimate
    assert cross["samples"] == 12 == g["calibration"]["samples"]
    assert cross["judged"] >= 0.5  # the search kept it
    # The final refit saw the calibration samples: in-sample it looks better than cross-fitted.
    assert g["calibration"]["fidelity"] > cross["fidelity"] + 1e-3
    text = "\n".join(generalisation_lines(g))
    assert f"fidelity cross-fitted (what the search judged): {cross['fidelity']:.4f} on the 12 calibration" in text
    assert f"{g['calibration']['fidelity']:.4f} on the 12 calibration samples" in text and "in-sample" in text
    md = to_markdown(r.report.to_dict())
    assert f"| cross-fitted, the search's value (what the search judged) | 12 | {cross['judged']:.4f} |" in md
    assert "in-sample: the final refit was fitted on them) | 12 |" in md


def test_no_cross_fitted_value_without_recovery(tmp_path: Path) -> None:
    """Without recovery the search judged the masked model on the samples themselves: nothing
    cross-fitted, and the calibration fidelity is not called in-sample."""
    calib, _ = _calibration(tmp_path)
    r = onnxprune.prune(_overfitting_model(), "l2", min_fidelity=0.5, calibration=calib, fidelity_metrics=COSINE)
    g = r.report.to_dict()["generalisation"]
    assert "cross_fitted" not in g
    assert "in-sample" not in "\n".join(generalisation_lines(g))


def test_the_delivered_plan_is_judged_once(tmp_path: Path) -> None:
    """The search's judgement of a plan is kept: asking again runs no trial."""
    model = _overfitting_model()
    _, cal_feeds = _calibration(tmp_path)
    trials = ReconstructedTrials(model, onnxprune.analyze(model), cal_feeds)
    calls = []
    inner = trials._cross_fitted

    def counted(groups, estimates, levels):  # type: ignore[no-untyped-def]
        calls.append(frozenset(groups))
        return inner(groups, estimates, levels)

    trials._cross_fitted = counted  # type: ignore[method-assign]
    first = trials.judged([0, 1], None, COSINE)
    assert trials.judged((1, 0), None, COSINE) is first and len(calls) == 1
    assert trials.judged([0, 1], None) is not first and len(calls) == 2  # other metric choices: another trial
