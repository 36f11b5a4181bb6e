"""The prune report as typed data: ``budget``, ``generalisation`` and ``latency`` are frozen
dataclasses, and the report's JSON is unchanged by it (the same keys, order and values as the
JSON the plain-dict report wrote: tests/fixtures/report_json/, written by this module's
``write_fixtures`` on the commit before the change)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from judge_helpers import margin_classifier
from latency_helpers import three_unit_chain

import onnxprune
from onnxprune.testing import GraphBuilder, StepTimer

TESTS = Path(__file__).resolve().parent

FIXTURES = TESTS.parent / "fixtures"
EXPECTED = TESTS / "fixtures" / "report_json"


def _budgeted(tmp: Path) -> onnxprune.PruneResult:
    """A ratio with every budget option set (global ranking, rounding, an exclusion, a layer rule)."""
    return onnxprune.prune(
        FIXTURES / "digits_cnn.onnx",
        "l2",
        ratio=0.25,
        global_ranking=True,
        round_to=2,
        exclude=["/head/Gemm"],
        layer_rules=[{"op_types": "Gemm", "sparsity": 0.0}],
    )


def _latency(tmp: Path) -> onnxprune.PruneResult:
    """A latency target timed by the deterministic StepTimer (tests/test_latency_prune.py's)."""
    return onnxprune.prune(three_unit_chain(), latency_target=0.85, timer=StepTimer(step=16, base=1e-4, per_block=1e-5))


def _identical_rows(tmp: Path) -> dict[str, Any]:
    calib = tmp / "rows.npz"
    np.savez(calib, x=np.array([(5.0, 1.0, 100.0)] * 32, np.float32).reshape(32, 3, 1, 1))
    return {"calibration": str(calib), "verification_inputs": str(calib), "compensation": "none"}


def _generalisation(tmp: Path) -> onnxprune.PruneResult:
    """Held-out samples with a top-1 output: calibration, held-out, gap, the estimate with its
    batch prediction and --fidelity-batch's rule (tests/test_batch_prediction.py's case)."""
    return onnxprune.prune(margin_classifier(), "l2", min_fidelity=0.85, fidelity_batch=8, **_identical_rows(tmp))


def _overfitting_model() -> onnx.ModelProto:
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [None, 4, 3, 3])
    y = b.op("Relu", b.conv(x, 8, k=3, pads=1))
    b.output(b.conv(y, 4, k=3, pads=1))
    return b.build()


def _cross_fitted(tmp: Path) -> onnxprune.PruneResult:
    """--reconstruct with a floor: generalisation.cross_fitted (tests/test_cross_fitted_report.py's case)."""
    calib = tmp / "calib.npz"
    np.savez(calib, x=np.random.default_rng(3).standard_normal((16, 4, 3, 3)).astype(np.float32))
    return onnxprune.prune(
        _overfitting_model(),
        "l2",
        min_fidelity=0.5,
        calibration=str(calib),
        compensation="none",
        reconstruct=True,
        fidelity_metrics={"*": "cosine"},
    )


RUNS: dict[str, Callable[[Path], onnxprune.PruneResult]] = {
    "budgeted": _budgeted,
    "latency": _latency,
    "generalisation": _generalisation,
    "cross_fitted": _cross_fitted,
}


def _comparable(d: dict) -> dict:
    """The report's JSON without what depends on where, when and on what machine it ran: the
    model's path (a temporary folder), the sensitivity search's wall-clock seconds, the latency
    table's key values (CPU, runtime versions) and onnxruntime's version in the texts."""
    d = json.loads(re.sub(r"onnxruntime \d+(\.\d+)*", "onnxruntime <version>", json.dumps(d)))
    d["model"] = Path(d["model"]).name
    if d.get("sensitivity") and "seconds" in d["sensitivity"]:
        d["sensitivity"]["seconds"] = "<seconds>"
    if d.get("latency"):
        d["latency"]["table_key"] = {k: "<machine>" for k in d["latency"]["table_key"]}
    return d


def _json(result: onnxprune.PruneResult) -> str:
    return json.dumps(_comparable(result.report.to_dict(words="cli")), indent=1)  # as --report writes it


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_report_json_is_unchanged_by_the_typed_fields(name: str, tmp_path: Path) -> None:
    expected = (EXPECTED / f"{name}.json").read_text()
    assert _json(RUNS[name](tmp_path)) == expected.rstrip("\n")


def write_fixtures() -> None:
    """Writes tests/fixtures/report_json/ from the code as it is (run once, on the commit
    before the typed fields: ``python tests/test_report.py``)."""
    import os
    import tempfile

    EXPECTED.mkdir(parents=True, exist_ok=True)
    for name, run in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["ONNXPRUNE_CACHE_DIR"] = str(Path(tmp) / "cache")
            (EXPECTED / f"{name}.json").write_text(_json(run(Path(tmp))) + "\n")


if __name__ == "__main__":
    write_fixtures()


def test_budget_is_typed_from_the_config(tmp_path: Path) -> None:
    from onnxprune.report import PruneBudget

    report = _budgeted(tmp_path).report
    assert report.budget == PruneBudget(
        ratio=0.25,
        global_ranking=True,
        macs_target=None,
        latency_target=None,
        round_to=2,
        exclude=("/head/Gemm",),
        config_entries=1,
    )
    exact = onnxprune.prune(FIXTURES / "shuffle.onnx", criterion="zero", verify=False).report
    assert exact.budget is None and exact.to_dict()["budget"] is None


def test_latency_is_the_outcome_with_its_settings(tmp_path: Path) -> None:
    from onnxprune.latency import LatencySettings
    from onnxprune.stages.latency import LatencyOutcome

    report = _latency(tmp_path).report
    assert isinstance(report.latency, LatencyOutcome) and report.latency.settings == LatencySettings()
    assert report.latency.target == 0.85 and report.latency.met
    # 14 blocks of 16 channels (0.24 ms), two units kept at 16 save 4 of them: 0.20 / 0.24
    assert report.latency.measured_ratio == pytest.approx(0.20 / 0.24, abs=1e-12)
    d = report.to_dict()
    d["latency"]["settings"]["threads"] = 99  # the caller's copy: the report is unchanged
    assert report.to_dict()["latency"]["settings"]["threads"] is None


def test_generalisation_is_typed(tmp_path: Path) -> None:
    from onnxprune.fidelity_metrics.batch_prediction import BatchPrediction, BatchRule
    from onnxprune.report import CalibrationFidelity, Generalisation, HeldOutFidelity, UnseenEstimate

    g = _generalisation(tmp_path).report.generalisation
    assert isinstance(g, Generalisation)
    assert isinstance(g.calibration, CalibrationFidelity) and isinstance(g.held_out, HeldOutFidelity)
    assert (g.calibration.samples, g.held_out.samples, g.held_out.also_calibration) == (32, 32, 32)  # the same file
    assert g.gap == g.calibration.fidelity - g.held_out.fidelity
    assert isinstance(g.estimate, UnseenEstimate) and isinstance(g.estimate.batch, BatchPrediction)
    assert g.estimate.batch.samples == 32 and g.cross_fitted is None
    rule = g.batch_rule
    assert isinstance(rule, BatchRule) and (rule.samples, rule.floor, rule.reading, rule.met) == (8, 0.85, 0.875, True)
    d = g.to_dict()
    assert list(d) == ["calibration", "held_out", "gap", "estimate", "batch_rule"]
    d["estimate"]["batch"]["samples"] = 0
    assert g.to_dict()["estimate"]["batch"]["samples"] == 32
    cross = _cross_fitted(tmp_path).report.generalisation
    assert (
        cross is not None
        and cross.cross_fitted is not None
        and list(cross.to_dict())[3:] == ["cross_fitted", "batch_mean"]
    )


def test_a_batch_rule_that_judged_nothing_keeps_its_short_form() -> None:
    from onnxprune.fidelity_metrics.batch_prediction import batch_rule

    rule = batch_rule([], 32, 0.95, 0.9)
    assert rule.agreement is None and rule.met is None
    assert list(rule.to_dict()) == ["samples", "floor", "probability", "outputs", "what"]
    judged = batch_rule([0.99, 0.98], 8, 0.95, 0.85, outputs=["a", "b"])
    assert judged.agreement == 0.98 and judged.outputs == ("a", "b")
    assert list(judged.to_dict()) == [
        "samples",
        "floor",
        "probability",
        "agreement",
        "outputs",
        "reading",
        "below_floor",
        "met",
        "what",
    ]
