"""Options as new users mistype them: a criterion in another spelling (L2, l1norm, fgpm) and a
percentage where a fraction goes (--ratio 50, --macs-target 50%): one line that says what to
give instead, on the command line and in the library."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxprune
from onnxprune import cli
from onnxprune.config import PruneConfig
from onnxprune.layer_rules import LayerRule

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _prune_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    """The one line of a refused ``prune`` of the residual fixture, in process."""
    args = ["prune", str(FIXTURES / "residual.onnx"), "-o", str(tmp_path / "o.onnx"), "-q", *options]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and not (tmp_path / "o.onnx").exists(), err
    return lines[0]


@pytest.mark.parametrize(
    ("given", "meant"),
    [("L2", "l2"), ("l1norm", "l1"), ("L1-Norm", "l1"), ("fgpm", "fpgm"), ("BN_Gamma", "bn-gamma"), ("zeros", "zero")],
)
def test_a_misspelt_criterion_names_the_one_meant(
    given: str, meant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "unknown criterion 'L2'; choose from zero, l1, l2, ..." with no word on which."""
    line = _prune_error(tmp_path, capsys, "--criterion", given, "--ratio", "0.3")
    assert line.startswith(f"onnxprune: error: unknown criterion '{given}' (did you mean '{meant}'?); choose from zero")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--ratio", "50"],
            "--ratio 50: the share of each layer's output channels removed, a fraction in [0, 1): did you mean 0.5 (50%)?",
        ),
        (
            ["--macs-target", "50"],
            "--macs-target 50: the MACs kept, as a share of the original's, a fraction in (0, 1]: did you mean 0.5 (50%)?",
        ),
        (
            ["--latency-target", "70"],
            "--latency-target 70: the latency kept, as a share of the original's, a fraction in (0, 1): did you mean 0.7 (70%)?",
        ),
        (
            ["--min-fidelity", "99", "--calibration", str(FIXTURES / "digits_calibration.npz")],
            "--min-fidelity 99: the fidelity kept (1: the original's), a fraction in (0, 1]: did you mean 0.99 (99%)?",
        ),
        (
            ["--min-fidelity", "0.9", "--fidelity-confidence", "95"],
            "--fidelity-confidence 95: a confidence level, a fraction in [0.5, 1): did you mean 0.95 (95%)?",
        ),
        # 2 may be "twice" as well as 2%, 5 may be 5 (a typo): below 10 the range alone
        (["--ratio", "5"], "--ratio 5: the share of each layer's output channels removed, a fraction in [0, 1)"),
    ],
)
def test_a_percentage_as_a_number_gets_the_fraction(
    options: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "ratio must be in [0, 1), got 50.0", naming neither the flag nor what to give."""
    assert _prune_error(tmp_path, capsys, *options) == f"onnxprune: error: {expected}"


@pytest.mark.parametrize(
    ("flag", "given", "meant"),
    [("--macs-target", "50%", "0.5"), ("--latency-target", "70%", "0.7"), ("--min-fidelity", "99%", "0.99")],
)
def test_a_percentage_with_its_sign_gets_the_fraction(
    flag: str, given: str, meant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "invalid float value: '50%'". Not read as 0.5: in --max-drop, D% is relative."""
    assert _prune_error(tmp_path, capsys, flag, given) == (
        f"onnxprune prune: error: argument {flag}: '{given}' is a percentage; it takes a fraction: "
        f"did you mean {meant}? (see onnxprune prune --help)"
    )


def test_sensitivity_ratios_as_percentages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["sensitivity", str(FIXTURES / "digits_cnn.onnx"), "--calibration", str(FIXTURES / "digits_calibration.npz")]
    for ratios, expected in (
        (
            "10,25",
            "--ratios 10,25: the shares of each unit removed, increasing fractions in (0, 1): did you mean 0.1,0.25?",
        ),
        ("10%,25%", "--ratios 10%,25%: fractions, not percentages: did you mean 0.1,0.25?"),
    ):
        assert cli.main([*base, "--ratios", ratios, "-q"]) == 2
        assert capsys.readouterr().err.strip() == f"onnxprune: error: {expected}"


def test_the_library_says_the_same_in_its_own_names() -> None:
    with pytest.raises(onnxprune.UsageError) as info:
        PruneConfig(ratio=50)
    assert str(info.value) == (
        "ratio 50: the share of each layer's output channels removed, a fraction in [0, 1): did you mean 0.5 (50%)?"
    )
    with pytest.raises(
        onnxprune.UsageError, match=r"^macs_target must be a number, got str '50%' \(a fraction, not a "
    ):
        PruneConfig(macs_target="50%")
    with pytest.raises(onnxprune.UsageError, match=r"^config entry sparsity 30: .*did you mean 0\.3 \(30%\)\?$"):
        LayerRule(op_types=("Conv",), sparsity=30)
    with pytest.raises(onnxprune.UsageError, match=r"^unknown criterion 'L2' \(did you mean 'l2'\?\)"):
        onnxprune.prune(str(FIXTURES / "residual.onnx"), criterion="L2", ratio=0.3)
    with pytest.raises(onnxprune.UsageError, match=r"^unknown criterion 'magic'; choose from zero, l1, l2"):
        onnxprune.prune(str(FIXTURES / "residual.onnx"), criterion="magic", ratio=0.3)  # no guess for no likeness
