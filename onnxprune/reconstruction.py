"""Reconstruction: after channels are removed, refit the weights (and bias) of each layer that
read them by least squares on calibration activations, so that its outputs match the
original's as closely as possible (He et al. 2017, "Channel Pruning for Accelerating Very Deep
Neural Networks"; Luo et al. 2017, ThiNet). No gradients: a closed-form ridge solve per layer
on sampled output positions, regularised towards the weights the surgery left.

Layer-wise: each reader is refitted on the *original* model's activations (its kept input
channels -> its original output), independently of the others; with ``inputs="pruned"``
(``--reconstruct-from pruned``) sequentially instead, on the pruned model's activations with
the readers before it refitted first (reconstruction_sequential). Readers are the layers whose
rule's layer semantics give their input as rows of the weight matrix (Conv, Gemm, MatMul with a
2-D weight, and users' rules built on them):
- removed channels that pass through a depthwise Conv (the same channel on both sides) are read
  by the first layer after it that mixes channels, the projection: that one is refitted;
- a grouped Conv is one least-squares problem per group (its kept outputs on its kept inputs);
- a reader followed by a BatchNormalization is fitted to the BatchNormalization's input: each
  output channel is its own problem and the BatchNormalization a per-channel affine map, so
  that is the fit of its output too (the ridge measured on the folded weights);
- a weight computed by nodes (Constant, Cast -> Mul of int8 values...) is replaced by a float
  initializer with the refitted values and the nodes that computed it go; a quantized weight
  (QDQ, FakeQuantize) is left on its quantized path.

This module runs the refit; the readers and what each refit starts from are
reconstruction_readers, the row factors and the least squares per group reconstruction_fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from . import least_squares
from .analysis import ChannelAnalysis, import_graph
from .compensation import removed_id_mask
from .layer_params import WeightWriter
from .least_squares import RIDGES, Problem
from .params import InitializerCache, ParamResolver
from .planning import PruningPlan
from .reconstruction_fit import cache_factors, pool_factors, refit_groups
from .reconstruction_readers import find_readers, refit_start
from .rules import RuleRegistry, default_registry
from .validation import model_opset

__all__ = ["ReconstructedLayer", "ReconstructionCache", "reconstruct"]


@dataclass(frozen=True)
class ReconstructedLayer:
    node: str
    positions: int
    error_before: float  # relative RMS error of the layer's output on the samples
    error_after: float


class ReconstructionCache:
    """What reconstruction computes from the original model and one set of calibration
    samples alone, kept across calls with both the same (the fidelity search's trials): each
    reader's row factors per half of the samples, and the refits solved so far (by readers,
    group, kept inputs and outputs and the weights they started from). An object the caller
    holds: nothing is kept between runs; used with other samples it raises ValueError. With
    sequential reconstruction also the original readers' outputs at their sampled positions."""

    def __init__(self) -> None:
        self._feeds: tuple | None = None
        self._held: Sequence[Mapping[str, np.ndarray]] = ()  # keeps the samples (and their ids) alive
        self.factors: dict[str, list[list[np.ndarray]] | None] = {}  # reader -> per half, per group
        self.positions: dict[str, int] = {}
        self.fits: dict[tuple, tuple[np.ndarray | None, float, float, float]] = {}
        # sequential reconstruction: the original layer's outputs at its sampled positions, per half
        self.targets: dict[str, list[np.ndarray] | None] = {}

    def bind(self, feeds: Sequence[Mapping[str, np.ndarray]], settings: tuple) -> None:
        """Check that the cache serves these samples with these settings (positions, seed, ridges)."""
        ids = (tuple(id(f) for f in feeds), settings)
        if self._feeds is None:
            self._feeds, self._held = ids, list(feeds)
        elif ids != self._feeds:
            raise ValueError("a ReconstructionCache serves one set of calibration samples and settings")


INPUTS = ("original", "pruned")


def reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    registry: RuleRegistry | None = None,
    positions: int = 8192,
    ridge: float = 1e-5,
    ridges: Sequence[float] = RIDGES,
    seed: int = 0,
    source: str = "<model>",
    progress: Callable[[int, int], None] | None = None,
    cache: ReconstructionCache | None = None,
    inputs: str = "original",
    levels: int | None = None,
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """A copy of ``pruned`` with the readers of removed channels refitted (see module doc);
    ``source``, the model file, names it in errors; ``progress(done, total)`` counts the
    readers refitted; ``cache`` keeps what does not depend on the plan for the next call
    with the same original and ``feeds`` (the result is the same with or without it).
    ``inputs``: what each reader is fitted on, "original" (the original's activations, every
    reader independently) or "pruned" (sequential: the pruned model's, with the readers
    upstream already refitted; reconstruction_sequential). ``levels`` (with "pruned"): only the
    shallowest ``levels`` depth levels in sequence, the deeper readers on the original's
    activations as the independent refit fits them (None: every level; 0 or 1: the independent
    refit, level 0 reading what the original computed)."""
    if inputs not in INPUTS:
        raise ValueError(f"reconstruct: inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    if levels is not None and levels < 0:
        raise ValueError(f"reconstruct: levels must be >= 0 or None, got {levels}")
    registry = registry or default_registry()
    cache = cache or ReconstructionCache()
    cache.bind(feeds, (positions, ridge, tuple(ridges), seed))
    with least_squares.one_blas_thread():
        return _reconstruct(
            original,
            pruned,
            analysis,
            plan,
            feeds,
            registry,
            _Settings(positions, ridge, tuple(ridges), seed, source, inputs, levels),
            progress,
            cache,
        )


@dataclass(frozen=True)
class _Settings:
    positions: int
    ridge: float
    ridges: tuple[float, ...]
    seed: int
    source: str
    inputs: str
    levels: int | None = None  # sequential levels (inputs "pruned"); None: all


def _reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    plan: PruningPlan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    registry: RuleRegistry,
    settings: _Settings,
    progress: Callable[[int, int], None] | None,
    cache: ReconstructionCache,
) -> tuple[onnx.ModelProto, tuple[ReconstructedLayer, ...]]:
    """reconstruct's work (its arguments resolved)."""
    from . import reconstruction_sequential as sequential

    opset = model_opset(original)
    removed_ids = removed_id_mask(analysis, plan)
    todo = find_readers(original, analysis, removed_ids, registry, opset)
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    if not todo:
        return out, ()

    graph = import_graph(original)
    params = ParamResolver(InitializerCache(original), graph)
    g_orig = {n.name: n for n in graph.nodes}
    halves = 2 if len(feeds) >= 2 and settings.ridges else 1
    steps = [todo] if settings.inputs == "original" else sequential.levels(original, analysis, removed_ids, todo)
    cap = settings.levels
    if cap is not None and len(steps) > max(cap, 1):
        # Past the cap the deeper readers are one step fitted on the original's activations
        # (the independent refit's): a bounded number of runs of the pruned model per refit.
        steps = [*steps[: max(cap, 1)], [r for s in steps[max(cap, 1) :] for r in s]]
        on_original = {0, len(steps) - 1}
    else:
        on_original = {0}
    # Level 0 reads what the original computed, and the deeper step past a cap is fitted as
    # if it did: the cached factors of the original's rows serve them.
    cache_factors(
        original,
        [r for i in sorted(on_original) for r in steps[i]],
        g_orig,
        params,
        feeds,
        cache,
        settings.positions,
        halves,
        settings.seed,
        settings.source,
    )

    pruned_graph = import_graph(out)  # the pruned model's weights, read through Constant nodes and chains
    pruned_params = ParamResolver()
    g_pruned = {n.name: n for n in pruned_graph.nodes}
    writer = WeightWriter(out)
    done: list[ReconstructedLayer] = []
    count = 0
    # The level runs' values (the original's, the pruned model's), fed to the next level's runs.
    carry = (sequential.Carry(), sequential.Carry())
    for depth, step in enumerate(steps):
        if depth not in on_original:
            ahead = {o for s in steps[depth:] for r in s for n in r.nodes for o in n.output}
            carry[0].keep, carry[1].keep = sequential.frontier(original, ahead), sequential.frontier(out, ahead)
        starts = [
            refit_start(r, writer, g_orig, params, g_pruned, pruned_params, analysis, removed_ids, settings.source)
            for r in step
        ]
        rows = (
            None
            if depth in on_original
            else sequential.sampled_rows(
                original,
                out,
                [(r, s) for r, s in zip(step, starts) if s is not None],
                feeds,
                cache,
                settings,
                halves,
                carry,
            )
        )
        for reader, start in zip(step, starts):
            if progress:
                progress(count, len(todo))
            count += 1
            if start is None:
                continue
            names = tuple(n.name for n in reader.nodes)
            if rows is None:  # the original's inputs: column selections of the cached factors
                factors = [cache.factors.get(n) for n in names]
                if any(f is None for f in factors):
                    continue
                per_half = [
                    [pool_factors([f[h][g] for f in factors]) for g in range(len(factors[0][h]))] for h in range(halves)
                ]  # type: ignore[index]

                def problems(
                    g: int,
                    select: np.ndarray,
                    outs: np.ndarray,
                    w_aug: np.ndarray,
                    p: list = per_half,
                    n: int = start.groups,
                ) -> list[Problem] | None:
                    if len(p[0]) != n or any(h[g].shape[1] != w_aug.shape[1] for h in p):
                        return None
                    return [Problem(h[g], select, w_aug) for h in p]

                key: tuple | None = (names, reader.keep_in.tobytes(), start.keep_out.tobytes(), start.has_bias)
                n_rows = sum(cache.positions[n] for n in names)
            else:
                sampled = rows.get(names)
                if sampled is None:
                    continue
                problems, key, n_rows = sampled.problems(start.has_bias), None, sampled.count
            fitted = refit_groups(problems, start, reader.keep_in, settings.ridge, settings.ridges, cache, key)
            if fitted is None:
                continue
            w_new, b_new, err_b, err_a = fitted
            if err_a >= err_b:
                continue
            writer.write(list(start.targets), reader.layer, w_new, b_new if start.has_bias else None, start.w_param)
            done.extend(ReconstructedLayer(n.name, n_rows, err_b, err_a) for n in reader.nodes)
    writer.finish()
    if progress:
        progress(len(todo), len(todo))
    return out, tuple(done)
