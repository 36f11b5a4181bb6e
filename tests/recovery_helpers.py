"""Helpers of the recovery tests (reconstruction, re-calibration): calibration files, a layer's
weight read through the nodes that compute it, nodes nothing reads, the output error on other
inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import run


def calib(tmp_path: Path, shape: tuple[int, ...], n: int = 32, name: str = "x", seed: int = 0) -> str:
    path = tmp_path / f"calib_{seed}.npz"
    np.savez(path, **{name: np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)})
    return str(path)


def weight(model: onnx.ModelProto, node_name: str, index: int = 1) -> np.ndarray:
    """A node's weight in a (pruned) model, read through Constant nodes, Cast and Mul."""
    from onnxprune.analysis import import_graph
    from onnxprune.params import ParamResolver

    graph = import_graph(model)
    node = next(n for n in graph.nodes if n.name == node_name)
    return np.asarray(ParamResolver()(node.inputs[index]).values, dtype=np.float64)


def unread_nodes(model: onnx.ModelProto) -> list[str]:
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if not any(o in read for o in n.output)]


def held_out_error(model: onnx.ModelProto, pruned: onnx.ModelProto, shape: tuple[int, ...]) -> float:
    feeds = {"x": np.random.default_rng(99).standard_normal((8, *shape)).astype(np.float32)}
    ref, got = run(model, feeds)[0], run(pruned, feeds)[0]
    return float(np.abs(got - ref).max() / np.abs(ref).max())
