"""The ``reconstruction`` / ``contribution`` criteria keep the readers' input activations as
the model computed them (float32) and convert only the sampled rows: the same scores as from a
float64 copy of every activation, bit for bit, at half its memory (a 640x640 detector's 32
pages held 11-13 GB as float64). Tiny graph, exact checks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import onnxprune
from onnxprune.criteria import reconstruction_error
from onnxprune.criteria.reconstruction_error import reconstruction_scores
from onnxprune.testing import GraphBuilder

SIDE, CHANNELS, SAMPLES = 128, 8, 32


def _chain():
    """x [1, 3, 128, 128] -> three 3x3 Conv+Relu of 8 channels: two readers of 8-channel inputs."""
    b = GraphBuilder(opset=17, seed=11)
    h = b.input("x", [1, 3, SIDE, SIDE])
    for _ in range(3):
        h = b.op("Relu", b.conv(h, CHANNELS))
    b.output(h)
    return b.build()


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [{"x": rng.standard_normal((1, 3, SIDE, SIDE)).astype(np.float32)} for _ in range(SAMPLES)]


class _Float64Session:
    """The criterion's session returning float64 copies of the activations (as it kept them
    before): the scores to match."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def run(self, feed, names):  # type: ignore[no-untyped-def]
        return [np.asarray(v, dtype=np.float64) for v in self.inner.run(feed, names)]


@pytest.mark.parametrize("refit", [True, False])
def test_scores_from_float32_activations_are_the_float64_ones_at_half_the_memory(
    monkeypatch: pytest.MonkeyPatch, refit: bool
) -> None:
    model, feeds = _chain(), _feeds()
    analysis = onnxprune.analyze(model)
    tracemalloc.start()
    try:
        scores = reconstruction_scores(model, analysis, feeds, refit=refit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    readers_f64 = 2 * SAMPLES * CHANNELS * SIDE * SIDE * 8  # the two readers' inputs as float64: 67 MB
    # float32 activations (half that), one tensor's per-sample parts while joined, the sampled
    # rows; a float64 copy of every activation (and its per-sample parts) is twice the bound.
    assert peak < readers_f64, f"peak {peak / 1e6:.1f} MB"
    session = reconstruction_error.session
    monkeypatch.setattr(reconstruction_error, "session", lambda *a, **k: _Float64Session(session(*a, **k)))
    wide = reconstruction_scores(model, analysis, feeds, refit=refit)
    assert sorted(scores) == sorted(wide) and len(scores) == 3
    for name in scores:
        np.testing.assert_array_equal(scores[name], wide[name])  # bit for bit (NaN: a layer kept whole)
    assert sum(np.isfinite(s).sum() for s in scores.values()) == 2 * CHANNELS
