"""Malformed models: one line naming the file (and node), exit 2, no output, input untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _residual() -> onnx.ModelProto:
    return onnx.load(FIXTURES / "residual.onnx")


def _truncated(tmp: Path) -> bytes:
    data = _residual().SerializeToString()
    return data[: len(data) // 2]


def _cycle(tmp: Path) -> bytes:
    m = _residual()
    m.graph.node[0].input[0] = m.graph.node[2].output[0]
    return m.SerializeToString()


def _undefined(tmp: Path) -> bytes:
    m = _residual()
    m.graph.node[3].input[0] = "nowhere"
    return m.SerializeToString()


def _contradicting_weight(tmp: Path) -> bytes:
    m = _residual()
    w = m.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(np.zeros((16, 5, 3, 3), np.float32), w.name))
    return m.SerializeToString()


def _opset_too_new(tmp: Path) -> bytes:
    m = _residual()
    m.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    return m.SerializeToString()


def _escaping_external_data(tmp: Path) -> bytes:
    (tmp.parent / "secret.bin").write_bytes(b"\0" * 2000)
    m = _residual()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../secret.bin"
    return m.SerializeToString()


CASES = [
    (_truncated, "not an ONNX model"),
    (_cycle, "has a cycle or is not topologically sorted"),
    (_undefined, "reads undefined tensor 'nowhere'"),
    (_contradicting_weight, "expects 5 input channels, the input has 3"),
    (_opset_too_new, "is newer than the installed onnx supports"),
    (_escaping_external_data, "outside the model's folder; refused"),
]


@pytest.mark.parametrize("make, message", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_malformed_model(make, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    bad = folder / "bad.onnx"
    bad.write_bytes(make(folder))
    before = bad.read_bytes()
    out = tmp_path / "out.onnx"
    assert cli.main(["prune", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert str(bad) in err and message in err
    assert "Traceback" not in err
    assert not out.exists() and bad.read_bytes() == before
    assert not list(tmp_path.glob("out.onnx*"))


def test_ratio_out_of_range_and_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for ratio in ("1.2", "-0.1"):
        assert (
            cli.main(
                [
                    "prune",
                    str(FIXTURES / "residual.onnx"),
                    "-o",
                    str(tmp_path / "o.onnx"),
                    "--criterion",
                    "l2",
                    "--ratio",
                    ratio,
                ]
            )
            == 2
        )
        assert "a fraction in [0, 1)" in capsys.readouterr().err


def test_model_onnxruntime_cannot_run_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A custom op with no kernel: analysis pins it, verification cannot run the original."""
    from onnx import helper

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    y = b.conv(x, 4, zero=(1,))
    b.nodes.append(helper.make_node("MyOp", [y], ["custom"], domain="com.example", name="custom_node"))
    b.outputs.append(helper.make_tensor_value_info("custom", TensorProto.FLOAT, [1, 4, 4, 4]))
    path = tmp_path / "custom.onnx"
    onnx.save(b.build(domains={"com.example": 1}), path)
    assert cli.main(["prune", str(path), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime cannot load the model" in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()
    assert (
        cli.main(["prune", str(path), "-o", str(tmp_path / "o.onnx"), "--no-verify", "-q"]) == 0
    )  # unknown op: untouched
