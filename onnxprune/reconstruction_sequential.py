"""Sequential reconstruction (``reconstruct(..., inputs="pruned")``, ``--reconstruct-from
pruned``): each reader of removed channels is refitted on the inputs the *pruned* model gives
it, with the readers upstream of it already refitted, against the *original* layer's outputs
(He et al. 2017, sec. 3.3: "we use the feature maps from the pruned model as input"; the
layer-by-layer order of GPTQ / OBC-style calibration). A reader then also absorbs what the
layers before it lost, instead of being fitted on inputs it never sees once they are pruned.

Readers are taken in depth levels: a reader's level is the number of changed layers (every
reader of removed channels, refitted or not) on the longest path from the model's inputs to
it. Level 0 reads exactly what the original computed (its kept channels): those are fitted on
the cached factors of the original's rows, as the independent refit fits them. Each deeper
level is fitted on one run of the model cut to its readers' inputs (tensor_cones.cone_model),
the levels before it written into the model, and starting from the values earlier levels' runs
computed that no refit still to come changes (``Carry``, by the digest of what computes them):
a level runs the nodes between those and its readers' inputs, not the whole model before them
again (the original's runs for the targets likewise); its readers' input rows are sampled at the same
positions as the original's (the sampling depends on the seed, the reader and the input's
shape without its channels), and the targets are the original layer's outputs there
(computed once per reader and sample set, kept in the ReconstructionCache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .analysis import ChannelAnalysis
from .least_squares import Problem
from .node_names import unique_node_names
from .runtime import session
from .tensor_cones import cone_digests, cone_model, node_reads

if TYPE_CHECKING:
    from .reconstruction import ReconstructionCache, _Settings
    from .reconstruction_readers import Reader, RefitStart

__all__ = ["Carry", "SampledRows", "frontier", "levels", "sampled_rows"]


def levels(
    original: onnx.ModelProto, analysis: ChannelAnalysis, removed_ids: np.ndarray, readers: Sequence[Reader]
) -> list[list[Reader]]:
    """``readers`` by depth level (see module doc), shallowest first, empty levels left out;
    readers sharing a weight are at the deepest of their nodes' levels."""
    changed = {s.node for s in analysis.sinks if removed_ids[analysis.layouts[s.tensor].axes[s.axis]].any()}
    nodes = original.graph.node
    names = unique_node_names([(n.name, n.op_type) for n in nodes])  # as the analysis names them
    depth: dict[str, int] = {}
    level: dict[str, int] = {}
    for node, name in zip(nodes, names):  # graph order is topological
        d = max((depth.get(i, 0) for i in node_reads(node)), default=0)
        level[name] = d
        for o in node.output:
            depth[o] = d + (name in changed)
    by_level: dict[int, list[Reader]] = {}
    for r in readers:
        by_level.setdefault(max(level[n.name] for n in r.nodes), []).append(r)
    return [by_level[k] for k in sorted(by_level)]


@dataclass(frozen=True)
class SampledRows:
    """One reader's refit data on the pruned model's inputs: per half of the samples, its input
    rows [positions, kept in · k] and the original layer's outputs at those positions
    [positions, out] (rows of readers sharing a weight pooled)."""

    inputs: tuple[np.ndarray, ...]
    targets: tuple[np.ndarray, ...]
    groups: int

    @property
    def count(self) -> int:
        return sum(len(a) for a in self.inputs)

    def problems(self, has_bias: bool):  # type: ignore[no-untyped-def]
        """reconstruction_fit.refit_groups' ``problems`` for these rows."""

        def make(g: int, select: np.ndarray, outs: np.ndarray, w_aug: np.ndarray) -> list[Problem] | None:
            width = self.inputs[0].shape[1] // self.groups
            if width != len(select) - has_bias:
                return None
            out = []
            for a, y in zip(self.inputs, self.targets):
                a = a[:, g * width : (g + 1) * width]
                if has_bias:
                    a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
                out.append(Problem.of_rows(a, y[:, outs]))
            return out

        return make


def _activations(
    model: onnx.ModelProto,
    names: Sequence[str],
    feeds: Sequence[Mapping[str, np.ndarray]],
    source: str,
    carry: Carry | None = None,
) -> dict[str, np.ndarray]:
    """The tensors ``names`` of ``model`` on ``feeds`` (batch first, as computed), from one run
    of the model cut to them. ``carry`` (values computed by the refit's earlier runs, by the
    digest of what computes them) is fed instead of computing those again, and keeps the values
    of this run its ``keep`` asks for."""
    names = sorted(set(names))
    given: dict[str, int] = {}
    digests: dict[str, bytes] = {}
    if carry is not None and CARRY:
        digests = cone_digests(model)
        given = {
            n: onnx.helper.np_dtype_to_tensor_dtype(carry.values[d][0].dtype)
            for n, d in digests.items()
            if d in carry.values
        }
    cut = cone_model(model, names, given)
    fed = [v.name for v in cut.graph.input if v.name in given]
    extra: list[str] = []
    if carry is not None and CARRY:
        computed = {o for node in cut.graph.node for o in node.output}
        extra = [n for n in sorted(carry.keep) if n in computed and n not in names and n in digests]
        cut.graph.output.extend([onnx.ValueInfoProto(name=n) for n in extra])
    run = session(
        cut, source=source, what="the model cut to the reconstructed layers' inputs", optimize=True, per_sample=True
    )
    acts: dict[str, list[np.ndarray]] = {n: [] for n in [*names, *extra]}
    runs = [
        {**feed, **({n: carry.values[digests[n]][i] for n in fed} if carry is not None else {})}
        for i, feed in enumerate(feeds)
    ]
    for got in run.run_each(runs, [*names, *extra]):
        for n, v in zip([*names, *extra], got):
            acts[n].append(v)
    if carry is not None and CARRY:
        kept = {d: v for d, v in carry.values.items() if d in {digests.get(n) for n in carry.keep}}
        kept.update(
            {digests[n]: acts[n] for n in [*names, *extra] if n in carry.keep and n in digests and _arrays(acts[n])}
        )
        carry.values = kept
    return {n: np.concatenate(acts[n]) if len(acts[n]) > 1 else acts[n][0] for n in names}


def _arrays(values: list) -> bool:
    return all(isinstance(v, np.ndarray) for v in values)


# Feed the values an earlier level computed (by digest) instead of running the model from its
# inputs again: the same tensors (tests turn it off to compare).
CARRY = True


class Carry:
    """Per-sample values of tensors the level runs of one sequential refit computed, by the
    digest of what computes them (tensor_cones.cone_digests: a value whose digest is unchanged
    is the value), and the tensors worth keeping (``keep``, names: see ``frontier``)."""

    def __init__(self) -> None:
        self.values: dict[bytes, list[np.ndarray]] = {}
        self.keep: set[str] = set()


def frontier(model: onnx.ModelProto, outputs: set[str]) -> set[str]:
    """The tensors the nodes downstream of the nodes computing ``outputs`` (the readers still
    to refit; included) read and none of them computes: their values stay as they are while
    those readers are refitted (not weights, not the graph's inputs)."""
    graph = model.graph
    tensors: set[str] = set()
    down = []
    for node in graph.node:  # topological; an If / Loop also reads what its subgraphs read
        reads = node_reads(node)
        if any(o in outputs for o in node.output) or any(i in tensors for i in reads):
            down.append(reads)
            tensors.update(node.output)
    skip = tensors | {t.name for t in graph.initializer} | {v.name for v in graph.input} | {""}
    return {i for reads in down for i in reads} - skip


def _halves(
    layer: object, x: np.ndarray, w_shape: tuple[int, ...], settings: _Settings, halves: int, node: str
) -> list[np.ndarray] | None:
    """The reader's sampled input rows per half of the samples (reconstruction_fit.row_factors'
    sampling: the same positions for the same input shape without its channels)."""
    from .reconstruction_fit import reader_rng

    rng = reader_rng(settings.seed, node)
    parts = [x[: len(x) // 2], x[len(x) // 2 :]] if halves == 2 else [x]
    out = []
    for h in parts:
        rows = layer.input_rows(h, w_shape, settings.positions // len(parts), rng)  # type: ignore[attr-defined]
        if rows is None:
            return None
        out.append(np.asarray(rows, dtype=np.float64))
    return out


def _targets(
    original: onnx.ModelProto,
    step: Sequence[tuple[Reader, RefitStart]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    cache: ReconstructionCache,
    settings: _Settings,
    halves: int,
    carry: Carry | None = None,
) -> None:
    """The original layers' outputs at the sampled positions, per node and half, for the nodes
    of ``step`` not in ``cache.targets`` yet (float32, as the model computes them); ``carry``:
    the values of the original's earlier runs (``_activations``)."""
    missing = [(r, s, n) for r, s in step for n in r.nodes if n.name not in cache.targets]
    if not missing:
        return
    acts = _activations(original, [n.input[r.layer.data_index] for r, _, n in missing], feeds, settings.source, carry)
    for r, s, n in missing:
        layer = r.layer
        rows = _halves(layer, acts[n.input[layer.data_index]], s.w_shape_original, settings, halves, n.name)
        if rows is None or rows[0].shape[1] != s.w_mat.shape[1] * s.groups:
            cache.targets[n.name] = None
            continue
        width, out_g = s.w_mat.shape[1], s.w_mat.shape[0] // s.groups
        ys = []
        for h in rows:
            y = np.concatenate(
                [h[:, g * width : (g + 1) * width] @ s.w_mat[g * out_g : (g + 1) * out_g].T for g in range(s.groups)],
                axis=1,
            )
            ys.append((y + s.b).astype(np.float32))
        cache.targets[n.name] = ys


def sampled_rows(
    original: onnx.ModelProto,
    model: onnx.ModelProto,
    step: Sequence[tuple[Reader, RefitStart]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    cache: ReconstructionCache,
    settings: _Settings,
    halves: int,
    carry: tuple[Carry, Carry] | None = None,
) -> dict[tuple[str, ...], SampledRows]:
    """Per reader of ``step`` (by its nodes' names), its rows on ``model`` (the pruned model,
    the levels before written into it) and the original's outputs there; a reader whose rows
    do not have its pruned weight's columns is left out (not refitted). ``carry``: the values
    the earlier levels' runs computed, of the original and of the pruned model (``Carry``)."""
    carry_original, carry_pruned = carry if carry is not None else (None, None)
    _targets(original, step, feeds, cache, settings, halves, carry_original)
    acts = _activations(
        model,
        [s.targets[i].input[r.layer.data_index] for r, s in step for i in range(len(r.nodes))],
        feeds,
        settings.source,
        carry_pruned,
    )
    out: dict[tuple[str, ...], SampledRows] = {}
    for r, s in step:
        inputs: list[list[np.ndarray]] = [[] for _ in range(halves)]
        targets: list[list[np.ndarray]] = [[] for _ in range(halves)]
        ok = True
        for node, target in zip(r.nodes, s.targets):
            ys = cache.targets.get(node.name)
            rows = _halves(r.layer, acts[target.input[r.layer.data_index]], s.w_shape, settings, halves, node.name)
            if ys is None or rows is None or any(len(a) != len(y) for a, y in zip(rows, ys)):
                ok = False
                break
            for h in range(halves):
                inputs[h].append(rows[h])
                targets[h].append(np.asarray(ys[h], dtype=np.float64))
        if not ok or inputs[0][0].shape[1] != s.w_cur.shape[1] * s.groups:
            continue  # e.g. channels masked, not removed: the independent refit skips it too
        out[tuple(n.name for n in r.nodes)] = SampledRows(
            tuple(np.concatenate(v) for v in inputs), tuple(np.concatenate(v) for v in targets), s.groups
        )
    return out
