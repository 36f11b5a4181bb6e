"""The sequential refit's level runs feed the values earlier levels computed (by the digest of
what computes them) instead of running the pruned model from its inputs at every level
(reconstruction_sequential.Carry): on a graph of four depth levels with a side branch, each
deeper level's run is cut to the nodes between the values carried and its readers' inputs, and
the refit is the one without carrying, bit for bit. The original's runs (the readers'
targets) are cut alike."""

from __future__ import annotations

import numpy as np
import onnx

import onnxprune
import onnxprune.reconstruction_sequential as sequential
from onnxprune.planning import PruningPlan
from onnxprune.reconstruction import reconstruct
from onnxprune.surgery import apply_pruning
from onnxprune.testing import GraphBuilder


def _branched() -> tuple[onnx.ModelProto, dict[str, str]]:
    """x(4) -> conv0 -> Relu = h0; h0 -> convA -> Relu = h1 -> convB -> Relu = h2; h0 -> convS = s;
    h3 = h2 + s -> convC -> Relu = h4 -> convD (3) = y. Every conv 1x1."""
    b = GraphBuilder(opset=17, seed=11)
    rng = np.random.default_rng(3)
    names: dict[str, str] = {}

    def conv(t: str, out: int, key: str) -> str:
        bias = rng.standard_normal(out).astype(np.float32) * 0.1
        return b.conv(t, out, k=1, pads=0, weight=b.const(b.weights([out, 4, 1, 1]), f"W{key}"), bias=bias)

    x = b.input("x", [None, 4, 5, 5])
    names["h0"] = h0 = b.op("Relu", conv(x, 4, "0"))
    names["h1"] = h1 = b.op("Relu", conv(h0, 4, "A"))
    h2 = b.op("Relu", conv(h1, 4, "B"))
    s = conv(h0, 4, "S")
    names["h3"] = h3 = b.op("Add", h2, s)
    h4 = b.op("Relu", conv(h3, 4, "C"))
    b.output(conv(h4, 3, "D"))
    return b.build(), names


def _setup() -> tuple:
    model, names = _branched()
    analysis = onnxprune.analyze(model)
    order = [n.name for n in model.graph.node if n.op_type == "Conv"]  # as built
    c = dict(zip(("0", "A", "B", "S", "C", "D"), order))
    wanted = [{(c["0"], 1)}, {(c["A"], 2)}, {(c["B"], 0), (c["S"], 0)}, {(c["C"], 3)}]
    groups = tuple(g.id for g in analysis.groups if set(g.members) in wanted)
    assert len(groups) == 4
    feeds = [{"x": np.random.default_rng(60 + i).standard_normal((1, 4, 5, 5)).astype(np.float32)} for i in range(12)]
    return model, analysis, PruningPlan("p", groups), feeds, names, c


def _refit(model, analysis, plan, feeds, carry: bool, monkeypatch, cuts: list | None = None, optimize: bool = True):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sequential, "CARRY", carry)
    if not optimize:  # onnxruntime's fusions round differently with other graph outputs: off, bit for bit
        real_session = sequential.session
        monkeypatch.setattr(sequential, "session", lambda m, **kw: real_session(m, **{**kw, "optimize": False}))
    if cuts is not None:
        real = sequential.cone_model

        def spy(m, names, given=None):  # type: ignore[no-untyped-def]
            cut = real(m, names, given)
            cuts.append(m is model)  # the original's (targets) or the pruned model's run
            cuts.append(({v.name for v in cut.graph.input}, {n.op_type for n in cut.graph.node}, len(cut.graph.node)))
            return cut

        monkeypatch.setattr(sequential, "cone_model", spy)
    pruned = apply_pruning(model, analysis, plan)
    out, done = reconstruct(model, pruned, analysis, plan, feeds, inputs="pruned")
    monkeypatch.undo()
    return out, done


def _weight(model: onnx.ModelProto, conv: str) -> np.ndarray:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return inits[next(n.input[1] for n in model.graph.node if n.name == conv)]


def test_levels_are_those_the_graph_says() -> None:
    model, analysis, plan, _, _, c = _setup()
    from onnxprune.compensation import removed_id_mask
    from onnxprune.reconstruction_readers import find_readers
    from onnxprune.rules import default_registry

    removed = removed_id_mask(analysis, plan)
    readers = find_readers(model, analysis, removed, default_registry(), 17)
    got = [
        sorted(n.name for r in level for n in r.nodes) for level in sequential.levels(model, analysis, removed, readers)
    ]
    assert got == [sorted([c["A"], c["S"]]), [c["B"]], [c["C"]], [c["D"]]]


def test_carried_level_runs_give_the_very_refit_of_full_runs(monkeypatch) -> None:
    """Unoptimised sessions (the same float operations either way): bit for bit."""
    model, analysis, plan, feeds, names, c = _setup()
    cuts: list = []
    with_carry, done_c = _refit(model, analysis, plan, feeds, True, monkeypatch, cuts, optimize=False)
    full_cuts: list = []
    without, done_f = _refit(model, analysis, plan, feeds, False, monkeypatch, full_cuts, optimize=False)
    assert [d.node for d in done_c] == [d.node for d in done_f] == [c["A"], c["S"], c["B"], c["C"], c["D"]]
    for a, b in zip(with_carry.graph.initializer, without.graph.initializer, strict=True):
        assert a.name == b.name
        assert np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b)), a.name
    # the refits are not trivial: convB..convD moved off the pruned weights
    pruned = apply_pruning(model, analysis, plan)
    for name in (c["B"], c["C"], c["D"]):
        assert np.abs(_weight(with_carry, name) - _weight(pruned, name)).max() > 1e-3
    # The pruned model's level runs (levels 1-3; level 0 reads the original's cached rows).
    # Without carrying each starts at x; with it level 2 starts at h1 (computing s from x),
    # level 3 at h3 and is convC and its Relu alone.
    # The original's runs (the targets of the level's readers) are cut alike.
    runs = {False: [], True: []}
    full_runs = {False: [], True: []}
    for log, into in ((cuts, runs), (full_cuts, full_runs)):
        for is_original, cut in zip(log[::2], log[1::2]):
            into[is_original].append(cut)
    for is_original in (False, True):
        assert [inputs for inputs, _, _ in full_runs[is_original]] == [{"x"}, {"x"}, {"x"}]
        assert [inputs for inputs, _, _ in runs[is_original]] == [{"x"}, {"x", names["h1"]}, {"x", names["h3"]}]
        assert runs[is_original][2][1:] == ({"Conv", "Relu"}, 2) and full_runs[is_original][2][2] == 10


def test_with_onnxruntimes_fusions_the_refits_agree_to_float32_rounding(monkeypatch) -> None:
    """As run (optimised sessions): onnxruntime may fuse the Add into convS's Conv in a run from
    x and not in one from h1, which rounds differently (measured: 1 ulp in one bias), so the
    refits agree to float32 rounding, not bit for bit."""
    model, analysis, plan, feeds, _, _ = _setup()
    a, _ = _refit(model, analysis, plan, feeds, True, monkeypatch)
    b, _ = _refit(model, analysis, plan, feeds, False, monkeypatch)
    for ta, tb in zip(a.graph.initializer, b.graph.initializer, strict=True):
        va, vb = onnx.numpy_helper.to_array(ta), onnx.numpy_helper.to_array(tb)
        assert np.abs(va - vb).max() <= 1e-6 * max(np.abs(vb).max(), 1.0), ta.name
