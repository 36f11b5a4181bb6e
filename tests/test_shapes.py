"""shapes.batch_filled: the one rule by which every command turns an input's dimensions into
the shape it analyses, checks, converts or times (a dynamic batch becomes 1, or --batch), and
the --input-shape text of a shape in its messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error, run_cli
from dynamic_models import dynamic_hw_model
from onnx import TensorProto, helper

from onnxprune.errors import UsageError
from onnxprune.shapes import batch_filled, concrete_input_shapes, input_dims, shape_text


@pytest.mark.parametrize(
    ("dims", "batch", "want"),
    [
        ((None, 3, 8, 8), 1, (1, 3, 8, 8)),  # a dynamic batch: 1
        ((None, 3, 8, 8), 4, (4, 3, 8, 8)),  # ... or the batch asked for
        ((2, 3, 8, 8), 4, (2, 3, 8, 8)),  # a static batch stays (the caller refuses what it cannot run)
        ((None, 3, None, "W"), 1, (1, 3, None, None)),  # other dynamic dimensions stay unknown
        (("N", -1, 0, 5), 1, (1, None, None, 5)),  # runtime forms of dynamic: a name, -1, 0
        ((), 1, ()),  # a scalar
        (None, 1, ()),  # an unknown rank
    ],
)
def test_dynamic_batch_is_filled_and_nothing_else(dims: tuple | None, batch: int, want: tuple) -> None:
    assert batch_filled("x", dims, {}, "m.onnx", batch=batch) == want


def test_the_given_shape_wins_and_must_fit() -> None:
    assert batch_filled("x", (None, 3, None, None), {"x": (2, 3, 16, 16)}, "m.onnx", batch=1) == (2, 3, 16, 16)
    assert batch_filled("x", None, {"x": (5,)}, "m.onnx") == (5,)  # unknown rank: nothing to check
    with pytest.raises(UsageError, match=r"^m.onnx: input_shapes x: rank 3 but the model's input has rank 4$"):
        batch_filled("x", (None, 3, 8, 8), {"x": (1, 3, 8)}, "m.onnx")
    with pytest.raises(UsageError, match=r"^m.onnx: input_shapes x: dimension 1 is fixed to 3 in the model, not 4$"):
        batch_filled("x", (None, 3, 8, 8), {"x": (1, 4, 8, 8)}, "m.onnx")
    # the checks a caller leaves to the runtime (OpenVINO's reshape, the latency measurement's own)
    assert batch_filled("x", (None, 3, 8, 8), {"x": (1, 4, 8, 8)}, "m", check_fixed=False) == (1, 4, 8, 8)
    assert batch_filled("x", (None, 3, 8, 8), {"x": (1, 3)}, "m", check_rank=False, check_fixed=False) == (1, 3)


def test_shape_text_is_what_input_shape_takes() -> None:
    assert shape_text((1, 3, None, 8)) == "1,3,?,8"
    assert shape_text((4, 3, None, None), "d{}") == "4,3,d2,d3"
    assert shape_text(()) == ""


def test_every_copy_of_the_rule_now_goes_through_it() -> None:
    """The analysis (concrete_input_shapes), the IR's static shapes, bench and the latency
    measurement agree on a model with a dynamic batch and a dynamic width."""
    from onnxprune.bench import _static_dims
    from onnxprune.latency.measure import resolve_input_shapes
    from onnxprune.openvino_ir import _static_shapes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, "W"])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    assert input_dims(model.graph.input[0]) == (None, 3, 8, None)
    assert concrete_input_shapes(model, {}, "m.onnx") == {"x": (1, 3, 8, None)}
    given = {"x": (1, 3, 8, 5)}
    assert concrete_input_shapes(model, given, "m.onnx") == {"x": (1, 3, 8, 5)}
    assert _static_shapes(model, given, (), "m.onnx") == {"x": [1, 3, 8, 5]}
    assert _static_dims("m.onnx", "x", ["N", 3, 8, "W"], given) == [1, 3, 8, 5]
    assert resolve_input_shapes(model, given, 1, "m.onnx") == {"x": (1, 3, 8, 5)}
    # each says in its own words what the width is needed for
    with pytest.raises(UsageError, match=r"--static needs every dimension of input 'x' \(1,3,8,\?\)"):
        _static_shapes(model, {}, (), "m.onnx")
    with pytest.raises(
        UsageError, match=r"dimension 3 is dynamic; give input_shapes={'x': \(1, 3, 8, d3\)} with d3 the size to time"
    ):
        _static_dims("m.onnx", "x", ["N", 3, 8, "W"], {})
    with pytest.raises(UsageError, match=r"give input_shapes={'x': \(2, 3, 8, d3\)} with d3 the size to time"):
        resolve_input_shapes(model, {}, 2, "m.onnx")
    onnx.checker.check_model(model)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


# -- first-contact sweep of session 8 (was tests/test_contact7.py) --


@pytest.mark.parametrize(
    ("command", "shape", "message"),
    [
        ("convert", "y:1,3,8,8", "--input-shape names 'y', but the model's inputs are ['x']"),
        ("convert", "x:1,3,8", "--input-shape x: rank 3 but the model's input has rank 4"),
        ("convert --no-verify", "x:1,3,8", "--input-shape x: rank 3 but the model's input has rank 4"),
        ("bench", "y:1,3,8,8", "--input-shape names 'y', but the model's inputs are ['x']"),
        ("bench --backend onnxruntime", "y:1,3,8,8", "--input-shape names 'y', but the model's inputs are ['x']"),
        ("bench", "x:1,3,8", "--input-shape x: rank 3 but the model's input has rank 4"),
        ("quantize", "y:1,3,8,8", "--input-shape names 'y', but the model's inputs are ['x']"),
        ("quantize", "x:1,3,8", "--input-shape x: rank 3 but the model's input has rank 4"),
    ],
)
def test_input_shape_must_name_an_input_of_its_rank(tmp_path: Path, command: str, shape: str, message: str) -> None:
    """Before: convert, bench and quantize ignored an --input-shape naming no input (quantize exit 0,
    convert and bench then asked for the shape of 'x'), and a wrong rank surfaced as OpenVINO's
    'Exception from src/...' or onnxruntime's shape with 'DynamicDimension.0' in it (convert
    --no-verify wrote the IR)."""
    model = tmp_path / "m.onnx"
    onnx.save(dynamic_hw_model(), model)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(1).random((24, 3, 8, 8)).astype(np.float32))
    name, *flags = command.split()
    out = {
        "convert": ["-o", str(tmp_path / "o.xml")],
        "quantize": ["-o", str(tmp_path / "o.onnx"), "--calibration", str(cal)],
    }
    p = run_cli(name, str(model), *out.get(name, ["--rounds", "1"]), *flags, "--input-shape", shape)
    assert one_line_error(p) == f"onnxprune: error: {model}: {message}"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cal.npz", "m.onnx"]


@pytest.mark.parametrize(
    ("command", "purpose"), [(("prune", "-o", "{d}/p.onnx", "--ir", "{d}/p.xml"), "to use"), (("bench",), "to time")]
)
def test_a_dynamic_dimension_hint_can_be_typed(tmp_path: Path, command: tuple[str, ...], purpose: str) -> None:
    """prune --ir / --bench and bench asked for '--input-shape x:1,3,?,?' of a model with a
    dynamic height and width, a form --input-shape refuses ('dimensions must be integers'): now
    'x:1,3,d2,d3 with d2, d3 the sizes to use' (as latency-table says since 7575223), which runs
    once the sizes are typed in."""
    model = tmp_path / "hw.onnx"
    onnx.save(dynamic_hw_model(), model)
    args = [a.format(d=tmp_path) for a in command]
    err = one_line_error(run_cli(args[0], model, *args[1:], "-q"))
    assert err.endswith(f"give --input-shape x:1,3,d2,d3 with d2, d3 the sizes {purpose}"), err
    if args[0] == "prune":  # the form typed with the sizes chosen
        p = run_cli(args[0], model, *args[1:], "--input-shape", "x:1,3,16,16", "-q")
        assert p.returncode == 0, p.stderr


def test_every_dynamic_input_is_named_at_once(tmp_path: Path) -> None:
    """prune --ir of a model with two dynamic inputs (the corpus's Silero VAD: input, state) asked
    for one --input-shape, then, once given, for the next: now both in one line."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])
    w = onnx.numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "z"], ["s"]), helper.make_node("Conv", ["s", "w"], ["y"], name="conv")]
    model = tmp_path / "two.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "two", [x, z], [y], [w])), model)
    ir = ("--ir", tmp_path / "p.xml")
    err = one_line_error(run_cli("prune", model, "-o", tmp_path / "p.onnx", *ir, "-q"))
    assert err == (
        f"onnxprune: error: {model}: inputs 'x', 'z' have dynamic dimensions and --ir needs static shapes; give "
        "--input-shape x:1,3,d2,d3 --input-shape z:1,3,d2,d3 with each d<i> the size of that input's dimension i to use"
    )
    typed = ("--input-shape", "x:1,3,8,8", "--input-shape", "z:1,3,8,8")
    p = run_cli("prune", model, "-o", tmp_path / "p.onnx", *ir, *typed, "-q")
    assert p.returncode == 0, p.stderr
