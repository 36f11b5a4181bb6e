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
