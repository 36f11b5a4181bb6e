"""The OpenVINO hand-off: IR conversion (checked against onnxruntime), A/B benchmarking,
OpenVINO's own pruning pass side by side, Markdown and plot reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    import subprocess
    import sys

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
