from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from onnxprune.testing import GraphBuilder


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every CLI it starts) keeps its latency tables in a folder of its own: a table
    left in the user's ~/.cache/onnxprune by another version must not change a test's result, and
    the suite must not write there."""
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(tmp_path_factory.mktemp("onnxprune-cache")))


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def random_feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 123) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def assert_same_outputs(original: onnx.ModelProto, pruned: onnx.ModelProto, rel: float = 1e-5) -> None:
    """Independent of onnxprune's own verification: every output within rel x its scale."""
    for batch in (1, 3):
        feeds = random_feeds(original, batch)
        for a, b in zip(run(original, feeds), run(pruned, feeds)):
            assert a.shape == b.shape
            scale = max(float(np.abs(a).max()), 1.0)
            assert float(np.abs(a - b).max()) <= rel * scale


def prune_exact(model: onnx.ModelProto, **kw: object) -> onnxprune.PruneResult:
    """Prune with the zero criterion, check the model with full_check and the outputs independently."""
    result = onnxprune.prune(model, "zero", **kw)
    onnx.checker.check_model(result.model, full_check=True)
    assert_same_outputs(model, result.model)
    return result


def channels(result: onnxprune.PruneResult) -> dict[str, tuple[int, int]]:
    """Source layer -> (channels before, after), for every source layer."""
    removed = set(result.plan.removed_groups)
    out = {}
    for src in result.analysis.sources:
        gone = sum(1 for r in result.analysis.roots(src.ids) if int(r) in removed)
        out[src.node] = (len(src.ids), len(src.ids) - gone)
    return out


def kept_reasons(result: onnxprune.PruneResult) -> list[str]:
    return [r for g in result.report.kept_groups for r in g.reasons]


@pytest.fixture
def builder() -> GraphBuilder:
    return GraphBuilder(opset=17, seed=0)
