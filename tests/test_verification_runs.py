"""A quantized model's verification runs each model once per sample on its float path.

``compare_models`` runs the reference and the pruned model on every feed; the rounding rule's
float path (graph optimisations off) is those same two sessions on those same feeds, so it is
judged on those runs (``quantized.PathSamples``) instead of running both models again. Only a
QDQ model's integer path (optimisations on) is another run. The verdicts must not move: the
check built from compare_models' runs equals the one ``check_quantized`` runs itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dynamic_models import dynamic_model, with_fault
from test_quantized_verification import argmax_tie_model, qdq_conv_model, tie_feeds, tie_model

import onnxprune
from onnxprune import PruneConfig, quantized, stages, verification
from onnxprune.quantized import QUANTIZED_SAMPLES, check_quantized, verification_form
from onnxprune.verification import MIN_TOLERANCE, SCALE_FLOOR, compare_models, limits

F = np.float32


def counted_runs(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """Every run of a session opened by verification or quantized, counted by (model, graph
    optimisations): ("reference" | "candidate", "off" | "on")."""
    runs: Counter[tuple[str, str]] = Counter()
    for module in (verification, quantized):
        real = module.session

        def counting(model: Any, _real: Any = real, **kw: Any) -> Any:
            runner = _real(model, **kw)
            key = ("candidate" if kw.get("pruned") else "reference", "on" if kw.get("optimize") else "off")
            inner = runner.run

            def run(feeds: Any, names: Any = None) -> Any:
                runs[key] += 1
                return inner(feeds, names)

            runner.run = run
            return runner

        monkeypatch.setattr(module, "session", counting)
    return runs


def test_a_dynamic_model_runs_once_per_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """quantize_dynamic: one (float) path, no noise pass: each model once per sample, pass or fail
    (it ran twice: 16 runs of each for 8 samples)."""
    model, _ = dynamic_model(tmp_path, 0)
    runs = counted_runs(monkeypatch)
    for candidate, verdict in ((model, True), (with_fault(model, "bias"), False)):
        runs.clear()
        result = onnxprune.verify(model, candidate)
        assert result.passed is verdict and result.quantized.paths[0].samples == QUANTIZED_SAMPLES
        assert runs == {("reference", "off"): QUANTIZED_SAMPLES, ("candidate", "off"): QUANTIZED_SAMPLES}


def test_a_qdq_model_runs_once_per_sample_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """QDQ: the float path is compare_models' runs, the integer path one more run of each."""
    model = qdq_conv_model()
    runs = counted_runs(monkeypatch)
    result = onnxprune.verify(model, model)
    assert result.passed and [p.samples for p in result.quantized.paths] == [QUANTIZED_SAMPLES] * 2
    assert runs == {
        ("reference", "off"): QUANTIZED_SAMPLES,
        ("candidate", "off"): QUANTIZED_SAMPLES,
        ("reference", "on"): QUANTIZED_SAMPLES,
        ("candidate", "on"): QUANTIZED_SAMPLES,
    }


def float_limit(_name: str, scale: float) -> float:
    """compare_models' float limit for a quantized model (no noise floor)."""
    return MIN_TOLERANCE * max(scale, SCALE_FLOOR)


def test_the_verdicts_are_those_check_quantized_reaches_alone(tmp_path: Path) -> None:
    """Every field of the check (per path: verdict, worst diff and output, scale, samples,
    flips) equals check_quantized's own runs: a dynamic model correct and faulted, QDQ with one
    flip (passed) and with every sample flipped (failed), and a decision whose tail is skipped."""
    dynamic, _ = dynamic_model(tmp_path, 0)
    dyn_feeds, _ = stages.verification_feeds(dynamic, PruneConfig(), "q.onnx")
    argmax_feeds = [{"input": np.array([[0.0625, 0.1, -2.0, -3.0]], F)}]
    argmax_feeds += [{"input": np.array([[0.5, 0.25, -2.0, 12.0]], F)} for _ in range(7)]
    cases = [
        (dynamic, dynamic, dyn_feeds, True),
        (dynamic, with_fault(dynamic, "swap"), dyn_feeds, False),
        (tie_model(0.0), tie_model(1e-4), tie_feeds(1, 12.0), True),
        (tie_model(0.0), tie_model(1e-4), tie_feeds(8, 12.0), False),
        (argmax_tie_model(0.0), argmax_tie_model(1e-4), argmax_feeds, True),
    ]
    tolerance, noise_multiple = limits(None)
    for reference, candidate, feeds, verdict in cases:
        form = verification_form(reference)
        result = compare_models(
            reference, candidate, feeds, tolerance, "given", noise_multiple=noise_multiple, form=form
        )
        alone = check_quantized(form, reference, candidate, feeds, float_limit)
        assert result.quantized == alone and result.passed is alone.passed is verdict
        assert len(alone.paths) == (2 if form == "QDQ" else 1)
        for p in alone.paths:  # the float limit a flip goes past, at the worst output's scale
            assert p.limit == float_limit(p.worst_output, p.scale) > 0
            assert p.to_dict()["float_limit"] == p.limit and (p.max_abs_diff > p.limit) is (p.flipped_samples > 0)
    # The tail's own output and its decision are skipped on both: judged at the scores.
    assert result.quantized.paths[0].worst_output == "out" and result.quantized.paths[0].flipped_samples == 1
