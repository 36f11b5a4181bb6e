"""The criterion of a run that names none: a search judged on calibration data (a fidelity floor
or the user's validation function) without a refit ranks channels by ``contribution``; every
other budget by l2; no budget means zero."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxprune
from onnxprune.config import BUDGET_DEFAULT_CRITERION, DATA_DEFAULT_CRITERION, PruneConfig

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAL = "c.npz"  # the config only records the path


def _accuracy(model_path: str, run: object) -> float:  # never called: the config only checks it
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("options", "criterion"),
    [
        ({"min_fidelity": 0.99, "calibration": CAL}, "contribution"),
        ({"max_drop": 0.01, "calibration": CAL}, "contribution"),  # a fidelity floor of 0.99
        ({"validate": _accuracy, "max_drop": "0.5%", "calibration": CAL}, "contribution"),
        ({"validate": _accuracy, "calibration": CAL}, "contribution"),  # NNCF's default drop
        ({"min_fidelity": 0.99, "calibration": CAL, "reconstruct": True}, "l2"),  # with a refit: l2
        ({"min_fidelity": 0.99, "calibration": CAL, "recalibrate": True}, "l2"),
        ({"min_fidelity": 0.99, "calibration": CAL, "macs_target": 0.5}, "l2"),  # a MACs target decides
        ({"min_fidelity": 0.99, "calibration": CAL, "compensation": "calibration"}, "contribution"),
        ({"min_fidelity": 0.99, "calibration": CAL, "compensation": "none"}, "l2"),  # not the error it scores
        ({"validate": _accuracy, "calibration": CAL, "compensation": "data-free"}, "l2"),
        ({"ratio": 0.25, "calibration": CAL}, "l2"),  # no search
        ({"latency_target": 0.7, "calibration": CAL}, "l2"),  # the latency planner's own search
        ({"calibration": CAL}, "zero"),  # no budget
        ({"criterion": "l2", "min_fidelity": 0.99, "calibration": CAL}, "l2"),  # given: kept
        ({"criterion": "fpgm", "validate": _accuracy, "calibration": CAL}, "fpgm"),
    ],
)
def test_default_criterion_rule(options: dict, criterion: str) -> None:
    cfg = PruneConfig(**options)
    assert cfg.criterion == criterion
    if "criterion" in options:
        assert cfg.criterion_reason == "given"
    elif criterion == DATA_DEFAULT_CRITERION:
        assert (
            cfg.data_default and "without --criterion and without recovery means contribution" in cfg.criterion_reason
        )
    else:
        assert not cfg.data_default


def test_replacing_options_reapplies_the_rule() -> None:
    cfg = PruneConfig(min_fidelity=0.99, calibration=CAL)
    assert cfg.criterion == DATA_DEFAULT_CRITERION
    assert cfg.with_options(reconstruct=True).criterion == BUDGET_DEFAULT_CRITERION
    assert cfg.with_options(reconstruct=True).with_options(reconstruct=False).criterion == DATA_DEFAULT_CRITERION
    assert (
        PruneConfig(criterion="l2", min_fidelity=0.99, calibration=CAL).with_options(min_fidelity=0.95).criterion
        == "l2"
    )


def test_a_min_fidelity_run_without_criterion_prunes_as_contribution() -> None:
    """The default is the criterion itself, not a variant: the same plan as naming it."""
    model, calib = FIXTURES / "digits_cnn.onnx", str(FIXTURES / "digits_calibration.npz")
    default = onnxprune.prune(model, calibration=calib, min_fidelity=0.99)
    named = onnxprune.prune(model, "contribution", calibration=calib, min_fidelity=0.99)
    l2 = onnxprune.prune(model, "l2", calibration=calib, min_fidelity=0.99)
    assert default.report.criterion == "contribution" and default.report.criterion_reason.startswith("default:")
    assert default.plan.removed_groups == named.plan.removed_groups
    assert default.plan.removed_groups != l2.plan.removed_groups  # the default changed the plan
