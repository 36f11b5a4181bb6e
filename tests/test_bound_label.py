"""The estimate's lower bound is labelled "what the search judged" only where a search judged
plans by it: the --min-fidelity allocation. With a MACs target the allocation takes the shortest
prefix reaching it (no fidelity judged), and the latency planner's floor judges the measured
agreement (the pooled fidelity), not the bound."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxprune
from onnxprune.testing import StepTimer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CALIBRATION = str(FIXTURES / "digits_calibration.npz")


@pytest.mark.parametrize(
    ("options", "judged"),
    [
        ({"min_fidelity": 0.99}, True),
        ({"min_fidelity": 0.99, "macs_target": 0.9}, False),
        ({"min_fidelity": 0.9, "latency_target": 0.9}, False),
    ],
)
def test_the_bound_is_labelled_judged_only_after_the_allocation_search(options: dict, judged: bool) -> None:
    if "latency_target" in options:
        options = {**options, "timer": StepTimer(step=8)}
    r = onnxprune.prune(FIXTURES / "digits_cnn.onnx", "l2", calibration=CALIBRATION, **options)
    assert r.plan.removed_groups
    est = r.report.to_dict()["generalisation"]["estimate"]
    assert est["judged_by_search"] is judged
    assert est["what"].endswith(
        ": what the search judged" if judged else ": for information (no search judged the plan by it)"
    )
