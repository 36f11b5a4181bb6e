"""Issue 14, the OpenVINO half: static shapes for OpenVINO (--input-shape, --inputs, or a one-line
request), bench's spread and precision, convert's dynamic dims and tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from cli_helpers import one_line_error, run_cli, small_cnn

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


# -- 5, 6: OpenVINO needs static shapes: --input-shape, --inputs, or ask in one line -------------

DYNAMIC = [None, 3, None, None]  # dynamic batch, height and width


def _dynamic_model(tmp_path: Path) -> Path:
    path = tmp_path / "dyn.onnx"
    onnx.save(small_cnn(DYNAMIC), path)
    return path


def test_bench_dynamic_dims_ask_for_a_shape(tmp_path: Path) -> None:
    model = _dynamic_model(tmp_path)
    line = one_line_error(run_cli("bench", model, "--rounds", "1", "--runs", "1", "--throughput-seconds", "0.05"))
    assert (
        "input 'input' dimension 2 is dynamic" in line
        and "--input-shape input:1,3,d2,d3 with d2, d3 the sizes to time" in line
    )
    fast = ["--rounds", "1", "--runs", "1", "--warmup", "1", "--throughput-seconds", "0.05"]
    assert run_cli("bench", model, *fast, "--input-shape", "input:1,3,8,8").returncode == 0
    npz = tmp_path / "x.npz"
    np.savez(npz, input=np.zeros((2, 3, 8, 8), np.float32))
    p = run_cli("bench", model, *fast, "--inputs", npz, "--json", tmp_path / "b.json")
    assert p.returncode == 0, p.stderr


def test_compare_openvino_uses_the_input_shape(tmp_path: Path) -> None:
    model, out, report = _dynamic_model(tmp_path), tmp_path / "o.onnx", tmp_path / "r.json"
    line = one_line_error(run_cli("prune", model, "-o", out, "--compare-openvino"))
    assert "dimension 2 is dynamic and --compare-openvino needs a static shape" in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dyn.onnx"]
    p = run_cli("prune", model, "-o", out, "--compare-openvino", "--input-shape", "input:1,3,8,8", "--report", report)
    assert p.returncode == 0, p.stderr
    assert json.loads(report.read_text())["openvino_pass"]["input_shapes"] == {"input": [1, 3, 8, 8]}


# -- 12: bench says how noisy it is, can run for a time, and says/chooses the precision ----------


def test_bench_reports_spread_precision_and_time_mode(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    p = run_cli(
        "bench",
        FIXTURES / "residual.onnx",
        FIXTURES / "residual.onnx",
        "-t",
        "0.2",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--throughput-seconds",
        "0.05",
        "--precision",
        "f32",
        "--json",
        out,
    )
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())["models"]  # {"format": "onnxprune-bench/1", "models": [...]}
    for row in rows:
        assert row["precision"] == "f32" and row["runs"] >= 4 and row["runs"] % 2 == 0
        assert row["latency_p10_ms"] <= row["latency_median_ms"] <= row["latency_p90_ms"]
    assert "p10-p90" in p.stdout and " f32 " in p.stdout
    default = run_cli(
        "bench",
        FIXTURES / "residual.onnx",
        "--rounds",
        "1",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--throughput-seconds",
        "0.05",
        "--json",
        out,
    )
    assert default.returncode == 0 and json.loads(out.read_text())["models"][0]["precision"] in ("f32", "bf16", "f16")


def test_spread_warning_when_the_difference_is_within_the_noise() -> None:
    from onnxprune.bench import ModelTiming, spread_warning, spread_warnings

    a = ModelTiming("a.onnx", "openvino", 10.0, 12.0, 100.0, 1.0, 1.0, latency_p10_ms=8.0)
    close = ModelTiming("b.onnx", "openvino", 10.5, 11.0, 95.0, 1.05, 0.95, latency_p10_ms=10.0)
    far = ModelTiming("c.onnx", "openvino", 5.0, 5.5, 200.0, 0.5, 2.0, latency_p10_ms=4.8)
    assert "within the noise" in spread_warning(a, close) and "p10-p90 up to 4 ms" in spread_warning(a, close)
    assert spread_warning(a, far) is None and spread_warning(a, a) is None
    assert len(spread_warnings([a, close, far])) == 1


# -- 13: convert keeps dynamic dimensions, checks at the given shape, takes a tolerance ----------


def _ir_inputs(xml: Path) -> list[str]:
    import openvino as ov

    return [str(i.get_partial_shape()) for i in ov.Core().read_model(str(xml)).inputs]


def test_convert_keeps_dynamic_dims_and_checks_at_the_given_shape(tmp_path: Path) -> None:
    model, xml = _dynamic_model(tmp_path), tmp_path / "m.xml"
    p = run_cli("convert", model, "-o", xml, "--input-shape", "input:2,3,8,8")
    assert p.returncode == 0, p.stderr
    assert _ir_inputs(xml) == ["[?,3,?,?]"] and "PASSED at input [2, 3, 8, 8]" in p.stdout
    p = run_cli("convert", model, "-o", xml, "--input-shape", "input:2,3,8,8", "--static")
    assert p.returncode == 0, p.stderr
    assert _ir_inputs(xml) == ["[2,3,8,8]"]


def test_prune_ir_keeps_dynamic_dims(tmp_path: Path) -> None:
    model, out, xml = _dynamic_model(tmp_path), tmp_path / "o.onnx", tmp_path / "o.xml"
    p = run_cli("prune", model, "-o", out, "--ir", xml, "--input-shape", "input:1,3,8,8")
    assert p.returncode == 0, p.stderr
    assert _ir_inputs(xml) == ["[?,3,?,?]"]


def test_convert_tolerance(tmp_path: Path) -> None:
    xml = tmp_path / "m.xml"
    p = run_cli("convert", FIXTURES / "residual.onnx", "-o", xml, "--fp16", "--tolerance", "1e-7")
    assert "differs from onnxruntime" in one_line_error(p, code=1)
    assert not xml.exists() and not xml.with_suffix(".bin").exists() and sorted(tmp_path.iterdir()) == []
    p = run_cli("convert", FIXTURES / "residual.onnx", "-o", xml, "--fp16", "--tolerance", "0.5")
    assert p.returncode == 0 and "limit 0.5 x scale" in p.stdout
