"""The OpenVINO hand-off: IR conversion (checked against onnxruntime), A/B benchmarking,
OpenVINO's own pruning pass side by side, Markdown and plot reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error, run_cli
from dynamic_models import dynamic_hw_model
from onnx import TensorProto, helper, numpy_helper

from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_convert_writes_checked_ir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml32, xml16 = tmp_path / "m32.xml", tmp_path / "m16.xml"
    assert cli.main(["convert", str(FIXTURES / "residual.onnx"), "-o", str(xml32)]) == 0
    assert "check against onnxruntime: PASSED" in capsys.readouterr().out
    assert cli.main(["convert", str(FIXTURES / "residual.onnx"), "-o", str(xml16), "--fp16", "-q"]) == 0
    bin32, bin16 = xml32.with_suffix(".bin"), xml16.with_suffix(".bin")
    assert bin32.exists() and bin16.exists()
    assert bin16.stat().st_size < 0.6 * bin32.stat().st_size
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml32), "CPU")
    assert len(compiled.outputs) == 1
    assert not list(tmp_path.glob("*.tmp*"))


def test_convert_bad_output_path(tmp_path: Path) -> None:
    assert cli.main(["convert", str(FIXTURES / "residual.onnx"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert cli.main(["convert", str(FIXTURES / "residual.onnx"), "-o", str(tmp_path / "nodir" / "m.xml")]) == 2


def test_bench_two_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pruned, out = tmp_path / "p.onnx", tmp_path / "b.json"
    assert cli.main(["prune", str(FIXTURES / "residual.onnx"), "-o", str(pruned), "-q"]) == 0
    argv = [
        "bench",
        str(FIXTURES / "residual.onnx"),
        str(pruned),
        "--rounds",
        "2",
        "--runs",
        "2",
        "--throughput-seconds",
        "0.2",
        "--json",
        str(out),
    ]
    assert cli.main(argv) == 0
    assert "median ms" in capsys.readouterr().out
    data = json.loads(out.read_text())["models"]
    assert [Path(d["path"]).name for d in data] == ["residual.onnx", "p.onnx"]
    assert data[0]["latency_ratio"] == 1.0 and data[1]["latency_ratio"] > 0
    assert all(
        d["latency_median_ms"] > 0 and d["latency_p90_ms"] >= d["latency_median_ms"] and d["throughput_fps"] > 0
        for d in data
    )
    assert cli.main(argv[:3] + ["--backend", "onnxruntime", "--rounds", "1", "--throughput-seconds", "0.1"]) == 0


def test_bench_errors(tmp_path: Path) -> None:
    assert cli.main(["bench", str(tmp_path / "missing.onnx")]) == 2
    xml = tmp_path / "m.xml"
    assert cli.main(["convert", str(FIXTURES / "residual.onnx"), "-o", str(xml), "-q"]) == 0
    assert cli.main(["bench", str(xml), "--backend", "onnxruntime"]) == 2


def test_bench_of_a_zip_named_onnx_is_one_line_without_openvinos_log(tmp_path: Path) -> None:
    """OpenVINO tried its TensorFlow frontend on it, which logged two C++ lines ('E0000 ...
    text_format.cc:417] Error parsing text-format tensorflow.GraphDef') on stderr before the
    one-line error; the file is now checked (OpenVINO's ONNX frontend, then the loader) first."""

    fake = tmp_path / "m.onnx"
    fake.write_bytes((FIXTURES / "digits_calibration.npz").read_bytes())  # a zip
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", "bench", str(fake)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == [
        f"onnxprune: error: {fake}: not an ONNX model (Error parsing message with type 'onnx.ModelProto': "
        "Wire format was corrupt)"
    ]
    xml = tmp_path / "i.xml"  # the same zip named as an IR, with a .bin beside it
    xml.write_bytes(fake.read_bytes())
    (tmp_path / "i.bin").write_bytes(b"")
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", "bench", str(xml)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == [
        f"onnxprune: error: {xml}: not an OpenVINO IR (OpenVINO's IR reader does not recognise the .xml)"
    ]


def test_prune_with_ir_openvino_comparison_and_reports(tmp_path: Path) -> None:
    out, xml, md, png, rep = (tmp_path / n for n in ("o.onnx", "o.xml", "r.md", "r.png", "r.json"))
    argv = [
        "prune",
        str(FIXTURES / "dense_concat.onnx"),
        "-o",
        str(out),
        "--ir",
        str(xml),
        "--compare-openvino",
        "--markdown",
        str(md),
        "--plot",
        str(png),
        "--report",
        str(rep),
        "-q",
    ]
    assert cli.main(argv) == 0
    data = json.loads(rep.read_text())
    assert data["ir"]["check"]["passed"] and xml.with_suffix(".bin").exists()
    assert data["openvino_pass"]["error"]  # OpenVINO's pass crashes on BatchNormalization after Concat
    text = md.read_text()
    for section in (
        "## Verification",
        "## OpenVINO's own pruning pass",
        "## Layers changed",
        "## Channels kept, by reason",
    ):
        assert section in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_prune_bench_adds_latency(tmp_path: Path) -> None:
    out, rep, png = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "r.png"
    assert (
        cli.main(
            [
                "prune",
                str(FIXTURES / "residual.onnx"),
                "-o",
                str(out),
                "--bench",
                "--report",
                str(rep),
                "--plot",
                str(png),
                "-q",
            ]
        )
        == 0
    )
    bench = json.loads(rep.read_text())["benchmark"]
    assert len(bench) == 2 and bench[0]["latency_ratio"] == 1.0


def test_ir_must_be_xml(tmp_path: Path) -> None:
    assert (
        cli.main(
            ["prune", str(FIXTURES / "residual.onnx"), "-o", str(tmp_path / "o.onnx"), "--ir", str(tmp_path / "o.bin")]
        )
        == 2
    )
    assert not (tmp_path / "o.onnx").exists()


# -- first-contact sweep of session 8 (was tests/test_contact7.py) --


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
    err = one_line_error(run_cli("bench", str(path), "--rounds", "1"))
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


def _ir_input_dims(xml: Path) -> list[list[str]]:
    import xml.etree.ElementTree as ET

    layers = ET.parse(xml).getroot().iter("layer")
    return [[d.text or "" for d in layer.iter("dim")] for layer in layers if layer.get("type") == "Parameter"]


def test_convert_static_without_input_shape_bakes_the_checked_shape(tmp_path: Path) -> None:
    """Before: `convert --static` of a model with a dynamic batch and no --input-shape wrote an IR
    with the batch still dynamic ('IR inputs: input [?,3,16,16]'), the flag silently ignored."""
    out = tmp_path / "r.xml"
    p = run_cli("convert", str(FIXTURES / "residual.onnx"), "-o", str(out), "--static")
    assert p.returncode == 0, p.stderr
    assert "IR inputs: input [1,3,16,16]\n" in p.stdout
    assert _ir_input_dims(out) == [["1", "3", "16", "16"]]
    p = run_cli(
        "convert", str(FIXTURES / "residual.onnx"), "-o", str(out), "--static", "--input-shape", "input:2,3,16,16"
    )
    assert p.returncode == 0 and _ir_input_dims(out) == [["2", "3", "16", "16"]]
    p = run_cli("convert", str(FIXTURES / "residual.onnx"), "-o", str(out))  # without --static: the batch stays dynamic
    assert p.returncode == 0 and _ir_input_dims(out) == [["-1", "3", "16", "16"]]


def test_convert_static_with_unknown_dimensions_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(dynamic_hw_model(), model)
    p = run_cli("convert", str(model), "-o", str(tmp_path / "m.xml"), "--static", "--no-verify")
    assert one_line_error(p) == (
        f"onnxprune: error: {model}: --static needs every dimension of input 'x' (1,3,?,?); give --input-shape x:..."
    )
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.onnx"]


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
    p = run_cli("convert", str(model), "-o", str(tmp_path / "m.xml"), "--fp16")
    err = one_line_error(p, code=1)
    assert err.endswith(
        "(FP16 weights: FP32 keeps the model's answers; convert --tolerance T accepts a larger difference); nothing written"
    ), err
    assert run_cli("convert", str(model), "-o", str(tmp_path / "m.xml")).returncode == 0  # FP32 passes
