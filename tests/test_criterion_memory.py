"""The ``reconstruction`` / ``contribution`` criteria keep the readers' input activations as
the model computed them (float32) and convert only the sampled rows: the same scores as from a
float64 copy of every activation, bit for bit, at half its memory (a 640x640 detector's 32
pages held 11-13 GB as float64). Tiny graph, exact checks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
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


def _branches():
    """x -> two 3x3 Conv+Relu (6 and 4 channels) -> Concat -> a 3x3 Conv (5) and a 1x1 Conv (3):
    two readers of the same ten channels, each reading two sources."""
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [1, 3, 12, 12])
    left, right = b.op("Relu", b.conv(x, 6)), b.op("Relu", b.conv(x, 4))
    joined = b.op("Concat", left, right, axis=1, channels=10)
    b.output(b.op("Add", b.conv(joined, 5, 3), b.conv(b.op("Relu", b.conv(joined, 3, 1)), 5, 1)))
    return b.build()


@pytest.mark.parametrize("refit", [True, False])
def test_a_reader_of_several_sources_is_prepared_once_with_the_same_scores(
    monkeypatch: pytest.MonkeyPatch, refit: bool
) -> None:
    """A Concat's reader feeds the greedy of every source in it: its start (covariance, inverse)
    is made once and copied, and each source's scores are the unshared ones bit for bit. The
    progress counts the samples run, then the sources scored."""
    model = _branches()
    analysis = onnxprune.analyze(model)
    rng = np.random.default_rng(4)
    feeds = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(6)]
    made = []
    block = reconstruction_error._block
    monkeypatch.setattr(reconstruction_error, "_block", lambda *a, **k: made.append(1) or block(*a, **k))
    heard: list[tuple[int, int]] = []
    shared = reconstruction_scores(model, analysis, feeds, refit=refit, progress=lambda d, t: heard.append((d, t)))
    calls = len(made)
    monkeypatch.setattr(reconstruction_error, "SHARE", False)
    alone = reconstruction_scores(model, analysis, feeds, refit=refit)
    assert calls == 3 and len(made) - calls == 5  # two readers read both sources: 2 of 5 starts shared
    assert sorted(shared) == sorted(alone)
    for name in shared:
        np.testing.assert_array_equal(shared[name], alone[name])
    assert sum(np.isfinite(s).sum() for s in shared.values()) >= 10
    total = len(feeds) + len(analysis.sources)
    assert heard == [(i, total) for i in range(total + 1)]


def _dense_greedy(blocks, candidates):  # type: ignore[no-untyped-def]
    """The greedy as it was before its blocks were cut to the candidates' columns: every
    downdate over all the columns, in place."""
    blocks = [reconstruction_error._Block(b.p.copy(), b.q.copy(), b.energy, b.columns, b.alone) for b in blocks]
    left, total, order = list(candidates), 0.0, {}
    while left:
        costs = np.zeros(len(left))
        for blk in blocks:
            present = [(i, blk.columns[r]) for i, r in enumerate(left) if r in blk.columns]
            if not present:
                continue
            if len({len(j) for _, j in present}) == 1:
                idx = np.asarray([i for i, _ in present])
                j = np.stack([j for _, j in present])
                pj, qj = blk.p[j[:, :, None], j[:, None, :]], blk.q[j]
                costs[idx] += np.sum(np.linalg.solve(pj, qj) * qj, axis=(1, 2)) / max(blk.energy, 1e-30)
                continue
            for i, j in present:
                pj, qj = blk.p[np.ix_(j, j)], blk.q[j]
                costs[i] += float(np.sum(np.linalg.solve(pj, qj) * qj)) / max(blk.energy, 1e-30)
        best = int(np.argmin(costs))
        root = left.pop(best)
        total += max(float(costs[best]), 0.0)
        order[root] = total
        for blk in blocks:
            j = blk.columns.get(root)
            if j is None:
                continue
            s = np.linalg.inv(blk.p[np.ix_(j, j)])
            pcol = blk.p[:, j]
            blk.q -= pcol @ (s @ blk.q[j])
            blk.p -= pcol @ s @ blk.p[j]
    return order


def test_the_greedy_on_its_candidates_columns_equals_the_dense_downdate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The greedy downdates only its candidates' columns (the only entries it reads again): the
    same removal order as the downdate of every column, and the same errors but for rounding
    (its products run over fewer rows), on readers of 3x3 and 1x1 kernels whose inputs hold
    another source's channels (a Concat)."""
    model = _branches()
    analysis = onnxprune.analyze(model)
    rng = np.random.default_rng(6)
    feeds = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(6)]
    orders: list[tuple[dict, dict]] = []
    greedy = reconstruction_error._greedy

    def both(blocks, candidates):  # type: ignore[no-untyped-def]
        orders.append((_dense_greedy(blocks, candidates), greedy(blocks, candidates)))
        return orders[-1][1]

    monkeypatch.setattr(reconstruction_error, "_greedy", both)
    reconstruction_scores(model, analysis, feeds)
    assert len(orders) == 3 and sum(len(a) for a, _ in orders) == 13
    for dense, cut in orders:
        assert list(dense) == list(cut)  # the same roots in the same order
        assert list(cut.values()) == pytest.approx(list(dense.values()), rel=1e-12, abs=1e-15)
        assert len(set(dense.values())) == len(dense)


def test_later_samples_written_into_the_joined_activations_equal_the_joined_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """onnxruntime writes the later samples' activations into the joined arrays (io binding):
    the same arrays as each sample's run joined, bit for bit; feeds of other shapes are joined."""
    model = _branches()
    analysis = onnxprune.analyze(model)
    names = sorted({s.tensor for s in analysis.sinks})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    run = reconstruction_error.session(probe, optimize=True)
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(5)]
    steps: list[int] = []
    runs = []
    each = run.run
    run.run = lambda *a: runs.append(1) or each(*a)  # type: ignore[method-assign]
    bound = reconstruction_error._joined_outputs(run, names, feeds, steps.append)
    assert steps == [1, 2, 3, 4, 5] and len(runs) == 1  # the others written by io binding
    run.run = each  # type: ignore[method-assign]
    for name in names:
        joined = np.concatenate([run.run(f, [name])[0] for f in feeds])
        assert bound[name].shape == joined.shape and bound[name].tobytes() == joined.tobytes()
    monkeypatch.setattr(reconstruction_error, "BIND", False)
    plain = reconstruction_error._joined_outputs(run, names, feeds, lambda d: None)
    assert all(plain[n].tobytes() == bound[n].tobytes() for n in names)
    monkeypatch.setattr(reconstruction_error, "BIND", True)
    assert reconstruction_scores(model, analysis, feeds).keys() == set(a.node for a in analysis.sources)
    scores = reconstruction_scores(model, analysis, feeds)
    monkeypatch.setattr(reconstruction_error, "BIND", False)
    unbound = reconstruction_scores(model, analysis, feeds)
    for name in scores:
        np.testing.assert_array_equal(scores[name], unbound[name])


def _padded_patches(x, attrs, kernel, picks, rng):  # type: ignore[no-untyped-def]
    """The sampled im2col rows from an explicitly zero-padded copy of the input (as before)."""
    pads, strides, dil = attrs["pads"], attrs["strides"], attrs["dilations"]
    kh, kw = kernel
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h = (xp.shape[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    out_w = (xp.shape[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    n = x.shape[0] * out_h * out_w
    flat = rng.choice(n, size=min(picks, n), replace=False)
    b, rem = np.divmod(flat, out_h * out_w)
    i, j = np.divmod(rem, out_w)
    rows = np.empty((len(flat), x.shape[1], kh, kw), dtype=np.float64)
    for a in range(kh):
        for c in range(kw):
            rows[:, :, a, c] = xp[b, :, i * strides[0] + a * dil[0], j * strides[1] + c * dil[1]]
    return rows.reshape(len(flat), -1)


@pytest.mark.parametrize(
    ("pads", "strides", "dilations", "kernel"),
    [
        ([1, 1, 1, 1], [1, 1], [1, 1], (3, 3)),
        ([2, 0, 1, 3], [2, 1], [1, 2], (3, 2)),
        ([0, 0, 0, 0], [2, 2], [1, 1], (1, 1)),
    ],
)
def test_conv_rows_read_zeros_outside_the_input_as_the_padded_copy_does(pads, strides, dilations, kernel) -> None:  # type: ignore[no-untyped-def]
    """The criterion's and the refit's sampled Conv rows read 0 where a tap falls in the padding,
    without making a padded copy of the input: the rows of the padded copy, bit for bit (a -0.0
    in the input stays -0.0, the padding is +0.0), on most positions of a small input."""
    from onnxprune.rules.conv import _conv_patches

    x = np.random.default_rng(1).standard_normal((3, 4, 7, 6)).astype(np.float32)
    x[0, 0, 0, 0] = -0.0
    attrs = {"pads": pads, "strides": strides, "dilations": dilations}
    got = _conv_patches(x, attrs, kernel, 100, np.random.default_rng(5))
    want = _padded_patches(x, attrs, kernel, 100, np.random.default_rng(5))
    assert got.shape == want.shape and got.tobytes() == want.tobytes()
    assert (got == 0).any() if any(pads) else True
