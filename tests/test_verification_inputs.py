"""Files of inputs (--inputs, --calibration .npz) checked against the model before any work
(onnxprune/verification_inputs.py); more cases in tests/test_contact_sweep.py and test_bad_input.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error, run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("flag", ["--inputs", "--calibration"])
def test_an_array_without_samples_is_refused_naming_it(tmp_path: Path, flag: str) -> None:
    """An .npz whose array has 0 samples along its first axis was an internal error, exit 3:
    'ValueError: cannot reshape array of size 0 into shape (0,newaxis)'."""
    shape = np.load(FIXTURES / "digits_calibration.npz")["input"].shape
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((0, *shape[1:]), np.float32))
    out = tmp_path / "o.onnx"
    p = run_cli("prune", FIXTURES / "digits_cnn.onnx", "-o", out, "--ratio", "0.1", flag, data)
    assert one_line_error(p) == (
        f"onnxprune: error: {data}: array 'input' has no samples (shape {(0, *shape[1:])}); "
        "give at least one along its first axis"
    )
    assert not out.exists()


def test_bench_refuses_an_array_without_samples_naming_the_file(tmp_path: Path) -> None:
    """bench --inputs with 0 samples said 'OpenVINO cannot compile the model for inputs ...:
    Batch size is zero', without the file."""
    pytest.importorskip("openvino")
    shape = np.load(FIXTURES / "digits_calibration.npz")["input"].shape
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((0, *shape[1:]), np.float32))
    p = run_cli("bench", FIXTURES / "digits_cnn.onnx", "--inputs", data, "--rounds", "1", "--runs", "1")
    assert one_line_error(p) == (
        f"onnxprune: error: {data}: array 'input' has no samples (shape {(0, *shape[1:])}); "
        "give at least one along its first axis"
    )
