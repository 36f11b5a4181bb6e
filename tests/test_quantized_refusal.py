"""The one line a quantized model's refused verification prints names the float limit the
samples went past (1e-5 x max(scale, 0.01)), not only the tolerance."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
from dynamic_models import dynamic_model, with_fault

import onnxprune
from onnxprune import stages
from onnxprune.errors import VerificationFailed
from onnxprune.quantized import QUANTIZED_SAMPLES
from onnxprune.saving import DeferredModel, StagedModel
from onnxprune.verification import MIN_TOLERANCE, SCALE_FLOOR


def test_the_refusal_names_the_float_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = dynamic_model(tmp_path, 0)
    real = stages.deliver.runnable

    def broken(pruned: DeferredModel, staged: StagedModel | None) -> onnx.ModelProto:
        good = real(pruned, staged)
        return with_fault(onnx.load(good) if isinstance(good, str) else good, "bias")

    monkeypatch.setattr(stages.deliver, "runnable", broken)
    with pytest.raises(VerificationFailed) as caught:
        onnxprune.prune(str(path), "l2", ratio=0.25, output=str(tmp_path / "out.onnx"))
    text = str(caught.value)
    m = re.search(
        rf"\(({QUANTIZED_SAMPLES}) of {QUANTIZED_SAMPLES} samples past its float limit (\S+): 1e-05 x max\(its scale (\S+), 0.01\)",
        text,
    )
    assert m is not None, text
    limit, scale = float(m.group(2)), float(m.group(3))
    assert limit == pytest.approx(MIN_TOLERANCE * max(scale, SCALE_FLOOR), rel=1e-2)  # both printed to 3 digits
    assert "\n" not in text and text.endswith("nothing written")
