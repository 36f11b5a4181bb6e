"""Nodes are matched by name between the graphsurgeon graph (analysis, rules, surgery) and the
ModelProto (MACs, budget, compensation, reconstruction, the masked reference): unnamed nodes
and repeated names are given unique names at load, and prune the same as a named model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import random_feeds, run

import onnxprune
from onnxprune.metrics import model_cost
from onnxprune.node_names import name_nodes, nodes_by_name, unique_node_names
from onnxprune.testing import GraphBuilder


def _model() -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-Relu, pool, Gemm: every layer kind the model-side steps read."""
    b = GraphBuilder(opset=17, seed=31)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op("Relu", b.bn(b.conv(x, 8)))
    y = b.op("Relu", b.conv(y, 8))
    b.output(b.gemm(b.op("Flatten", b.op("GlobalAveragePool", y), axis=1), 8, 4))
    return b.build()


def _unnamed(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for node in m.graph.node:
        node.name = ""
    return m


def _calib(tmp_path: Path) -> str:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    return str(path)


def test_unnamed_and_repeated_names_are_made_unique_at_load() -> None:
    model = _unnamed(_model())
    model.graph.node[1].name = model.graph.node[3].name = "same"
    before = model.SerializeToString()
    loaded = onnxprune.load(model)
    assert model.SerializeToString() == before  # the caller's model is not touched
    names = [n.name for n in loaded.graph.node]
    assert names[0] == "Conv#0" and names[1] == "same" and names[3] == "same#3" and names[2] == "Relu#2"
    assert len(set(names)) == len(names) and all(names)
    again = onnxprune.load(loaded)  # idempotent: a loaded model keeps its names
    assert [n.name for n in again.graph.node] == names
    assert list(nodes_by_name(model.graph.node)) == names  # unnamed protos are read with the same names


def test_generated_name_never_takes_an_existing_one() -> None:
    assert unique_node_names([("", "Conv"), ("Conv#0", "Relu"), ("Conv#0", "Add")]) == [
        "Conv#0_1",
        "Conv#0",
        "Conv#0#2",
    ]
    m = _unnamed(_model())
    name_nodes(m)
    assert [n.name for n in m.graph.node][:3] == ["Conv#0", "BatchNormalization#1", "Relu#2"]


@pytest.mark.parametrize(
    "options",
    [
        {"compensation": "none", "reconstruct": True},
        {"compensation": "data-free"},
        {"compensation": "calibration"},
        {"macs_target": 0.6, "compensation": "data-free"},
    ],
    ids=["reconstruction", "data-free", "calibration", "macs-target"],
)
def test_unnamed_nodes_prune_like_named_ones(tmp_path: Path, options: dict) -> None:
    named = _model()
    unnamed = _unnamed(named)
    kw = {"calibration": _calib(tmp_path), **({"ratio": 0.25} if "macs_target" not in options else {}), **options}
    a = onnxprune.prune(named, "l2", **kw)
    b = onnxprune.prune(unnamed, "l2", **kw)
    assert a.report.verification.passed and b.report.verification.passed
    assert a.plan.removed_groups == b.plan.removed_groups and a.report.channels_removed == b.report.channels_removed > 0
    assert (a.report.macs_before, a.report.macs_after) == (b.report.macs_before, b.report.macs_after)
    assert a.report.macs_before == model_cost(named, a.analysis.shapes).macs > 0
    feeds = random_feeds(named, 3)
    np.testing.assert_allclose(run(b.model, feeds)[0], run(a.model, feeds)[0], rtol=0, atol=1e-5)
    assert [n.name for n in b.model.graph.node if n.op_type == "Conv"] == ["Conv#0", "Conv#3"]
    if options.get("reconstruct"):
        rec_a, rec_b = a.report.to_dict()["reconstructed_layers"], b.report.to_dict()["reconstructed_layers"]
        assert len(rec_b) == len(rec_a) > 0  # unnamed readers were skipped silently before
        assert rec_b[0]["node"] == "Conv#3" and rec_b[0]["error_after"] == pytest.approx(
            rec_a[0]["error_after"], rel=1e-9
        )


def test_repeated_node_names_prune_as_distinct_layers() -> None:
    """Two Conv nodes with one name (onnxruntime refuses such a model): renamed at load, they are
    two layers, and the pruned model loads in onnxruntime (it verifies)."""
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [None, 3, 8, 8])
    y = b.op("Relu", b.conv(x, 6, zero=(1, 4)))
    b.output(b.conv(y, 5, zero=(2,)))
    model = b.build()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    convs[0].name = convs[1].name = "conv"
    r = onnxprune.prune(model, "zero")
    assert r.report.verification.passed
    assert [s.node for s in r.analysis.sources] == ["conv", "conv#2"]
    assert r.report.channels_removed == 2  # conv's 1 and 4; conv#2's channel 2 is a graph output
    lossy = onnxprune.prune(model, "l2", ratio=0.5)
    assert lossy.report.verification.passed and {layer.node for layer in lossy.report.layers} == {"conv"}


def test_an_analysis_of_another_model_is_refused() -> None:
    model = _model()
    analysis = onnxprune.analyze(model)
    other = GraphBuilder(opset=17)
    x = other.input("x", [None, 3, 8, 8])
    other.output(other.conv(x, 4))
    with pytest.raises(onnxprune.UsageError, match="another model"):
        onnxprune.apply(other.build(), analysis, onnxprune.PruningPlan("zero", ()))
