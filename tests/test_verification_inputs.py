"""Files of inputs (--inputs, --calibration .npz) checked against the model before any work
(onnxprune/verification_inputs.py); more cases in tests/test_contact_sweep.py and test_bad_input.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
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


def test_verification_names_every_dynamic_input_at_once_in_a_typed_form(tmp_path: Path) -> None:
    """prune (verifying) a model with two dynamic inputs (the corpus's Silero VAD: input [?,?],
    state [2,?,128]) asked for 'input 'input' dimension 1 is dynamic; give --input-shape
    input:d0,d1,... to verify', then, once given, in a second run for 'state', each in a form
    --input-shape refuses as typed: now both at once, as x:1,3,d2,d3, which runs once typed in."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])
    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "z"], ["s"]), helper.make_node("Conv", ["s", "w"], ["y"], name="conv")]
    model = tmp_path / "two.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "two", [x, z], [y], [w])), model)
    out = tmp_path / "p.onnx"
    err = one_line_error(run_cli("prune", model, "-o", out, "-q"))
    assert err == (
        f"onnxprune: error: {model}: inputs 'x', 'z' have dynamic dimensions; give --input-shape x:1,3,d2,d3 "
        "--input-shape z:1,3,d2,d3 with each d<i> the size of that input's dimension i to verify at"
    )
    err = one_line_error(run_cli("prune", model, "-o", out, "--input-shape", "x:1,3,8,8", "-q"))
    assert err == (
        f"onnxprune: error: {model}: input 'z' dimension 2 is dynamic; give --input-shape z:1,3,d2,d3 "
        "with d2, d3 the sizes to verify at"
    )
    assert not out.exists()
    p = run_cli("prune", model, "-o", out, "--input-shape", "x:1,3,8,8", "--input-shape", "z:1,3,8,8", "-q")
    assert p.returncode == 0, p.stderr


def test_one_sample_without_its_samples_axis_is_named(tmp_path: Path) -> None:
    """An .npz holding one sample as the input's shape less its batch axis ((1, 8, 8) for an
    input [?, 1, 8, 8]) was read with its first axis as samples: 'input 'input' has shape [1, 8],
    the model takes [?, 1, 8, 8]', a shape the user never gave. The error now says what to add."""
    shape = np.load(FIXTURES / "digits_calibration.npz")["input"].shape  # (N, 1, 8, 8)
    data = tmp_path / "one.npz"
    np.savez(data, input=np.zeros(shape[1:], np.float32))
    out = tmp_path / "o.onnx"
    model = FIXTURES / "digits_cnn.onnx"
    line = one_line_error(run_cli("prune", model, "-o", out, "--inputs", data))
    assert line == (
        f"onnxprune: error: {model}: the inputs do not fit the model: input 'input' has shape [1, 8, 8], the model "
        f"takes [?, 1, 8, 8] (array 'input' of {data} has shape (1, 8, 8), samples along its first axis; one sample "
        "without the samples axis? give it one: input[None], of shape (1, 1, 8, 8))"
    )
    assert not out.exists()
