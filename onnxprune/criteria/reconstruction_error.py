"""Channel selection by reconstruction error (ThiNet, Luo et al. 2017; least-squares selection
as in He et al. 2017): remove the channels whose removal the next layer can best absorb.

For every layer that reads a source layer's channels (the readers reconstruction refits), the
original's activations at its input give the covariance S of its input rows (centred: the
removed channels' means go into the bias, by compensation or the refit) and its output
covariance W S W^T. Removing a set T of input channels and refitting the kept ones K by least
squares leaves the error tr(W_T (S_TT - S_TK S_KK^-1 S_KT) W_T^T); channels are removed
greedily, each time the one that adds the least, with the precision matrix downdated in
place (a Schur complement per step). A channel that is a linear combination of the kept ones
costs nothing. A channel's score is the error (relative to each reader's output variance,
summed over its readers) after it and every channel before it went: lowest first goes first,
and scores are comparable across layers.

Without the refit (``refit=False``: the ``contribution`` criterion) a channel's score is the
error its removal alone leaves when it is replaced by its calibration mean, as compensation
does: the variance of its contribution to each reader's output, tr(W_c S_cc W_c^T), relative
to the reader's output variance and summed over its readers. A near-constant channel, or one
whose readers barely weigh it, costs nothing there, however large its filter or its mean.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..analysis import ChannelAnalysis, import_graph
from ..node_names import nodes_by_name
from ..params import InitializerCache, ParamResolver
from ..rules import RuleRegistry, default_registry
from ..runtime import ModelRunner, session
from ..validation import model_opset

__all__ = ["reconstruction_scores"]

# Beyond this many input columns (channels x kernel positions) per group a reader's exact
# greedy costs too much: its channels are scored on their contributions (k = 1, see _block).
MAX_COLUMNS = 1536


@dataclass
class _Block:
    """One group of one reader: the greedy's state over its input columns."""

    p: np.ndarray  # (S + ridge)^-1 over the columns (the greedy downdates a copy: _State)
    q: np.ndarray  # p @ S @ W^T: [columns, outputs]
    energy: float  # tr(W S W^T): the reader's output variance
    columns: dict[int, np.ndarray]  # root -> its columns here
    alone: dict[int, float]  # root -> tr(W_J S_JJ W_J^T) / energy: its removal alone, no refit


def _block(
    rows: np.ndarray, w: np.ndarray, roots: np.ndarray, k: int, ridge: float, refit: bool = True
) -> _Block | None:
    """The greedy's start for input ``rows`` [positions, channels·k] read by ``w`` [out, channels·k]
    whose input channel c carries group ``roots[c]``; without ``refit`` only the errors alone
    (``_alone_block``: the contribution criterion reads nothing else)."""
    x = rows - rows.mean(axis=0)
    if x.shape[1] > MAX_COLUMNS:  # each channel as its contribution to the output: one column each
        x = x[:256]  # [channels, positions, outputs] stays small
        z = np.einsum("pck,ock->cpo", x.reshape(len(x), -1, k), w.reshape(len(w), -1, k)).reshape(len(roots), -1)
        s = z @ z.T / len(x)
        w, k = np.ones((1, len(roots))), 1
    elif not refit:
        return _alone_block(x, w, roots, k)
    else:
        s = x.T @ x / len(x)
    scale = float(np.mean(np.diag(s)))
    if scale <= 0:
        return None
    b = s @ w.T
    p = np.linalg.inv(s + ridge * scale * np.eye(len(s))) if refit else np.zeros((0, 0))
    cols = _columns(roots, k)
    energy = float(np.sum(w * b.T))
    alone = {r: float(np.sum((w[:, j] @ s[np.ix_(j, j)]) * w[:, j])) / max(energy, 1e-30) for r, j in cols.items()}
    return _Block(p, p @ b if refit else np.zeros((0, 0)), energy, cols, alone)


def _columns(roots: np.ndarray, k: int) -> dict[int, np.ndarray]:
    """Per group, its input columns (channel c holds columns c·k ... c·k + k - 1)."""
    columns: dict[int, list[int]] = defaultdict(list)
    for c, r in enumerate(roots):
        columns[int(r)].extend(range(c * k, (c + 1) * k))
    return {r: np.asarray(v) for r, v in columns.items()}


def _alone_block(x: np.ndarray, w: np.ndarray, roots: np.ndarray, k: int) -> _Block | None:
    """``_block`` without the refit, from the centred rows ``x``: tr(W_J S_JJ W_J^T) from each
    channel's own k x k covariance (and the whole contribution x_J W_J^T of a group on several
    channels here), so the covariance of all the columns (its cost is columns² x positions) is
    never formed."""
    if not np.any(x):
        return None
    cols = _columns(roots, k)
    n, channels = len(x), len(roots)
    energy = float(np.sum(np.square(x @ w.T))) / n
    xc, wc = x.reshape(n, channels, k), w.reshape(len(w), channels, k)
    own = np.einsum("ock,ckl,ocl->c", wc, np.einsum("pck,pcl->ckl", xc, xc) / n, wc)  # per channel
    alone = {}
    for r, j in cols.items():
        err = float(own[j[0] // k]) if len(j) == k else float(np.sum(np.square(x[:, j] @ w[:, j].T))) / n
        alone[r] = err / max(energy, 1e-30)
    empty = np.zeros((0, 0))
    return _Block(empty, empty, energy, cols, alone)


def _greedy(blocks: Sequence[_Block], candidates: Sequence[int]) -> dict[int, float]:
    """Roots in removal order with the cumulative relative error after each.

    A block's costs read its precision and projections at the columns of the candidates still
    in, and each downdate reads and writes only those (entry (a, b) of the rank-k downdate
    reads row a and column b): so each block is cut to its candidates' columns at the start
    and loses a removed root's columns after its downdate (other sources' and pinned channels'
    columns stay in the inverse, as kept inputs). The same entries, computed alike but for
    rounding (a product over fewer rows may round otherwise: 1e-14 relative measured on YOLO26n,
    every layer's order the same)."""
    left = list(candidates)
    total = 0.0
    order: dict[int, float] = {}
    states = [_State.of(blk, candidates) for blk in blocks]
    while left:
        costs = np.zeros(len(left))
        for st in states:
            if st is None:
                continue
            present = [(i, st.local[r]) for i, r in enumerate(left) if r in st.local]
            if not present:
                continue
            sizes = {len(j) for _, j in present}
            if len(sizes) == 1:  # every channel k columns here: all candidates at once
                idx = np.asarray([i for i, _ in present])
                j = np.stack([j for _, j in present])  # [m, k]
                pj, qj = st.p[j[:, :, None], j[:, None, :]], st.q[j]  # [m, k, k], [m, k, out]
                try:
                    costs[idx] += np.sum(np.linalg.solve(pj, qj) * qj, axis=(1, 2)) / max(st.energy, 1e-30)
                    continue
                except np.linalg.LinAlgError:
                    pass
            for i, j in present:
                pj, qj = st.p[np.ix_(j, j)], st.q[j]
                try:
                    costs[i] += float(np.sum(np.linalg.solve(pj, qj) * qj)) / max(st.energy, 1e-30)
                except np.linalg.LinAlgError:
                    costs[i] += np.inf
        best = int(np.argmin(costs))
        root = left.pop(best)
        total += max(float(costs[best]), 0.0)
        order[root] = total
        for st in states:
            if st is not None and root in st.local:
                st.remove(root)
    return order


@dataclass
class _State:
    """A block in the greedy: its precision ``p`` and projections ``q`` at the columns of the
    candidates still in (``local``: root -> its columns there)."""

    p: np.ndarray
    q: np.ndarray
    energy: float
    local: dict[int, np.ndarray]

    @staticmethod
    def of(blk: _Block, candidates: Sequence[int]) -> _State | None:
        mine = [r for r in candidates if r in blk.columns]
        if not mine:
            return None
        cols = np.concatenate([blk.columns[r] for r in mine])
        local, at = {}, 0
        for r in mine:
            local[r] = np.arange(at, at + len(blk.columns[r]))
            at += len(blk.columns[r])
        return _State(blk.p[np.ix_(cols, cols)], blk.q[cols], blk.energy, local)

    def remove(self, root: int) -> None:
        """Downdate for ``root``'s removal (a Schur complement), then drop its columns."""
        j = self.local.pop(root)
        a, b = int(j[0]), int(j[-1]) + 1  # a root's columns are consecutive here
        try:
            s = np.linalg.inv(self.p[a:b, a:b])
        except np.linalg.LinAlgError:
            s = None  # left as it was, as before: its columns go
        if s is not None:
            pcol = self.p[:, a:b]
            self.q -= pcol @ (s @ self.q[a:b])
            self.p -= pcol @ s @ self.p[a:b]
        self.p = np.delete(np.delete(self.p, np.s_[a:b], axis=0), np.s_[a:b], axis=1)
        self.q = np.delete(self.q, np.s_[a:b], axis=0)
        self.local = {r: c - (b - a) if c[0] >= b else c for r, c in self.local.items()}


# A reader group's greedy start is made once for every source it reads (tests turn it off to
# compare: the same scores, bit for bit).
SHARE = True


def _reader_groups(
    analysis: ChannelAnalysis,
    src: object,
    readers: Sequence[tuple],
    rows_of: Mapping[tuple[str, int], np.ndarray],
) -> list[tuple[tuple[str, int, int], tuple[np.ndarray, np.ndarray, np.ndarray, int]]]:
    """The reader groups source ``src`` feeds: per (reader node, input, group), its input rows,
    weight rows, input channels' groups and columns per channel (``_block``'s arguments)."""
    mine = {int(r) for r in analysis.roots(src.ids)}  # type: ignore[attr-defined]
    out = []
    for sink, layer, w in readers:
        rows = rows_of.get((sink.node, sink.input_index))
        if rows is None:
            continue
        sink_roots = analysis.roots(analysis.layouts[sink.tensor].axes[sink.axis])
        if not mine & {int(r) for r in sink_roots}:
            continue
        w_mat = layer.weight_matrix(w)
        groups = layer.groups
        n_in = len(sink_roots)
        if n_in % groups or rows.shape[1] % n_in:
            continue
        k, in_g, out_g = rows.shape[1] // n_in, n_in // groups, len(w_mat) // groups
        for g in range(groups):
            part = sink_roots[g * in_g : (g + 1) * in_g]
            if not mine & {int(r) for r in part}:
                continue
            args = (rows[:, g * in_g * k : (g + 1) * in_g * k], w_mat[g * out_g : (g + 1) * out_g], part, k)
            out.append(((sink.node, sink.input_index, g), args))
    return out


# Later samples' outputs are written by onnxruntime into the joined arrays (io binding), not
# returned and joined (tests turn it off to compare: the same arrays).
BIND = True


def _joined_outputs(
    run: ModelRunner, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]], step: Callable[[int], object]
) -> dict[str, np.ndarray]:
    """Per output of ``names``, its values over all ``feeds`` joined on the first axis;
    ``step(done)`` after each feed. The first feed's run gives the outputs' shapes; when every
    feed has its input shapes, the others' outputs are written straight into the joined arrays
    (on a detector's 32 pages, gigabytes neither copied out of onnxruntime nor joined again);
    otherwise, or if that fails, the runs' outputs are joined."""
    first = run.run(feeds[0], names)
    step(1)
    shapes = {k: np.shape(v) for k, v in feeds[0].items()}
    if (
        BIND
        and isinstance(run, ModelRunner)
        and len(feeds) > 1
        and all(isinstance(v, np.ndarray) and v.ndim and v.dtype.kind == "f" for v in first)
        and all({k: np.shape(v) for k, v in f.items()} == shapes for f in feeds[1:])
    ):
        n = len(feeds)
        joined = {name: np.empty((len(v) * n, *v.shape[1:]), v.dtype) for name, v in zip(names, first)}
        sizes = {name: len(v) for name, v in zip(names, first)}
        for name, v in zip(names, first):
            joined[name][: len(v)] = v
        del first
        sess = run.inference_session
        try:
            for i, feed in enumerate(feeds[1:], start=1):
                binding = sess.io_binding()
                for k, v in feed.items():
                    binding.bind_cpu_input(k, np.ascontiguousarray(v))
                for name, arr in joined.items():
                    part = arr[i * sizes[name] : (i + 1) * sizes[name]]
                    binding.bind_output(name, "cpu", 0, part.dtype.type, list(part.shape), part.ctypes.data)
                sess.run_with_iobinding(binding)
                step(i + 1)
            return joined
        except Exception:  # onnxruntime's own error types: a shape that changed, a bad feed...
            first = run.run(feeds[0], names)  # joined as below (a bad feed raises its typed error there)
    acts: dict[str, list[np.ndarray]] = {name: [v] for name, v in zip(names, first)}
    for i, feed in enumerate(feeds[1:], start=1):
        for name, v in zip(names, run.run(feed, names)):
            acts[name].append(v)
        step(i + 1)
    return {name: np.concatenate(parts) if len(parts) > 1 else parts[0] for name, parts in acts.items()}


def reconstruction_scores(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    registry: RuleRegistry | None = None,
    positions: int = 4096,
    ridge: float = 1e-4,
    seed: int = 0,
    source: str = "<model>",
    refit: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per source layer, its channels' scores (see module doc; higher = keep; ``refit=False``:
    each channel's error alone, replaced by its mean). A channel no
    refittable reader reads (only a graph output, a ConvTranspose...) scores above every
    channel that has one; a layer none of whose channels has one gets NaN (kept whole).
    ``progress(done, total)`` counts the samples run, then the source layers scored."""
    registry = registry or default_registry()
    total = len(feeds) + len(analysis.sources)
    if progress:
        progress(0, total)
    opset = model_opset(model)
    originals = nodes_by_name(model.graph.node)
    graph = import_graph(model)
    by_label = {n.name: n for n in graph.nodes}
    params = ParamResolver(InitializerCache(model), graph)
    readers = []
    for sink in analysis.sinks:
        node = originals[sink.node]
        layer = registry.layer(node, opset)
        if layer is None or sink.input_index != layer.data_index or not layer.refittable:
            continue
        w = params(by_label[sink.node].inputs[layer.weight_index])
        if w is None or np.asarray(w.values).dtype.kind != "f":
            continue
        readers.append((sink, layer, np.asarray(w.values, dtype=np.float64)))
    if not readers:
        if progress:
            progress(total, total)
        return {s.node: np.full(len(s.ids), np.nan) for s in analysis.sources}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = sorted({s.tensor for s, _, _ in readers})
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    run = session(probe, source=source, what="the model with its readers' inputs as outputs (criterion)", optimize=True)
    # As the model computed them (float32), as reconstruction keeps them: input_rows converts
    # the sampled rows to float64, exactly, so the scores are those of a float64 copy of every
    # activation, which on a 640x640 detector's 32 pages held 11 GB.
    values = _joined_outputs(run, names, feeds, lambda done: progress(done, total) if progress else None)
    rng = np.random.default_rng(seed)
    rows_of = {}
    for sink, layer, w in readers:
        rows = layer.input_rows(values[sink.tensor], w.shape, positions, rng)
        if rows is not None:
            rows_of[(sink.node, sink.input_index)] = rows
    pinned = {g.id for g in analysis.groups if g.pinned}
    # Per source, the reader groups it feeds; a reader group several sources feed (a Concat's
    # reader) has its greedy's start made once, kept until its last source is scored.
    wanted = [_reader_groups(analysis, src, readers, rows_of) for src in analysis.sources]
    uses = Counter(key for entries in wanted for key, _ in entries)
    made: dict[tuple, _Block | None] = {}
    out: dict[str, np.ndarray] = {}
    for number, (src, entries) in enumerate(zip(analysis.sources, wanted)):
        roots = analysis.roots(src.ids)
        mine = {int(r) for r in roots}
        blocks = []
        for key, (rows, w_part, part, k) in entries:
            if key not in made:
                made[key] = _block(rows, w_part, part, k, ridge, refit)
            blk = made[key]  # read, never written, by the greedy (_State copies what it downdates)
            uses[key] -= 1
            if not uses[key] or not SHARE:
                del made[key]  # its last source (or none shared)
            if blk is not None:
                blocks.append(blk)
        if progress:
            progress(len(feeds) + number + 1, total)
        read = {r for blk in blocks for r in blk.columns}
        candidates = sorted(r for r in mine if r in read and r not in pinned)
        if not blocks or not candidates:
            out[src.node] = np.full(len(roots), np.nan)
            continue
        if refit:
            order = _greedy(blocks, candidates)
        else:  # lowest error alone first
            alone = {r: sum(blk.alone.get(r, 0.0) for blk in blocks) for r in candidates}
            order = dict(sorted(alone.items(), key=lambda item: (item[1], item[0])))
        top = max(order.values(), default=0.0)
        rank = {r: i for i, r in enumerate(order)}
        scores = [order[int(r)] + 1e-9 * (1 + top) * rank[int(r)] if int(r) in order else 2 * (1 + top) for r in roots]
        out[src.node] = np.asarray(scores, dtype=np.float64)
    return out
