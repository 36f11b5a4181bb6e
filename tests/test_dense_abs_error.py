"""The dense metric reads the caller's abs(reference - candidate) (fidelity_from_outputs has just
computed it for its own max / mean error) instead of computing it again: the same figures bit
for bit, and the array it is handed must be that difference. Synthetic maps, exact checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from onnxprune import fidelity_metrics as metrics_module
from onnxprune.errors import UsageError
from onnxprune.fidelity import fidelity_from_outputs, prepare_reference
from onnxprune.fidelity_metrics import MetricResult, apply_metric, dense


def _maps(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A probability map and a candidate that differs from it by both signs (float32, as models give)."""
    rng = np.random.default_rng(seed)
    ref = 1 / (1 + np.exp(-3 * rng.standard_normal(shape)))
    got = np.clip(ref + 0.2 * rng.standard_normal(shape), 0, 1)
    return ref.astype(np.float32), got.astype(np.float32)


def test_dense_given_the_abs_error_scores_exactly_as_without_it_and_reads_it() -> None:
    ref, got = _maps(3, (6, 1, 9, 7))
    r, g = ref.astype(np.float64), got.astype(np.float64)
    plain = dense(r, g)
    assert dense(r, g, abs_error=np.abs(r - g)) == plain  # value and every detail, bit for bit
    assert plain.details["mean_error_of_range"] > 0.01  # the maps differ: the errors are not trivial
    # It is read, not recomputed: the signed difference gives another mean error (same IoU).
    signed = dense(r, g, abs_error=r - g)
    assert signed.value == plain.value
    assert signed.details["mean_error_of_range"] != plain.details["mean_error_of_range"]
    with pytest.raises(ValueError, match=r"abs_error has shape \[6, 63\], the maps \[6, 1, 9, 7\]"):
        dense(r, g, abs_error=np.abs(r - g).reshape(6, -1))
    # apply_metric hands it to dense only; top1 ignores it (and would refuse an unknown keyword).
    assert apply_metric("dense", {}, r, g, abs_error=np.abs(r - g)) == plain
    scores = r.reshape(6, -1)
    assert apply_metric("top1", {}, scores, g.reshape(6, -1), abs_error=np.zeros(1)) == apply_metric(
        "top1", {}, scores, g.reshape(6, -1)
    )
    with pytest.raises(UsageError, match="abs_error has shape"):
        apply_metric("dense", {}, r, g, abs_error=np.zeros(3))


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((1, 1, 12, 10), {}), ((12, 1, 10), {"map": 1})],  # samples first; samples on axis 1 (moved first)
)
def test_fidelity_from_outputs_hands_dense_its_own_abs_difference(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], axes: dict[str, int]
) -> None:
    """Every dense call inside fidelity_from_outputs gets abs(r - g) of the very arrays it scores,
    and the output's figures are those dense gives without it (prepared reference or not)."""
    feeds = [_maps(seed, shape) for seed in (5, 6, 7)]
    refs, gots = [[f[0] for f in feeds]], [[f[1] for f in feeds]]
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def spy(r: np.ndarray, g: np.ndarray, **kw: Any) -> MetricResult:
        seen.append((r, g, kw.get("abs_error")))
        return dense(r, g, **kw)

    monkeypatch.setitem(metrics_module._FUNCTIONS, "dense", spy)
    for given in (refs, prepare_reference(["map"], refs, batch_axes=axes)):
        seen.clear()
        (fid,) = fidelity_from_outputs(["map"], given, gots, batch_axes=axes)
        assert fid.metric == "dense" and len(seen) == 1
        r, g, err = seen[0]
        assert err is not None and err.shape == r.shape and np.array_equal(err, np.abs(r - g))
        assert r.shape[0] == 3 * (shape[0] if not axes else shape[1])  # the samples of the 3 feeds
        alone = dense(r, g)  # the metric computing its own difference
        assert fid.score == alone.value and fid.details == alone.details
        assert fid.max_abs_error == float(err.max()) and fid.mean_abs_error == float(err.mean())
