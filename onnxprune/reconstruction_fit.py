"""Reconstruction's arithmetic: each reader's sampled input rows from the original's
activations as compact factors (least_squares.factor, per half of the samples and per group),
and the least-squares refit per group of a layer against the original's outputs. Split from
reconstruction, which chooses the readers and runs the refit."""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from . import least_squares
from .least_squares import Problem, factor
from .params import ParamResolver
from .rules import Layer
from .runtime import session

if TYPE_CHECKING:
    from .reconstruction import ReconstructionCache
    from .reconstruction_readers import Reader, RefitStart

__all__ = ["cache_factors", "pool_factors", "reader_rng", "refit_groups", "row_factors"]


def reader_rng(seed: int, node: str) -> np.random.Generator:
    """A reader's own sampling stream: its rows do not depend on which other readers are refitted."""
    return np.random.default_rng([seed, zlib.crc32(node.encode())])


def row_factors(
    reader: str,
    layer: Layer,
    x: np.ndarray,
    w_shape: tuple[int, ...],
    positions: int,
    halves: int,
    seed: int,
) -> tuple[list[list[np.ndarray]], int] | None:
    """Per half of the samples in ``x`` (batch first), per group of the layer: the factor of
    its input rows (least_squares.factor), and the number of rows; None when the layer gives
    no rows."""
    rng = reader_rng(seed, reader)
    parts = [x[: len(x) // 2], x[len(x) // 2 :]] if halves == 2 else [x]
    out, count = [], 0
    for h in parts:
        rows = layer.input_rows(h, w_shape, positions // len(parts), rng)
        if rows is None:
            return None
        rows = np.asarray(rows, dtype=np.float64)
        count += len(rows)
        g = layer.groups
        if g < 1 or rows.shape[1] % g:
            return None
        width = rows.shape[1] // g
        out.append([factor(rows[:, i * width : (i + 1) * width]) for i in range(g)])
    return out, count


def pool_factors(factors: Sequence[np.ndarray]) -> np.ndarray:
    """One factor for the pooled rows of readers sharing a weight (F^T F summed)."""
    if len(factors) == 1:
        return factors[0]
    stacked = np.concatenate(factors)
    return stacked if len(stacked) <= stacked.shape[1] else np.linalg.qr(stacked, mode="r")


def cache_factors(
    original: onnx.ModelProto,
    todo: Sequence[Reader],
    g_orig: Mapping[str, object],
    params: ParamResolver,
    feeds: Sequence[Mapping[str, np.ndarray]],
    cache: ReconstructionCache,
    positions: int,
    halves: int,
    seed: int,
    source: str,
) -> None:
    """The row factors of the readers not in ``cache`` yet, from the original's activations at
    their inputs (one run over the samples for all of them)."""
    missing = [(n, r.layer) for r in todo for n in r.nodes if n.name not in cache.factors]
    if not missing:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(original)
    names = sorted({n.input[layer.data_index] for n, layer in missing})
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    run = session(
        probe,
        source=source,
        what="the model with the reconstructed layers' inputs as outputs",
        optimize=True,
        per_sample=True,
    )
    acts: dict[str, list[np.ndarray]] = defaultdict(list)
    for got in run.run_each(feeds, names):
        for n, v in zip(names, got):
            acts[n].append(v)
    # As the model computed them (float32): the layers' input_rows convert the sampled rows
    # to float64, which is exact, instead of a float64 copy of every activation.
    values = {n: np.concatenate(v) if len(v) > 1 else v[0] for n, v in acts.items()}
    del acts
    for node, layer in missing:
        w = params(g_orig[node.name].inputs[layer.weight_index])  # type: ignore[attr-defined]
        shape = None if w is None else tuple(np.shape(w.values))
        made = (
            None
            if shape is None
            else row_factors(node.name, layer, values[node.input[layer.data_index]], shape, positions, halves, seed)
        )
        cache.factors[node.name] = None if made is None else made[0]
        cache.positions[node.name] = 0 if made is None else made[1]


def refit_groups(
    problems: Callable[[int, np.ndarray, np.ndarray, np.ndarray], list[Problem] | None],
    start: RefitStart,
    keep_in: np.ndarray,
    ridge: float,
    ridges: Sequence[float],
    cache: ReconstructionCache,
    key: tuple | None,
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Least squares per group of the layer (one group unless it is a grouped Conv): group g's
    kept outputs are refitted on group g's kept inputs only, against the original's outputs
    there; ``problems(g, select, outs, w_aug)``: group g's problem per half of the samples
    (``select``: its kept columns, and the ones column with a bias, among the original's;
    ``outs``: its kept outputs; ``w_aug``: their original weights and bias), None when the
    samples do not have the layer's columns. Returns the new
    weights and bias in the pruned layer's shape [kept out, kept in/groups · k] and the
    relative RMS error before and after, or None when the pruned layer does not have the
    shape the plan implies. ``key``: the fits are kept in ``cache`` under it (None: not kept)."""
    w_mat, b, w_cur, b_cur, keep_out, has_bias = (
        start.w_mat,
        start.b,
        start.w_cur,
        start.b_cur,
        start.keep_out,
        start.has_bias,
    )
    n_out, n_cols = w_mat.shape
    groups = start.groups
    n_in = len(keep_in)
    if groups < 1 or n_out % groups or n_in % groups:
        return None
    k = n_cols * groups // n_in  # columns per input channel (kernel positions)
    out_g, in_g = n_out // groups, n_in // groups
    kept_out = np.flatnonzero(keep_out)
    if w_cur.shape[0] != len(kept_out) or b_cur.shape[0] != len(kept_out):
        return None
    w_new, b_new = w_cur.copy(), b_cur.copy()
    sq_b = sq_a = sq_y = 0.0
    for g in range(groups):
        outs = np.flatnonzero(keep_out[g * out_g : (g + 1) * out_g]) + g * out_g
        if len(outs) == 0:
            continue  # a group dropped whole
        cols = np.repeat(keep_in[g * in_g : (g + 1) * in_g], k)
        cur = np.searchsorted(kept_out, outs)  # their rows in the pruned layer
        if int(cols.sum()) != w_cur.shape[1]:
            return None
        theta0 = w_cur[cur].T
        if has_bias:
            theta0 = np.concatenate([theta0, b_cur[cur][None, :]], axis=0)
        start_digest = hashlib.blake2b(np.ascontiguousarray(theta0).tobytes(), digest_size=16).digest()
        fkey = None if key is None else (*key, g, start_digest)
        if fkey is None or fkey not in cache.fits:
            select = np.flatnonzero(np.append(cols, has_bias))  # kept columns (and the ones column)
            w_aug = np.concatenate([w_mat[outs], b[outs][:, None]], axis=1)
            group_problems = problems(g, select, outs, w_aug)
            if group_problems is None:
                return None
            theta = least_squares.fit(group_problems, theta0, ridge, ridges)
            fit = (
                theta,
                sum(p.error(theta0) for p in group_problems),
                sum(p.error(theta0 if theta is None else theta) for p in group_problems),
                sum(p.energy() for p in group_problems),
            )
            if fkey is not None:
                cache.fits[fkey] = fit
        else:
            fit = cache.fits[fkey]
        theta, e_b, e_a, e_y = fit
        sq_b, sq_a, sq_y = sq_b + e_b, sq_a + e_a, sq_y + e_y
        if theta is None:
            continue
        w_new[cur] = (theta[:-1] if has_bias else theta).T
        if has_bias:
            b_new[cur] = theta[-1]
    scale = float(np.sqrt(sq_y)) or 1.0
    return w_new, b_new, float(np.sqrt(sq_b)) / scale, float(np.sqrt(sq_a)) / scale
