"""Property-based: random CNNs from the supported rule families never crash, zero removal is
exact, and lossy pruning matches the masked original (a longer run: tools/fuzz.py)."""

from __future__ import annotations

import hypothesis.strategies as st
from conftest import assert_same_outputs
from hypothesis import HealthCheck, given, settings

import onnxprune
from onnxprune.analysis import static_shapes
from onnxprune.metrics import model_cost
from onnxprune.shapes import concrete_input_shapes
from onnxprune.testing import random_cnn


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_zero_removal_exact_on_random_cnns(seed: int) -> None:
    model = random_cnn(seed)
    result = onnxprune.prune(model, "zero")
    assert result.report.verification.passed
    assert_same_outputs(model, result.model)
    # The report's cost (derived from the analysis) equals shape inference on the result.
    pruned = result.model
    assert (
        result.report.macs_after
        == model_cost(pruned, static_shapes(pruned, concrete_input_shapes(pruned, {}, "fuzz"))).macs
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.integers(min_value=0, max_value=2**31 - 1), st.sampled_from(["l2", "fpgm", "random"]), st.floats(0.1, 0.6))
def test_lossy_pruning_matches_masked_original(seed: int, criterion: str, ratio: float) -> None:
    model = random_cnn(seed)
    result = onnxprune.prune(model, criterion, ratio=ratio, seed=seed)
    assert result.report.verification.passed  # against the original with removed channels replaced


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_file_to_file_with_every_weight_deferred(seed: int) -> None:
    """From a file to a file without verification, every new weight written from its array and
    unaligned views of the file's bytes sliced a few rows at a time: the file is exact."""
    import tempfile

    import onnx

    import onnxprune.edits as edits
    import onnxprune.surgery as surgery

    model = random_cnn(seed)
    saved = surgery._DEFER_BYTES, edits._BLOCK_BYTES
    surgery._DEFER_BYTES, edits._BLOCK_BYTES = 0, 64
    try:
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, f"{tmp}/m.onnx")
            onnxprune.prune(f"{tmp}/m.onnx", "zero", verify=False, output=f"{tmp}/o.onnx")
            written = onnx.load(f"{tmp}/o.onnx")
    finally:
        surgery._DEFER_BYTES, edits._BLOCK_BYTES = saved
    assert onnxprune.verify(model, written).passed
    assert_same_outputs(model, written)
