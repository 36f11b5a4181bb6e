"""First contact with the Python API: options refused with typed errors, public names exported."""

from __future__ import annotations

import pytest

import onnxprune
from onnxprune.errors import UsageError

DIGITS = "fixtures/digits_cnn.onnx"


def test_ratio_and_macs_target_together_are_refused():
    # The MACs target decided the cut and the ratio was silently ignored.
    with pytest.raises(
        UsageError, match=r"^--ratio 0.25 and --macs-target 0.5 are two budgets for the same cut: give one$"
    ):
        onnxprune.prune(DIGITS, "l2", ratio=0.25, macs_target=0.5)
    with pytest.raises(UsageError, match="two budgets"):
        onnxprune.PruneConfig(ratio=0.25, macs_target=0.5)

