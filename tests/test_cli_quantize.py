"""The command line's int8 quantization (onnxprune/cli_quantize.py): the quantize command's
report and one-line errors, and the prune --quantize int8 chain (QDQ model and IR, fidelity
against both, the benchmark of the chain). The library's quantization: tests/test_quantize.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import quantize_helpers
from quantize_helpers import ir_weights_int8

from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
files = quantize_helpers.files  # the module-scoped fixture: models and calibration sets


@pytest.mark.parametrize(
    ("model", "calibration", "extra", "message"),
    [
        ("tiny", "nhwc", [], "the inputs do not fit the model: input 'x' has shape [1, 8, 8, 3]"),
        ("tiny", "few", [], "needs at least 16 (NNCF's default subset is 300 samples"),
        ("tiny", "cal", ["--ignored-scope", "nosuchnode"], "--ignored-scope 'nosuchnode' names no node"),
        ("custom", "cal", [], "onnxruntime cannot load the model"),
        ("qdq", "cal", [], "the model is already quantized"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    model: str,
    calibration: str,
    extra: list,
    message: str,
) -> None:
    path = FIXTURES / "residual_qdq.onnx" if model == "qdq" else files[model]
    cal = files[calibration]
    if model == "qdq":
        shape = [d.dim_value or 1 for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
        cal = tmp_path / "qdq_cal.npz"
        np.savez(cal, **{onnx.load(path).graph.input[0].name: np.zeros([24, *shape[1:]], np.float32)})
    out = tmp_path / "q.onnx"
    code = cli.main(["quantize", str(path), "-o", str(out), "--calibration", str(cal), "--subset-size", "64", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) in ([], [cal])


def test_cli_quantize_writes_model_and_report(files: dict[str, Path], tmp_path: Path) -> None:
    out, report = tmp_path / "q.onnx", tmp_path / "r.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxprune",
            "quantize",
            str(files["tiny"]),
            "-o",
            str(out),
            "--calibration",
            str(files["cal"]),
            "--inputs",
            str(files["held"]),
            "--subset-size",
            "64",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "vs the float model" in p.stdout and p.stderr == ""
    data = json.loads(report.read_text())
    assert data["evaluation_samples"] == 10 and data["fidelity"][0]["reference"] == "float model"
    # the report says what it is first; the int8 model's own format has its own key
    assert next(iter(data.items())) == ("format", "onnxprune-quantize-report/1") and data["model_format"] == "onnx"
    assert out.exists()


def test_prune_quantize_int8_writes_qdq_and_ir_with_fidelity_against_both(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, ir, report = tmp_path / "p8.onnx", tmp_path / "p8.xml", tmp_path / "r.json"
    code = cli.main(
        [
            "prune",
            str(files["tiny"]),
            "-o",
            str(out),
            "--ratio",
            "0.25",
            "--calibration",
            str(files["cal"]),
            "--quantize",
            "int8",
            "--ir",
            str(ir),
            "--subset-size",
            "64",
            "--report",
            str(report),
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    for key in ("quantization", "quantization_ir"):
        q = data[key]
        assert [f["reference"] for f in q["fidelity"]] == ["float model", "original"]
        assert q["evaluation_samples"] == 6
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node)
    q = onnx.load(out)
    producers = {o: n for n in q.graph.node for o in n.output}
    weights = {i.name: i for i in q.graph.initializer}
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    assert weights[producers[conv1.input[1]].input[0]].dims[0] == 6  # pruned (8 -> 6), then int8
    assert all(ir_weights_int8(ir).values())
    # Options of quantization without --quantize are a usage error; --max-drop on prune is the
    # pruning search's budget (the drop of the validated metric), which needs calibration inputs.
    assert cli.main(["prune", str(files["tiny"]), "-o", str(tmp_path / "x.onnx"), "--preset", "mixed"]) == 2
    assert "add --quantize int8" in capsys.readouterr().err
    assert cli.main(["prune", str(files["tiny"]), "-o", str(tmp_path / "x.onnx"), "--max-drop", "0.01"]) == 2
    assert "need calibration inputs" in capsys.readouterr().err


def test_a_failure_inside_nncf_is_one_line_exit_2(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nncf

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Could not find the node 'conv2' in the graph\nmore context")

    monkeypatch.setattr(nncf, "quantize", broken)
    out = tmp_path / "q.onnx"
    code = cli.main(
        ["quantize", str(files["tiny"]), "-o", str(out), "--calibration", str(files["cal"]), "--subset-size", "64"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert (
        "NNCF cannot quantize the model: Could not find the node 'conv2' in the graph" in err
        and "nothing written" in err
    )
    assert list(tmp_path.iterdir()) == []


def test_prune_quantize_bench_times_the_chain_side_by_side(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxprune import bench

    real = bench.benchmark
    monkeypatch.setattr(
        bench,
        "benchmark",
        lambda paths, **kw: real(
            paths, **{**kw, "rounds": 2, "runs_per_round": 2, "warmup": 1, "throughput_seconds": 0.05}
        ),
    )
    out, report = tmp_path / "p8.onnx", tmp_path / "r.json"
    code = cli.main(
        [
            "prune",
            str(files["tiny"]),
            "-o",
            str(out),
            "--ratio",
            "0.25",
            "--calibration",
            str(files["cal"]),
            "--quantize",
            "int8",
            "--subset-size",
            "64",
            "--bench",
            "--report",
            str(report),
            "-q",
        ]
    )
    assert code == 0
    rows = json.loads(report.read_text())["benchmark"]
    assert [r["label"] for r in rows] == ["original fp32", "pruned fp32", "pruned int8"]
    assert rows[2]["path"] == str(out) and rows[0]["path"] == str(files["tiny"])
    assert rows[2]["precision"].startswith("int8 + ") and not rows[1]["precision"].startswith("int8")
    assert all(r["latency_p10_ms"] <= r["latency_median_ms"] <= r["latency_p90_ms"] for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p8.onnx", "r.json"]


def test_quantize_removes_the_replaced_models_data_file(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """quantize -o q.onnx over a q.onnx whose weights were in q.onnx.data left that file without a
    word, then with a warning: it goes with the model it belonged to now, as prune's does."""
    import onnxprune

    out = tmp_path / "q.onnx"
    onnxprune.save(onnx.load(files["tiny"]), out, external_data=True)
    code = cli.main(["quantize", str(files["tiny"]), "-o", str(out), "--calibration", str(files["cal"]), "-q"])
    assert code == 0 and capsys.readouterr().err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]
    onnx.load(str(out))  # one file
