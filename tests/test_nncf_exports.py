"""Real NNCF 2.19 exports (tools/export_nncf.py; filter_pruning 0.4, with int8 quantization for
the fq/qdq forms) of the digits ResNet in float, FakeQuantize and QDQ form, and of the
MobileNetV2-style net in FakeQuantize form: the patterns of issue 11 item 1 checked on the
files themselves, and what onnxprune does with them: every form prunes, is verified (the
FakeQuantize form as its standard-ops expansion in onnxruntime, checked here in OpenVINO) and
converts without a false alarm."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import onnxprune
from onnxprune import cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FLOAT, FQ, QDQ = (FIXTURES / f"nncf_resnet_{form}.onnx" for form in ("float", "fq", "qdq"))
MOBILENET_FQ = FIXTURES / "nncf_mobilenet_fq.onnx"
FQ_OP = ("org.openvinotoolkit", "FakeQuantize")


class Export:
    """The file's constants (initializers and Constant nodes), producers and readers."""

    def __init__(self, path: Path) -> None:
        self.model = onnx.load(path)
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.model.graph.initializer}
        for n in self.model.graph.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in self.model.graph.node for o in n.output}
        self.readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.model.graph.node:
            for i in n.input:
                self.readers[i].append(n)
        self.convs = [n for n in self.model.graph.node if n.op_type == "Conv"]

    def const(self, name: str) -> np.ndarray:
        """A constant, through the Identity nodes torch's exporter shares equal ones with."""
        while name not in self.consts and self.producer[name].op_type == "Identity":
            name = self.producer[name].input[0]
        return self.consts[name]

    def ops(self, op: tuple[str, str] | str) -> list[onnx.NodeProto]:
        if isinstance(op, str):
            return [n for n in self.model.graph.node if n.op_type == op and n.domain in ("", "ai.onnx")]
        return [n for n in self.model.graph.node if (n.domain, n.op_type) == op]

    def stored_weight(self, conv: onnx.NodeProto) -> tuple[np.ndarray, list[str]]:
        """The conv's weight as stored, and the ops between it and the conv."""
        name, chain = conv.input[1], []
        while name not in self.consts:
            node = self.producer[name]
            chain.append(node.op_type)
            name = node.input[0]
        return self.consts[name], chain

    def zero_filters(self, conv: onnx.NodeProto) -> np.ndarray:
        w, _ = self.stored_weight(conv)
        return np.flatnonzero(~np.any(w.reshape(len(w), -1) != 0, axis=1))

    def batchnorm_after(self, conv: onnx.NodeProto) -> onnx.NodeProto:
        (bn,) = self.readers[conv.output[0]]
        assert bn.op_type == "BatchNormalization"
        return bn

    def group(self, conv: onnx.NodeProto) -> int:
        return next((int(a.i) for a in conv.attribute if a.name == "group"), 1)


def digits(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(FIXTURES / "digits_test.npz")
    return data["input"][:n], data["labels"][:n]


def logits(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime, one image at a time (NNCF exports with batch 1)."""
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])


# --- the files: the patterns issue 11 lists, checked independently of onnxprune


@pytest.mark.parametrize("path", [FLOAT, FQ, QDQ, MOBILENET_FQ], ids=lambda p: p.stem)
def test_masked_convs_keep_batchnorm_zeroed_on_pruned_channels(path: Path) -> None:
    """Every conv NNCF masked keeps an unfolded BatchNormalization whose scale and bias are 0
    exactly on the conv's zero filters; running mean and variance are not masked. NNCF keeps
    a multiple of 8 filters."""
    export = Export(path)
    assert export.convs
    for conv in export.convs:
        zero = export.zero_filters(conv)
        w, _ = export.stored_weight(conv)
        assert len(zero) > 0 and (len(w) - len(zero)) % 8 == 0, conv.name
        scale, bias, _mean, var = (export.const(i) for i in export.batchnorm_after(conv).input[1:5])
        assert np.array_equal(np.flatnonzero(scale == 0), zero), conv.name
        assert np.array_equal(np.flatnonzero(bias == 0), zero), conv.name
        assert np.all(var[zero] > 0), conv.name


def test_float_form_is_plain_onnx() -> None:
    export = Export(FLOAT)
    onnx.checker.check_model(export.model, full_check=True)
    assert not export.ops(FQ_OP) and not export.ops("QuantizeLinear")
    assert all(chain == [] for chain in (export.stored_weight(c)[1] for c in export.convs))


@pytest.mark.parametrize("path", [FQ, MOBILENET_FQ], ids=lambda p: p.stem)
def test_fake_quantize_form(path: Path) -> None:
    """Weights: stored Constant -> per-channel FakeQuantize ([C,1,1,1] ranges, one Constant for
    input_low and output_low, one for input_high and output_high) -> Conv. The stored zero
    filters are exactly 0; FakeQuantize's formula evaluated in float32 (as an expansion into
    standard ops would run it) leaves some of them at a few 1e-8."""
    export = Export(path)
    assert {o.domain: o.version for o in export.model.opset_import}.get("org.openvinotoolkit") == 1
    with pytest.raises(Exception, match="FakeQuantize"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tiny = []
    for conv in export.convs:
        w, chain = export.stored_weight(conv)
        assert chain == ["FakeQuantize"], conv.name
        fq = export.producer[conv.input[1]]
        assert fq.input[1] == fq.input[3] and fq.input[2] == fq.input[4], conv.name
        lo, hi = export.const(fq.input[1]), export.const(fq.input[2])
        assert lo.shape == hi.shape == (len(w), 1, 1, 1), conv.name
        assert next(a.i for a in fq.attribute if a.name == "levels") == 256
        zero = export.zero_filters(conv)
        f = np.float32
        q = np.round((w[zero] - lo[zero]) / (hi[zero] - lo[zero]) * f(255))
        tiny.append(np.abs(q / f(255) * (hi[zero] - lo[zero]) + lo[zero]).max())
    assert 0 < max(tiny) < 1e-7


def test_per_channel_activation_fake_quantize_before_depthwise_convs() -> None:
    """The MobileNetV2's depthwise convs read a per-channel activation FakeQuantize
    ([1,C,1,1] ranges) whose input_low and output_low are one Constant."""
    export = Export(MOBILENET_FQ)
    depthwise = [c for c in export.convs if export.group(c) > 1]
    assert len(depthwise) == 5
    for conv in depthwise:
        fq = export.producer[conv.input[0]]
        assert (fq.domain, fq.op_type) == FQ_OP, conv.name
        assert export.const(fq.input[1]).shape == (1, export.group(conv), 1, 1), conv.name
        assert fq.input[1] == fq.input[3], conv.name


def test_qdq_form() -> None:
    """Float Constant weights -> QuantizeLinear (per output channel) -> DequantizeLinear -> Conv."""
    export = Export(QDQ)
    onnx.checker.check_model(export.model, full_check=True)
    assert not export.ops(FQ_OP)
    for conv in export.convs:
        w, chain = export.stored_weight(conv)
        assert chain == ["DequantizeLinear", "QuantizeLinear"], conv.name
        assert not any(i.name == export.producer[conv.input[1]].input[0] for i in export.model.graph.initializer)
        ql = export.producer[export.producer[conv.input[1]].input[0]]
        assert next(a.i for a in ql.attribute if a.name == "axis") == 0
        assert export.const(ql.input[1]).shape == (len(w),)


# --- onnxprune today


@pytest.mark.parametrize("path", [FLOAT, QDQ], ids=lambda p: p.stem)
def test_zero_criterion_removes_every_nncf_filter(path: Path) -> None:
    """Float and QDQ forms: every filter NNCF zeroed is removed, and the pruned model gives the
    same logits on real digits (onnxruntime, default optimisations: QLinearConv for QDQ)."""
    export = Export(path)
    result = onnxprune.prune(path, "zero")
    onnx.checker.check_model(result.model, full_check=True)
    pruned_convs = {n.name: n for n in result.model.graph.node if n.op_type == "Conv"}
    inits = {i.name: i for i in result.model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in result.model.graph.node if n.op_type == "Constant"}
    producer = {o: n for n in result.model.graph.node for o in n.output}
    removed = 0
    for conv in export.convs:
        w, _ = export.stored_weight(conv)
        name = pruned_convs[conv.name].input[1]
        while name not in inits and name not in consts:
            name = producer[name].input[0]
        kept = (inits[name] if name in inits else consts[name]).dims[0]
        assert kept == len(w) - len(export.zero_filters(conv)), conv.name
        removed += len(export.zero_filters(conv))
    assert result.report.channels_removed == removed > 0
    x, y = digits()
    before, after = logits(path, x), logits(result.model, x)
    assert np.array_equal(before.argmax(1), after.argmax(1))
    assert float(np.abs(before - after).max()) <= 1e-5 * float(np.abs(before).max())
    assert (before.argmax(1) == y).mean() > 0.9


@pytest.mark.parametrize("path", [FQ, MOBILENET_FQ], ids=lambda p: p.stem)
def test_zero_criterion_prunes_fake_quantize_form(path: Path) -> None:
    """Every filter NNCF zeroed goes (the depthwise convs shrink with them), proved through the
    BatchNormalizations whose scale and bias are 0; checked independently in OpenVINO at f32:
    the same top-1 on real digits, outputs within a rounding flip."""
    ov = pytest.importorskip("openvino")
    export = Export(path)
    result = onnxprune.prune(path, "zero")
    expected = sum(len(export.zero_filters(c)) for c in export.convs if export.group(c) == 1)
    assert result.report.channels_removed == expected
    onnx.checker.check_model(result.model, full_check=True)
    quantized = result.report.verification.quantized
    assert quantized is not None and quantized.form == "FakeQuantize" and quantized.passed
    assert "FakeQuantize (org.openvinotoolkit) expanded to standard ops" in quantized.paths[0].runtime
    core = ov.Core()
    x, y = digits()

    def run(model: onnx.ModelProto | Path) -> np.ndarray:
        src = str(model) if isinstance(model, Path) else core.read_model(model.SerializeToString(), b"")
        compiled = core.compile_model(src, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate([compiled({"input": x[i : i + 1]})[0] for i in range(len(x))])

    before, after = run(path), run(result.model)
    assert np.array_equal(before.argmax(1), after.argmax(1))
    assert (before.argmax(1) == y).mean() > 0.9
    diff = np.abs(before - after).max(axis=1)
    scale = float(np.abs(before).max())
    assert np.count_nonzero(diff > 1e-5 * scale) <= len(x) // 50  # isolated rounding flips
    assert float(diff.max()) <= 0.02 * scale


def test_analysis_sees_the_convs_behind_fake_quantize() -> None:
    export = Export(FQ)
    analysis = onnxprune.analyze(FQ)
    assert len(analysis.sources) == len(export.convs) + 1  # and the Gemm head
    assert analysis.summary()["channels"] == sum(len(export.stored_weight(c)[0]) for c in export.convs) + 10


def test_convert_qdq_form_without_false_alarm(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    assert cli.main(["convert", str(QDQ), "-o", str(tmp_path / "m.xml"), "-q"]) == 0
    assert (tmp_path / "m.xml").exists() and (tmp_path / "m.bin").exists()


def test_convert_fake_quantize_form(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    assert cli.main(["convert", str(FQ), "-o", str(tmp_path / "m.xml"), "-q"]) == 0
    assert (tmp_path / "m.xml").exists() and (tmp_path / "m.bin").exists()


def test_prune_ir_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the IR check fails, neither the IR nor the (verified) pruned .onnx is left: all the
    run's outputs are moved into place together or not at all (the baseline left the .onnx)."""
    pytest.importorskip("openvino")
    from onnxprune import openvino_ir

    monkeypatch.setitem(openvino_ir.IR_TOLERANCE, "int8", 1e-6)  # OpenVINO's int8 path is further away
    out, xml = tmp_path / "o.onnx", tmp_path / "o.xml"
    assert cli.main(["prune", str(QDQ), "-o", str(out), "--ir", str(xml), "-q"]) == 1
    assert sorted(tmp_path.iterdir()) == []
    monkeypatch.setitem(openvino_ir.IR_TOLERANCE, "int8", 0.15)
    assert cli.main(["prune", str(QDQ), "-o", str(out), "--ir", str(xml), "-q"]) == 0
    assert out.exists() and xml.exists() and xml.with_suffix(".bin").exists()
