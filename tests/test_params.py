"""Constants read through the InitializerCache, told apart from the surgery's new ones by
identity (not by graphsurgeon's private lazy holder), and the graphsurgeon API we rely on."""

from __future__ import annotations

import inspect

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.analysis import import_graph
from onnxprune.params import InitializerCache, ParamResolver
from onnxprune.testing import GraphBuilder


def _model():
    b = GraphBuilder(opset=17, seed=4)
    x = b.input("x", [None, 3, 8, 8])
    b.output(b.conv(b.op("Relu", b.conv(x, 6)), 2))
    return b.build()


def test_initializers_are_read_through_the_cache_and_new_constants_are_not_mistaken() -> None:
    model = _model()
    cache = InitializerCache(model)
    graph = import_graph(model)
    params = ParamResolver(cache, graph)
    conv = next(n for n in graph.nodes if n.op == "Conv")
    weight = conv.inputs[1]
    stored = next(t for t in model.graph.initializer if t.name == weight.name)
    assert params.initializer(weight) is stored
    assert params(weight).values is cache.array(stored)  # one array, shared with the cache
    # A Constant the surgery makes under the same name is not the initializer.
    replacement = gs.Constant(weight.name, np.zeros((6, 3, 3, 3), np.float32))
    assert params.initializer(replacement) is None
    assert np.array_equal(params(replacement).values, np.zeros((6, 3, 3, 3)))
    # Forgetting drops the cache's array: the next read is a new (equal) array.
    before = cache.array(stored)
    params.forget(weight)
    after = params(weight).values
    assert after is not before and np.array_equal(after, before)
    # Without the graph at construction, nothing is taken for an initializer.
    assert ParamResolver(cache).initializer(weight) is None


def test_the_graphsurgeon_api_onnxprune_uses_is_there() -> None:
    """Public graphsurgeon API only (no _values/LazyValues); if an installed version lacks one
    of these, this says which."""
    needs = {
        "gs.import_onnx": hasattr(gs, "import_onnx"),
        "gs.export_onnx(do_type_check=)": "do_type_check" in inspect.signature(gs.export_onnx).parameters,
        "gs.Graph.cleanup(remove_unused_graph_inputs=)": "remove_unused_graph_inputs"
        in inspect.signature(gs.Graph.cleanup).parameters,
        "gs.Graph.toposort": hasattr(gs.Graph, "toposort"),
        "gs.Graph.tensors": hasattr(gs.Graph, "tensors"),
        "gs.Variable.empty": hasattr(gs.Variable, "empty"),
        "gs.Constant.values / .shape": isinstance(getattr(gs.Constant, "values", None), property)
        and isinstance(getattr(gs.Constant, "shape", None), property),
    }
    missing = [k for k, ok in needs.items() if not ok]
    assert not missing, f"onnx-graphsurgeon {getattr(gs, '__version__', '?')} lacks {missing}"
