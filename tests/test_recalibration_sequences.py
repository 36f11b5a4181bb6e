"""Re-calibration's passes carry the tensors where the next pass starts (carry_forward); a
sequence among them (SequenceConstruct read again downstream of a corrected layer) is not a
tensor onnxruntime can be fed back as one: it is computed again, not carried."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

import onnxprune
from onnxprune.planning import PruningPlan
from onnxprune.recalibration import recalibrate
from onnxprune.surgery import apply_pruning
from onnxprune.testing import GraphBuilder


def _model() -> onnx.ModelProto:
    """conv1 (6) + conv_a(x through a sequence) -> conv2 (6) -> [x, conv2] as a sequence again
    -> concat -> conv3 (5) -> conv4 (4): the sequence built before conv2 is read after it."""
    b = GraphBuilder(opset=17, seed=42)
    x = b.input("x", [None, 3, 6, 6])
    h1 = b.op("Relu", b.conv(x, 6, k=3))
    seq = b.op("SequenceConstruct", x)
    side = b.conv(b.op("ConcatFromSequence", seq, axis=1, channels=3), 6, k=3)
    h2 = b.op("Relu", b.conv(b.op("Add", h1, side, channels=6), 6, k=1, pads=0))
    both = b.op("ConcatFromSequence", b.op("SequenceInsert", seq, h2), axis=1, channels=9)
    h3 = b.op("Relu", b.conv(both, 5, k=1, pads=0))
    b.output(b.conv(h3, 4, k=1, pads=0))
    return b.build()


def test_a_sequence_in_the_frontier_is_computed_again_not_carried() -> None:
    model = _model()
    analysis = onnxprune.analyze(model)
    plan = PruningPlan("trial", (1,))  # conv1's and conv_a's channel 1 (merged by the Add)
    pruned = apply_pruning(model, analysis, plan)
    x = np.random.default_rng(3).standard_normal((8, 1, 3, 6, 6)).astype(np.float32) + 0.5
    feeds = [{"x": v} for v in x]
    carried, layers = recalibrate(model, pruned, analysis, plan, feeds)
    plain, plain_layers = recalibrate(model, pruned, analysis, plan, feeds, carry_forward=False)
    assert len(layers) == 3 and [x.node for x in layers] == [x.node for x in plain_layers]
    want = {t.name: numpy_helper.to_array(t) for t in plain.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in carried.graph.initializer}
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert all(x.mean_shift_after < 0.1 * x.mean_shift_before for x in layers)  # corrected, not skipped


# -- --recalibrate ignored layers reading a changed tensor only inside an If/Loop subgraph -----


def _if_model(branches_read: bool = True):
    """x -> Conv a (8) -> Relu -> Conv b (8) -> Relu = t; If (constant true) whose branches read t
    from the outer graph (Identity / Neg) -> u; Conv c (6) reads u; Conv d (4) reads c's output.
    Removing channels of a drifts b directly, and c and d only through the If's subgraph."""
    import numpy as np
    from onnx import TensorProto, helper

    from onnxprune.testing import GraphBuilder

    b = GraphBuilder(opset=17, seed=3)
    x = b.input("input", (None, 3, 8, 8))
    b.channels[x] = 3
    t = b.op("Relu", b.conv(b.op("Relu", b.conv(x, 8)), 8))
    branches = {}
    for kind, op in (("then", "Identity"), ("else", "Neg")):
        out = helper.make_tensor_value_info(f"{kind}_out", TensorProto.FLOAT, None)
        branches[kind] = helper.make_graph([helper.make_node(op, [t], [f"{kind}_out"])], kind, [], [out])
    cond = b.const(np.array(True), "cond")  # in both: the same names for the same nodes
    if branches_read:
        b.nodes.append(
            helper.make_node("If", [cond], ["u"], then_branch=branches["then"], else_branch=branches["else"], name="if")
        )
    else:  # what the If computes, read as an input: the plain model's corrections are the reference
        b.nodes.append(helper.make_node("Identity", [t], ["u"], name="if"))
    b.channels["u"] = 8
    c = b.op("Relu", b.conv("u", 6))
    b.output(b.conv(c, 4))
    return b.build()


def test_recalibration_follows_tensors_read_inside_subgraphs() -> None:
    import numpy as np
    import onnx
    import onnx.numpy_helper

    from onnxprune.recalibration import recalibrate

    model = _if_model()
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    analysis = onnxprune.analyze(model)
    first = analysis.sources[0].node
    full = onnxprune.plan(analysis, "l2", model=model, ratio=0.5)
    ours = tuple(g for g in full.removed_groups if {n for n, _ in analysis.group(g).members} == {first})
    assert len(ours) == 4
    the_plan = PruningPlan("l2", ours)  # channels of a alone
    pruned = onnxprune.apply(model, analysis, the_plan)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    fixed, layers = recalibrate(model, pruned, analysis, the_plan, feeds, max_passes=32)
    # b reads a's output directly; c and d are downstream of the If, which reads b's output in
    # its branches only: before, neither was corrected (nor said so)
    assert [layer.node for layer in layers] == convs[1:]
    # ... and they are corrected as in the same model with the If's value read directly
    plain = _if_model(branches_read=False)
    plain_analysis = onnxprune.analyze(plain)
    plain_plan = PruningPlan("l2", ours)
    assert [g.members for g in plain_analysis.groups] == [g.members for g in analysis.groups]
    plain_fixed, plain_layers = recalibrate(
        plain, onnxprune.apply(plain, plain_analysis, plain_plan), plain_analysis, plain_plan, feeds, max_passes=32
    )
    assert layers == plain_layers
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in fixed.graph.initializer}
    for t in plain_fixed.graph.initializer:
        assert np.array_equal(weights[t.name], onnx.numpy_helper.to_array(t)), t.name
