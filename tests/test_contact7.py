"""First-contact sweep, session 8: quantize, bench, convert and odd files as a new user meets
them. Each test failed before its fix (see the commit that added it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxprune", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def one_line_error(p: subprocess.CompletedProcess, code: int = 2) -> str:
    err = p.stderr.strip()
    assert p.returncode == code, (p.returncode, p.stderr)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def constant_node_model(weight_in_constant: bool = False, constants: bool = True) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Add(Constant) -> y[N,4]:
    the bias of the MatMul is a Constant node, as PyTorch's TorchScript exporter writes it
    (the corpus's CRNN); with ``weight_in_constant`` the conv weight is one too (paddle2onnx).
    ``constants=False``: the same model with initializers instead."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1")
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "wm")]
    nodes = []
    if weight_in_constant and constants:
        nodes.append(helper.make_node("Constant", [], ["w1"], name="w1_const", value=w))
    else:
        inits.append(w)
    bias = numpy_helper.from_array(np.arange(4, dtype=np.float32) * 0.1, "bias")
    if constants:
        nodes.append(helper.make_node("Constant", [], ["bias"], name="bias_const", value=bias))
    else:
        inits.append(bias)
    nodes += [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "wm"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "bias"], ["y"], name="fc_add"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph(nodes, "constant_nodes", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("weight_in_constant", [False, True])
def test_quantize_reads_constant_nodes_as_nncf_needs_them(tmp_path: Path, weight_in_constant: bool) -> None:
    """Before: 'NNCF cannot quantize the model: There is no tensor with the name bias' (exit 2).
    Now the int8 model equals the one NNCF makes of the same model with initializers."""
    import onnxruntime as ort

    model, twin = tmp_path / "m.onnx", tmp_path / "twin.onnx"
    onnx.save(constant_node_model(weight_in_constant), model)
    onnx.save(constant_node_model(weight_in_constant, constants=False), twin)
    before = model.read_bytes()
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(1).random((24, 3, 8, 8)).astype(np.float32))
    out, out_twin = tmp_path / "q.onnx", tmp_path / "q_twin.onnx"
    p = run("quantize", str(model), "-o", str(out), "--calibration", str(cal), "-q")
    assert p.returncode == 0, p.stderr
    assert model.read_bytes() == before
    assert run("quantize", str(twin), "-o", str(out_twin), "--calibration", str(cal), "-q").returncode == 0
    q = onnx.load(out)
    ops = [n.op_type for n in q.graph.node]
    assert "Constant" not in ops and ops.count("DequantizeLinear") >= 4  # both layers' weights and inputs
    x = np.random.default_rng(2).random((3, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(out_twin), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("command", ["quantize", "prune"])
def test_quantize_refuses_a_fakequantize_model_as_already_quantized(tmp_path: Path, command: str) -> None:
    """NNCF's default int8 export (FakeQuantize). Before: 'NNCF cannot quantize the model:
    'NoneType' object has no attribute 'data_type''."""
    src = FIXTURES / "nncf_resnet_fq.onnx"
    extra = ["--quantize", "int8"] if command == "prune" else []
    out = tmp_path / "q.onnx"
    p = run(command, str(src), "-o", str(out), "--calibration", str(FIXTURES / "digits_test.npz"), *extra)
    err = one_line_error(p)
    assert f"{src}: node " in err and "(FakeQuantize): the model is already quantized; give the float model" in err
    assert list(tmp_path.iterdir()) == []


def dynamic_hw_model() -> onnx.ModelProto:
    """x[N,3,?,?] -> Conv -> y: a dynamic height and width, like the corpus's PP-OCR detector."""
    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])
    graph = helper.make_graph([node], "dynamic_hw", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


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
    p = run(name, str(model), *out.get(name, ["--rounds", "1"]), *flags, "--input-shape", shape)
    assert one_line_error(p) == f"onnxprune: error: {model}: {message}"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cal.npz", "m.onnx"]


def test_runtime_names_dynamic_dimensions_as_question_marks(tmp_path: Path) -> None:
    """Before: 'the model takes ['N', 3, 'H', 'W']' (onnxruntime's dim names; an exporter's
    'DynamicDimension.0')."""
    from onnxprune.errors import UsageError
    from onnxprune.runtime import session

    model = tmp_path / "m.onnx"
    onnx.save(dynamic_hw_model(), model)
    run_model = session(str(model), source="m.onnx")
    with pytest.raises(UsageError) as err:
        run_model({"x": np.zeros((1, 3, 8), np.float32)})
    assert (
        str(err.value)
        == "m.onnx: the inputs do not fit the model: input 'x' has shape [1, 3, 8], the model takes [?, 3, ?, ?]"
    )


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.onnx", lambda p: p.write_bytes(b""), "empty file"),
        ("folder.onnx", lambda p: p.mkdir(), "not a file"),
        ("cut.onnx", lambda p: p.write_bytes((FIXTURES / "residual.onnx").read_bytes()[:5000]), "not an ONNX model ("),
        (
            "ext.onnx",
            lambda p: (
                onnx.save(
                    onnx.load(FIXTURES / "residual.onnx"),
                    p,
                    save_as_external_data=True,
                    location="w.bin",
                    size_threshold=0,
                )
                or (p.parent / "w.bin").unlink()
            ),
            "tensor 'W_1': external data file 'w.bin' not found",
        ),
        ("ir.xml", lambda p: p.write_text("<net/>"), "the IR's weights ir.bin are not beside it"),
    ],
)
def test_bench_names_what_is_wrong_with_a_file(tmp_path: Path, name: str, make: object, message: str) -> None:
    """Before: '{file}: OpenVINO cannot read the model: Exception from src/inference/src/cpp/core.cpp:84:'
    for each (a folder: 'no such file')."""
    path = tmp_path / name
    make(path)  # type: ignore[operator]
    err = one_line_error(run("bench", str(path), "--rounds", "1"))
    assert err.startswith(f"onnxprune: error: {path}: {message}"), err
    assert "Exception from src" not in err


def test_openvino_message_keeps_the_reason_not_the_source_lines() -> None:
    from onnxprune.errors import openvino_message

    text = (
        "Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at src/frontends/common/src/frontend.cpp:47:\n"
        "Loading input model\nInvalid usage of method for externally stored data in file (w.bin, offset: 0, data_length: 8)\n\n"
    )
    assert openvino_message(RuntimeError(text)) == (
        "Loading input model; Invalid usage of method for externally stored data in file (w.bin, offset: 0, data_length: 8)"
    )
    assert openvino_message(RuntimeError("x" * 400), 50) == "x" * 47 + "..."


def test_images_for_an_nhwc_model_say_which_preprocess_to_give(tmp_path: Path) -> None:
    """tf2onnx's NHWC models (3 of the corpus's 13) with a folder of images. Before: '... has 50
    channels in NCHW layout; images give 1 (L) or 3 (RGB) (wrong layout?)', no word of the option."""
    from PIL import Image

    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["y"], name="conv"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10, 12, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 10, 12])
    model = tmp_path / "nhwc.onnx"
    graph = helper.make_graph(nodes, "nhwc", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    p = run("quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--calibration", str(images))
    assert one_line_error(p) == (
        f"onnxprune: error: {images}: input 'x' has 10 channels in NCHW layout; images give 1 (L) or 3 (RGB) "
        "(wrong layout? its shape [?, 10, 12, 3] looks NHWC: give --preprocess layout=NHWC, with your other preprocess keys)"
    )
    p = run(
        "quantize",
        str(model),
        "-o",
        str(tmp_path / "q.onnx"),
        "--calibration",
        str(images),
        "--preprocess",
        "layout=NHWC",
    )
    assert p.returncode == 0, p.stderr


def test_sensitivity_with_the_zero_criterion_says_why_not_unknown() -> None:
    """Before: "unknown criterion 'zero'; choose from zero, l1, ..." (it offered the name it refused)."""
    p = run(
        "sensitivity",
        str(FIXTURES / "digits_cnn.onnx"),
        "--calibration",
        str(FIXTURES / "digits_calibration.npz"),
        "--criterion",
        "zero",
    )
    err = one_line_error(p)
    assert err.startswith(
        "onnxprune: error: criterion 'zero' removes only provably constant channels and scores none; "
        "rank by a lossy criterion: l1, l2, "
    ), err
    assert "zero," not in err.split("lossy criterion:")[1]


def _ir_input_dims(xml: Path) -> list[list[str]]:
    import xml.etree.ElementTree as ET

    layers = ET.parse(xml).getroot().iter("layer")
    return [[d.text or "" for d in layer.iter("dim")] for layer in layers if layer.get("type") == "Parameter"]


def test_convert_static_without_input_shape_bakes_the_checked_shape(tmp_path: Path) -> None:
    """Before: `convert --static` of a model with a dynamic batch and no --input-shape wrote an IR
    with the batch still dynamic ('IR inputs: input [?,3,16,16]'), the flag silently ignored."""
    out = tmp_path / "r.xml"
    p = run("convert", str(FIXTURES / "residual.onnx"), "-o", str(out), "--static")
    assert p.returncode == 0, p.stderr
    assert "IR inputs: input [1,3,16,16]\n" in p.stdout
    assert _ir_input_dims(out) == [["1", "3", "16", "16"]]
    p = run("convert", str(FIXTURES / "residual.onnx"), "-o", str(out), "--static", "--input-shape", "input:2,3,16,16")
    assert p.returncode == 0 and _ir_input_dims(out) == [["2", "3", "16", "16"]]
    p = run("convert", str(FIXTURES / "residual.onnx"), "-o", str(out))  # without --static: the batch stays dynamic
    assert p.returncode == 0 and _ir_input_dims(out) == [["-1", "3", "16", "16"]]


def test_convert_static_with_unknown_dimensions_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(dynamic_hw_model(), model)
    p = run("convert", str(model), "-o", str(tmp_path / "m.xml"), "--static", "--no-verify")
    assert one_line_error(p) == (
        f"onnxprune: error: {model}: --static needs every dimension of input 'x' (1,3,?,?); give --input-shape x:..."
    )
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["prune", "{m}", "-o", "p.onnx", "--ir", "p.xml", "--report", "p.bin"],
            "p.bin: --report and --ir (its .bin) name the same file",
        ),
        (
            ["prune", "{m}", "-o", "p.onnx", "--external-data", "--markdown", "p.onnx.data"],
            "p.onnx.data: -o (its external data) and --markdown name the same file",
        ),
        (
            ["quantize", "{m}", "-o", "q.xml", "--calibration", "{cal}", "--report", "q.bin"],
            "q.bin: -o (its .bin) and --report name the same file",
        ),
    ],
)
def test_two_outputs_of_one_run_naming_one_file_are_refused(tmp_path: Path, args: list, message: str) -> None:
    """Before: prune --ir p.xml --report p.bin exited 0 with the report written over the IR's
    weights (an IR that no longer loads)."""
    model = FIXTURES / "digits_cnn.onnx"
    argv = [a.format(m=model, cal=FIXTURES / "digits_calibration.npz") for a in args]
    p = run(*argv, cwd=tmp_path)
    assert one_line_error(p) == f"onnxprune: error: {message}; give another file name"
    assert list(tmp_path.iterdir()) == []


def test_prune_refuses_an_xml_output_it_would_fill_with_onnx(tmp_path: Path) -> None:
    """Before: prune -o p.xml wrote an ONNX model named p.xml, exit 0 (quantize -o q.xml writes an IR)."""
    p = run("prune", str(FIXTURES / "residual.onnx"), "-o", "p.xml", cwd=tmp_path)
    assert one_line_error(p) == (
        "onnxprune: error: p.xml: prune writes an ONNX model, not an OpenVINO IR; give -o OUT.onnx, and --ir OUT.xml for the IR"
    )
    assert list(tmp_path.iterdir()) == []


def int8_weight_model() -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(weight = Cast(int8 initializer) * scale) -> Relu -> GlobalAveragePool
    -> Flatten -> y: weight-only int8, as tinyocr's PP-OCRv6 recogniser stores every weight."""
    rng = np.random.default_rng(0)
    q = numpy_helper.from_array(rng.integers(-127, 128, (8, 3, 3, 3)).astype(np.int8), "wq")
    scale = numpy_helper.from_array(np.full((8, 1, 1, 1), 0.01, np.float32), "ws")
    nodes = [
        helper.make_node("Cast", ["wq"], ["wf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["wf", "ws"], ["w"], name="dequant"),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flatten"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    graph = helper.make_graph(nodes, "int8_weights", [x], [y], [q, scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_bug_inside_nncf_says_where_and_what_to_try(tmp_path: Path) -> None:
    """NNCF 3's ONNX backend fails on a Cast of an initializer (the corpus's PP-OCRv6 recogniser).
    Before: 'NNCF cannot quantize the model: type; nothing written' (an AttributeError's text)."""
    model = tmp_path / "m.onnx"
    onnx.save(int8_weight_model(), model)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(1).random((24, 3, 8, 8)).astype(np.float32))
    err = one_line_error(run("quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--calibration", str(cal)))
    assert err.startswith(
        f"onnxprune: error: {model}: NNCF cannot quantize the model: AttributeError 'type' in nncf/onnx/"
    ), err
    assert err.endswith("; nothing written (NNCF's OpenVINO backend may take it: give -o OUT.xml)"), err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cal.npz", "m.onnx"]
    p = run("quantize", str(model), "-o", str(tmp_path / "q.xml"), "--calibration", str(cal), "-q")  # the hint holds
    assert p.returncode == 0, p.stderr


def test_an_fp16_ir_past_its_tolerance_says_what_to_do(tmp_path: Path) -> None:
    """Before: '... differs from onnxruntime by X, more than 0.01 x its scale Y; nothing written',
    no word that FP16 weights do it nor of FP32 / --tolerance. y = x * (1 + 2**-12) - x: the
    first weight rounds to 1 in FP16, so y is 0 there and x * 2**-12 in FP32."""
    w = numpy_helper.from_array(np.array([1 + 2**-12, -1.0], np.float32).reshape(1, 2, 1, 1), "w")
    nodes = [
        helper.make_node("Concat", ["x", "x"], ["xx"], name="twice", axis=1),
        helper.make_node("Conv", ["xx", "w"], ["y"], name="conv"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    model = tmp_path / "m.onnx"
    graph = helper.make_graph(nodes, "fp16", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    p = run("convert", str(model), "-o", str(tmp_path / "m.xml"), "--fp16")
    err = one_line_error(p, code=1)
    assert err.endswith(
        "(FP16 weights: FP32 keeps the model's answers; convert --tolerance T accepts a larger difference); nothing written"
    ), err
    assert run("convert", str(model), "-o", str(tmp_path / "m.xml")).returncode == 0  # FP32 passes
