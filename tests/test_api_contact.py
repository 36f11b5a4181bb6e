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


def test_unknown_prune_option_is_a_usage_error_with_a_hint():
    # Was Python's TypeError from PruneConfig.__init__.
    with pytest.raises(
        UsageError,
        match=r"^unknown option 'ratioo' \(did you mean 'ratio'\?\): the options are the fields of PruneConfig$",
    ):
        onnxprune.prune(DIGITS, "l2", ratioo=0.25)
    with pytest.raises(UsageError, match=r"^unknown options 'bogus', 'ratioo'"):
        onnxprune.PruneConfig().with_options("l2", ratioo=0.25, bogus=1)


def test_unknown_quantize_option_is_a_usage_error():
    with pytest.raises(
        UsageError,
        match=r"^unknown option 'presett' \(did you mean 'preset'\?\): the options are the fields of QuantizeConfig$",
    ):
        onnxprune.quantize(DIGITS, calibration="fixtures/digits_calibration.npz", presett="mixed")
