"""Reconstruction's cost without a change in what it computes: the readers' activations kept
as the model computed them (float32; the sampled rows converted to float64, exactly), and its
least squares on one BLAS thread (the same solutions up to float rounding)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from threadpoolctl import threadpool_info, threadpool_limits

from onnxprune import least_squares
from onnxprune.least_squares import Problem, factor, fit
from onnxprune.rules import default_registry


def _layer(op: str, **attrs: object):  # type: ignore[no-untyped-def]
    node = helper.make_node(op, ["x", "w", "b"], ["y"], name=op.lower(), **attrs)
    layer = default_registry().layer(node, 17)
    assert layer is not None
    return layer


CASES = [
    ("Conv", {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]}, (3, 4, 9, 11), (6, 4, 3, 2)),
    ("Conv", {"group": 2, "auto_pad": "SAME_UPPER"}, (2, 4, 7, 7), (6, 2, 3, 3)),
    ("Gemm", {"alpha": 0.37, "transB": 1}, (50, 5), (3, 5)),
    ("MatMul", {}, (2, 30, 5), (5, 3)),
]


@pytest.mark.parametrize(("op", "attrs", "x_shape", "w_shape"), CASES)
def test_rows_of_float32_activations_are_the_float64_rows(op, attrs, x_shape, w_shape) -> None:  # type: ignore[no-untyped-def]
    """Every value of a float32 activation is exactly a float64: sampling the float32 one and
    converting the rows gives bit for bit the rows of its float64 copy (Gemm's alpha included:
    it scales the float64 rows)."""
    layer = _layer(op, **attrs)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    picks = 40
    got = layer.input_rows(x, w_shape, picks, np.random.default_rng(7))
    want = layer.input_rows(x.astype(np.float64), w_shape, picks, np.random.default_rng(7))
    assert got is not None and want is not None
    assert got.dtype == np.float64 and got.shape == want.shape
    assert np.array_equal(got, want)


def _blas_threads() -> set[int]:
    return {int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"}


def test_least_squares_run_on_one_blas_thread_with_the_same_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    """reconstruct's solves run with BLAS on one thread (recorded inside ``fit``) and the
    process's setting is back afterwards; the refit is the multi-threaded one up to rounding."""
    import onnxprune
    from onnxprune.planning import PruningPlan
    from onnxprune.reconstruction import reconstruct
    from onnxprune.surgery import apply_pruning
    from onnxprune.testing import GraphBuilder

    rng = np.random.default_rng(3)
    cols = 300
    factors = [factor(rng.standard_normal((900, cols)) * rng.random(cols)) for _ in range(2)]
    select = np.flatnonzero(np.append(rng.random(cols) > 0.3, True))
    w_aug = rng.standard_normal((40, cols + 1))
    theta0 = rng.standard_normal((len(select), 40))
    problems = [Problem(f, select, w_aug) for f in factors]
    with threadpool_limits(limits=2, user_api="blas"):
        threaded = fit(problems, theta0, 1e-5)
        with least_squares.one_blas_thread():
            single = fit(problems, theta0, 1e-5)
        assert threaded is not None and single is not None
        assert np.abs(single - threaded).max() <= 1e-12 * np.abs(threaded).max()

        seen: list[set[int]] = []
        real_fit = least_squares.fit

        def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(_blas_threads())
            return real_fit(*args, **kwargs)

        monkeypatch.setattr(least_squares, "fit", spy)
        b = GraphBuilder(opset=17, seed=5)
        x = b.input("x", [None, 3, 6, 6])
        h = b.op("Relu", b.conv(x, 6))
        b.output(b.conv(h, 4))
        model = b.build()
        analysis = onnxprune.analyze(model)
        plan = PruningPlan("p", (0,))
        feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 6, 6)).astype(np.float32)} for i in range(6)]
        before = _blas_threads()
        _, layers = reconstruct(model, apply_pruning(model, analysis, plan), analysis, plan, feeds)
        assert layers and seen and all(s == {1} for s in seen)
        assert _blas_threads() == before
