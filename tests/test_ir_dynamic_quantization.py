"""The OpenVINO IR check of dynamically quantized models (onnxruntime's ``quantize_dynamic``:
DynamicQuantizeLinear -> ConvInteger), issue 11: where the IR is past the tolerance, it is
judged within onnxruntime's own noise on the same inputs, and a wrong IR still fails."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from dynamic_models import HW, dynamic_model, noisy_feeds, with_fault

from onnxprune.cli_text import ir_check_text
from onnxprune.errors import VerificationFailed
from onnxprune.quantized import dynamic_noise, is_dynamically_quantized, nudged, quantization_form
from onnxprune.runtime import session

ov = pytest.importorskip("openvino")


def _ir_of(model: onnx.ModelProto):
    return ov.convert_model(io.BytesIO(model.SerializeToString()))


def test_the_fixture_is_dynamically_quantized_and_noisy(tmp_path: Path) -> None:
    model, _ = dynamic_model(tmp_path)
    assert is_dynamically_quantized(model) and quantization_form(model) is None
    assert [n.op_type for n in model.graph.node].count("ConvInteger") == 4
    feeds = noisy_feeds()
    ref = session(model).run(feeds[0], ["c3"])[0]
    scale = float(np.abs(ref).max())
    noise = dynamic_noise(model, feeds, [{"c3": ref}], lambda _n, _k: 1e-4 * scale)
    # onnxruntime against itself: tens of elements flip by a quantization step's worth.
    assert noise.past["c3"] >= 10 and 1e-3 * scale < noise.floor["c3"] < 0.05 * scale, (noise.past, noise.floor)


def test_nudged_moves_only_the_quantizers_inputs(tmp_path: Path) -> None:
    model, _ = dynamic_model(tmp_path)
    up = nudged(model, 1.5)
    onnx.checker.check_model(up, full_check=True)
    muls = [n for n in up.graph.node if n.op_type == "Mul" and n.name.startswith("onnxprune_nudge")]
    assert len(muls) == 4 and len(up.graph.node) == len(model.graph.node) + 4
    dql = [n for n in up.graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert [d.input[0] for d in dql] == [m.output[0] for m in muls]
    assert not any(n.name.startswith("onnxprune_nudge") for n in model.graph.node)  # the input is untouched


def test_correct_ir_passes_within_onnxruntimes_own_noise(tmp_path: Path) -> None:
    from onnxprune.openvino_ir import _check_ir

    model, _ = dynamic_model(tmp_path)
    check = _check_ir(ov, _ir_of(model), model, noisy_feeds(), "fp32", "q.onnx")
    assert check.passed and check.tolerance == 1e-4
    # OpenVINO's IR flips a few elements past 1e-4 x scale, as onnxruntime does against itself:
    # judged within the measured noise, reported with its floor and margin.
    assert check.noise is not None, "OpenVINO's IR of this fixture used to flip 46 elements"
    n = check.noise
    assert 0 < n.elements_past <= n.multiple * n.noise_elements_past and n.elements == HW * HW
    assert check.max_abs_diff <= n.limit == max(1e-4 * check.scale, n.multiple * n.floor)
    assert n.margin >= 1 and "DynamicQuantizeLinear" in n.runtime
    text = ir_check_text(check.to_dict())  # what convert and prune --ir print
    assert f"on {n.elements_past} of {HW * HW} elements past 0.0001 x scale" in text, text
    assert f"noise floor {n.floor:.3g}" in text and f"margin {n.margin:.3g}" in text, text


@pytest.mark.parametrize("fault", ["swap", "bias"])
def test_a_wrong_ir_fails_despite_the_noise(tmp_path: Path, fault: str) -> None:
    from onnxprune.openvino_ir import _check_ir

    model, _ = dynamic_model(tmp_path)
    with pytest.raises(VerificationFailed, match="beyond onnxruntime's own noise") as err:
        _check_ir(ov, _ir_of(with_fault(model, fault)), model, noisy_feeds(), "fp32", "q.onnx")
    # The noise was measured (nonzero floor) and the fault still stands far above it.
    past = int(str(err.value).split(" of 4096 elements")[0].rsplit("(", 1)[1])
    noise_past = int(str(err.value).split("x the ")[-1].split(" elements")[0])
    assert noise_past >= 10 and past > 8 * noise_past, str(err.value)


def test_a_wrong_ir_of_a_quiet_model_fails(tmp_path: Path) -> None:
    """Seed 3: no element flips in either runtime; a dropped bias fails without any noise."""
    from onnxprune.openvino_ir import _check_ir

    model, _ = dynamic_model(tmp_path, seed=3)
    good = _check_ir(ov, _ir_of(model), model, noisy_feeds(3), "fp32", "q.onnx")
    assert good.passed and good.noise is None and good.max_abs_diff <= 1e-4 * good.scale
    with pytest.raises(VerificationFailed, match="the 0 elements a noise run moved"):
        _check_ir(ov, _ir_of(with_fault(model, "bias")), model, noisy_feeds(3), "fp32", "q.onnx")


def test_convert_of_a_dynamically_quantized_model(tmp_path: Path) -> None:
    _, path = dynamic_model(tmp_path)
    p = subprocess.run(
        [sys.executable, "-m", "onnxprune", "convert", str(path), "-o", str(tmp_path / "q.xml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "check against onnxruntime: PASSED at x [1, 3, 64, 64]" in p.stdout, p.stdout
    assert (tmp_path / "q.xml").exists() and (tmp_path / "q.bin").exists()
