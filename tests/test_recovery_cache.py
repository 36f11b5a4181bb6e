"""A RecoveryCache serves one set of calibration samples (as its ReconstructionCache does): the
original's statistics it keeps are by tensor name and the pruned models' by what computes them,
neither by the samples, so used with other samples it would answer with the first set's."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

import onnxprune
from onnxprune.planning import PruningPlan
from onnxprune.recovery import RecoveryCache, recover_model
from onnxprune.surgery import apply_pruning
from onnxprune.testing import GraphBuilder


def _model():  # type: ignore[no-untyped-def]
    b = GraphBuilder(opset=17, seed=42)
    x = b.input("x", [None, 3, 6, 6])
    h = b.op("Relu", b.conv(x, 6, k=3))
    h = b.op("Relu", b.conv(h, 6, k=1, pads=0))
    b.output(b.conv(h, 4, k=1, pads=0))
    return b.build()


def _feeds(seed: int, shift: float) -> list[dict[str, np.ndarray]]:
    x = np.random.default_rng(seed).standard_normal((8, 1, 3, 6, 6)).astype(np.float32) + shift
    return [{"x": v} for v in x]


def test_a_recovery_cache_refuses_other_samples() -> None:
    model = _model()
    analysis = onnxprune.analyze(model)
    plan = PruningPlan("trial", (1,))
    pruned = apply_pruning(model, analysis, plan)
    first, other = _feeds(3, 0.5), _feeds(4, -0.5)
    cache = RecoveryCache()
    options = {"reconstruct": False, "recalibrate": True, "measure": False, "carry_forward": False}
    recover_model(model, pruned, analysis, plan, first, cache=cache, **options)
    again, _, _ = recover_model(model, pruned, analysis, plan, list(first), cache=cache, **options)  # same samples
    fresh, _, _ = recover_model(model, pruned, analysis, plan, first, **options)
    weights = {t.name: numpy_helper.to_array(t) for t in fresh.graph.initializer}
    assert all(np.array_equal(weights[t.name], numpy_helper.to_array(t)) for t in again.graph.initializer)
    with pytest.raises(ValueError, match="one set of calibration samples"):
        recover_model(model, pruned, analysis, plan, other, cache=cache, **options)
