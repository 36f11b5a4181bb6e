"""Pruning verification of dynamically quantized models (onnxruntime's ``quantize_dynamic``).

Their own noise run (one ulp at the inputs, fused kernels) flips run-time quantization steps,
so 8 x that noise floor is a limit a surgery fault can hide under (the corpus's DBNet: a limit
of 7.3 x the scale of a [0, 1] map). They are verified by the quantized models' rounding rule
instead, on the float limit without the noise floor: a fault that moves every sample fails."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from dynamic_models import dynamic_model, with_fault

import onnxprune
from onnxprune import PruneConfig, stages
from onnxprune.errors import VerificationFailed
from onnxprune.quantized import FLIP_SHARE, QUANTIZED_SAMPLES, verification_form
from onnxprune.saving import DeferredModel, StagedModel
from onnxprune.verification import compare_models, limits

# Seed 0: the dropped bias moves the output by 0.023 of a scale of 1.13; the model's own noise
# floor there is 0.0058, so the float limit of 8 x noise (0.046) would have passed it.
SEED = 0


def test_a_dynamic_model_is_verified_by_the_rounding_rule(tmp_path: Path) -> None:
    model, _ = dynamic_model(tmp_path, SEED)
    assert verification_form(model) == "dynamic"
    feeds, _ = stages.verification_feeds(model, PruneConfig(), "q.onnx")
    assert len(feeds) == QUANTIZED_SAMPLES  # flips are judged per sample
    for fault in ("swap", "bias"):
        result = onnxprune.verify(model, with_fault(model, fault))
        assert not result.passed, fault
        path = result.quantized.paths[0]
        assert result.quantized.form == "dynamic" and path.flipped_samples == QUANTIZED_SAMPLES > FLIP_SHARE * 8


def test_the_noise_floor_alone_would_pass_a_fault(tmp_path: Path) -> None:
    """Why the rule is needed: the noise-aware float limit passes the dropped bias."""
    model, _ = dynamic_model(tmp_path, SEED)
    feeds, desc = stages.verification_feeds(model, PruneConfig(), "q.onnx")
    tolerance, noise_multiple = limits(None)
    loose = compare_models(model, with_fault(model, "bias"), feeds, tolerance, desc, noise_multiple=noise_multiple)
    worst = loose.worst
    assert loose.passed and worst.noise_floor is not None
    assert worst.max_abs_diff > 100 * tolerance * worst.scale  # not float noise: a channel's worth
    assert worst.max_abs_diff < worst.limit == pytest.approx(noise_multiple * worst.noise_floor)


def test_pruning_a_dynamic_model_stays_bit_exact(tmp_path: Path) -> None:
    """Integer sums do not depend on their order and the run-time scale is taken with 0: the
    pruned model equals the masked original on every sample."""
    model, _ = dynamic_model(tmp_path, SEED)
    result = onnxprune.prune(model, "l2", ratio=0.25)
    q = result.report.verification.quantized
    assert result.report.channels_removed > 0 and result.report.verification.passed
    assert q.form == "dynamic" and [(p.samples, p.flipped_samples, p.max_abs_diff) for p in q.paths] == [
        (QUANTIZED_SAMPLES, 0, 0.0)
    ]
    assert result.report.to_dict()["verification"]["quantized"]["form"] == "dynamic"


def test_a_fault_in_the_pruned_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a surgery whose result lost one kept channel's bias is refused by the
    rounding rule, and nothing is written."""
    _, path = dynamic_model(tmp_path, SEED)
    before = path.read_bytes()
    real = stages.deliver.runnable

    def broken(pruned: DeferredModel, staged: StagedModel | None) -> onnx.ModelProto:
        good = real(pruned, staged)
        good = onnx.load(good) if isinstance(good, str) else good
        return with_fault(good, "bias")

    monkeypatch.setattr(stages.deliver, "runnable", broken)
    out = tmp_path / "out.onnx"
    with pytest.raises(VerificationFailed, match=r"'c3'.*nothing written"):
        onnxprune.prune(str(path), "l2", ratio=0.25, output=str(out))
    assert not out.exists() and path.read_bytes() == before
