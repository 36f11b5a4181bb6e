"""QuantizeConfig (onnxprune/quantize_config.py since 6487873) checks its options when built:
one-line UsageErrors naming the option, and max_drop read as the CLI reads it."""

from __future__ import annotations

import pytest

from onnxprune.errors import UsageError
from onnxprune.quantize_config import QuantizeConfig
from onnxprune.user_validation import MaxDrop


def _accuracy(model_path: str, run: object) -> float:  # never called: the config only checks it
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preset": "fast"}, "quantization preset must be one of performance, mixed, got 'fast'"),
        ({"subset_size": 0}, "subset_size must be a positive integer, got 0"),
        ({"subset_size": True}, "subset_size must be a positive integer, got True"),
        ({"subset_size": 2.0}, "subset_size must be a positive integer, got 2.0"),
        ({"validate": 3}, "validate must be a function or 'FILE.py:function' / 'module:function', got int"),
        ({"max_drop": 1.0}, "max drop must be in [0, 1), got 1.0"),
        ({"max_drop": "150"}, "max drop must be in [0, 1), got 150.0"),
        ({"max_drop": "-1%"}, "max_drop '-1%': must be >= 0 (and below 100%)"),
        ({"ignored_scope": "conv["}, "ignored_scope 'conv[' is not a valid regular expression"),
    ],
)
def test_bad_options_are_one_line_usage_errors(options: dict, message: str) -> None:
    with pytest.raises(UsageError) as err:
        QuantizeConfig(**options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_max_drop_without_a_function_is_a_fidelity_drop() -> None:
    assert QuantizeConfig(max_drop="0.5%").max_drop == pytest.approx(0.005, abs=1e-15)  # of a baseline 1.0
    assert QuantizeConfig(max_drop="0.02").max_drop == pytest.approx(0.02, abs=1e-15)
    assert QuantizeConfig(max_drop=0.03).max_drop == 0.03
    assert QuantizeConfig().max_drop is None


def test_max_drop_with_a_function_is_in_its_units() -> None:
    assert QuantizeConfig(validate=_accuracy).max_drop == MaxDrop(0.01)  # NNCF's default
    assert QuantizeConfig(validate=_accuracy, max_drop="2%").max_drop == MaxDrop(2.0, True)
    assert QuantizeConfig(validate="metrics.py:accuracy", max_drop=0.5).max_drop == MaxDrop(0.5)


def test_ignored_scope_and_with_options() -> None:
    cfg = QuantizeConfig(ignored_scope="head.*")
    assert cfg.ignored_scope == ("head.*",)
    assert QuantizeConfig(ignored_scope=["a", "b"]).ignored_scope == ("a", "b")
    other = cfg.with_options(preset="mixed")
    assert other.preset == "mixed" and other.ignored_scope == ("head.*",) and cfg.preset == "performance"
    with pytest.raises(UsageError, match="quantization preset"):
        cfg.with_options(preset="none")


def test_the_package_exports_it() -> None:
    """The README names it onnxprune.QuantizeConfig (the package's lazy name table)."""
    import onnxprune

    assert onnxprune.QuantizeConfig is QuantizeConfig and "QuantizeConfig" in onnxprune.__all__
