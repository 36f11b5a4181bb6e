"""Re-calibration's measurements made cheaper without changing them: each pass runs the model cut
to the tensors it measures (tensor_cones.cone_model), and statistics already measured on the
same samples are reused by the digest of what computes them (tensor_cones.cone_digests, the
search's trials). Every check compares against the full computation, bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxprune
from onnxprune import recalibration
from onnxprune.planning import PruningPlan
from onnxprune.recalibration import recalibrate
from onnxprune.runtime import session
from onnxprune.surgery import apply_pruning
from onnxprune.tensor_cones import cone_digests, cone_model
from onnxprune.testing import GraphBuilder


def _model() -> onnx.ModelProto:
    """x -> conv1 (6) -> Relu -> conv2 (6) -> Relu -> conv3 (5) -> Relu -> conv4 (4): groups 0-5
    are conv1's channels, 6-11 conv2's, 12-16 conv3's."""
    b = GraphBuilder(opset=17, seed=42)
    x = b.input("x", [None, 3, 6, 6])
    h = b.op("Relu", b.conv(x, 6, k=3))
    h = b.op("Relu", b.conv(h, 6, k=1, pads=0))
    h = b.op("Relu", b.conv(h, 5, k=1, pads=0))
    b.output(b.conv(h, 4, k=1, pads=0))
    return b.build()


def _feeds(n: int = 12) -> list[dict[str, np.ndarray]]:
    x = np.random.default_rng(3).standard_normal((n, 1, 3, 6, 6)).astype(np.float32) + 0.5
    return [{"x": v} for v in x]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _inner(model: onnx.ModelProto) -> list[str]:
    return [n.output[0] for n in model.graph.node if n.op_type == "Relu"]


def test_cut_model_computes_the_asked_tensors_exactly_and_nothing_after() -> None:
    model = _model()
    first, second, _ = _inner(model)
    cut = cone_model(model, [first, second])
    assert [n.op_type for n in cut.graph.node] == ["Conv", "Relu", "Conv", "Relu"]
    assert [o.name for o in cut.graph.output] == [first, second]
    full = onnx.ModelProto()
    full.CopyFrom(model)
    full.graph.output.extend([onnx.ValueInfoProto(name=n) for n in (first, second)])
    feed = _feeds(1)[0]
    want = session(full, optimize=True).run(feed, [first, second])
    got = session(cut, optimize=True).run(feed, [first, second])
    for w, g in zip(want, got):
        assert np.array_equal(w, g)
    assert len(model.graph.node) == 7  # the model given is not changed


def test_digest_changes_downstream_of_a_changed_weight_only() -> None:
    model = _model()
    before = cone_digests(model)
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    conv2 = changed.graph.node[2]
    w = next(t for t in changed.graph.initializer if t.name == conv2.input[1])
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.5), w.name))
    after = cone_digests(changed)
    first, second, third = _inner(model)
    assert after[first] == before[first]  # upstream of conv2
    assert after[second] != before[second] and after[third] != before[third]
    assert after["x"] == before["x"]
    assert cone_digests(model) == before  # a digest is a function of the model alone


def _pruned(model: onnx.ModelProto, groups: tuple[int, ...]) -> tuple[onnx.ModelProto, object, PruningPlan]:
    analysis = onnxprune.analyze(model)
    plan = PruningPlan("trial", groups)
    return apply_pruning(model, analysis, plan), analysis, plan


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the sessions re-calibration builds (one per pass that measures anything)."""
    calls = [0]
    real = recalibration.session

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(recalibration, "session", counted)
    return calls


def test_memo_across_trials_gives_the_same_weights_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials B (conv1 and conv3 lose a channel), C (conv1's same channel, another of conv3's),
    B again, judged with one memo and reference cache (as the search's folds hold them) and each
    from scratch: the same weights to the bit; C's conv2 statistics come from B's (its cone,
    pruned conv1 -> conv2, is the same), B again measures nothing."""
    model, feeds = _model(), _feeds()
    calls = _counting(monkeypatch)
    memo: dict = {}
    cache: dict = {}
    counts = []
    for groups in [(1, 13), (1, 14), (1, 13)]:
        pruned, analysis, plan = _pruned(model, groups)
        fresh, layers = recalibrate(model, pruned, analysis, plan, feeds, measure=False)
        assert len(layers) == 3  # conv2, conv3 and conv4 corrected
        start = calls[0]
        cached, _ = recalibrate(model, pruned, analysis, plan, feeds, measure=False, cache=cache, memo=memo)
        counts.append(calls[0] - start)
        want, got = _weights(fresh), _weights(cached)
        assert want.keys() == got.keys()
        for name in want:
            assert np.array_equal(want[name], got[name]), name
    # B: the original's statistics, then 3 passes; C: its conv2 pass answered by the memo; B again: nothing.
    assert counts == [4, 2, 0]


def test_measure_false_corrects_the_same_and_leaves_the_drift_unmeasured() -> None:
    model, feeds = _model(), _feeds()
    pruned, analysis, plan = _pruned(model, (1, 13))
    measured, layers = recalibrate(model, pruned, analysis, plan, feeds)
    quick, quick_layers = recalibrate(model, pruned, analysis, plan, feeds, measure=False)
    want, got = _weights(measured), _weights(quick)
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
    assert [x.node for x in layers] == [x.node for x in quick_layers]
    assert all(np.isnan(x.mean_shift_before) and np.isnan(x.mean_shift_after) for x in quick_layers)
    assert all(x.mean_shift_before > 0.2 and x.mean_shift_after < 0.01 * x.mean_shift_before for x in layers)


def test_statistics_of_the_cut_model_equal_the_full_models() -> None:
    """The sums a pass measures on the cut model equal those from the whole model with the
    tensors added as outputs (the measurement before the cut), exactly."""
    model, feeds = _model(), _feeds()
    names = {n: 1 for n in _inner(model)[:2]}
    got = recalibration._moments(model, names, feeds, "<test>")
    full = onnx.ModelProto()
    full.CopyFrom(model)
    full.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    run = session(full, optimize=True)
    for n in names:
        halves = [recalibration._Moments(), recalibration._Moments()]
        for i, feed in enumerate(feeds):
            halves[int(i >= len(feeds) // 2)].add(run.run(feed, [n])[0], 1)
        for want, have in zip(halves, got[n]):
            assert want.n == have.n
            assert np.array_equal(want.s, have.s) and np.array_equal(want.s2, have.s2)


def test_cut_model_fed_a_tensor_computed_before_gives_the_same_values() -> None:
    """Given conv1's Relu output (as computed by the model), the cut model to conv3's Relu
    starts from it: conv1 is not in it, the input is, and the values are the full model's."""
    model = _model()
    first, _, third = _inner(model)
    full = onnx.ModelProto()
    full.CopyFrom(model)
    full.graph.output.extend([onnx.ValueInfoProto(name=n) for n in (first, third)])
    feed = _feeds(1)[0]
    h, want = session(full, optimize=True).run(feed, [first, third])
    cut = cone_model(model, [third], {first: onnx.TensorProto.FLOAT})
    assert [n.op_type for n in cut.graph.node] == ["Conv", "Relu", "Conv", "Relu"]
    assert [v.name for v in cut.graph.input] == ["x", first]
    (got,) = session(cut, optimize=True).run({**feed, first: h}, [third])
    assert np.array_equal(want, got)


def test_passes_started_from_the_previous_ones_tensors_give_the_same_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pass of a full re-calibration (and its drift measurements) fed the tensors where the
    previous pass's corrections begin, against every pass run from the model's input: the same
    weights and drift figures, bit for bit; and the passes after the first do start from them."""
    model, feeds = _model(), _feeds()
    pruned, analysis, plan = _pruned(model, (1,))  # conv1 loses a channel: conv2, conv3, conv4 in 3 passes
    inputs: list[list[str]] = []
    real = recalibration.session

    def recorded(m: onnx.ModelProto, **kwargs: object) -> object:
        inputs.append([v.name for v in m.graph.input])
        return real(m, **kwargs)

    monkeypatch.setattr(recalibration, "session", recorded)
    carried, layers = recalibrate(model, pruned, analysis, plan, feeds)
    assert sum(len(i) > 1 for i in inputs) >= 2  # passes 2 and 3 fed a tensor of the pass before
    frontier = recalibration._frontier
    monkeypatch.setattr(recalibration, "_frontier", lambda *args: [])
    inputs.clear()
    plain, plain_layers = recalibrate(model, pruned, analysis, plan, feeds)
    assert all(i == ["x"] for i in inputs)
    want, got = _weights(plain), _weights(carried)
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
    assert layers == plain_layers and len(layers) == 3
    inputs.clear()
    monkeypatch.setattr(recalibration, "_frontier", frontier)
    recalibrate(model, pruned, analysis, plan, feeds, carry_forward=False)  # the search's trials
    assert all(i == ["x"] for i in inputs)
