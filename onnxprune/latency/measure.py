"""Building a model's latency table by measurement.

Each prunable unit (``sensitivity_analysis.find_units``: tied layers) is timed on its own
isolated subgraph (``subgraph.py``: the unit's layers and every node its channels pass
through, with the readers' convs, fed tensors of the real shapes), at a few kept channel counts:
100, 75, 50 and 25% and a cluster around a multiple of 32 (or 16, 8) that tells a channel step
of 1 to 32 from noise. The channels removed are the unit's lowest-scored groups (``criterion``),
removed by the package's own surgery: real removal, not masking.

Why subgraphs, not whole-model deltas: removing a quarter of one unit changes a 2 ms model by a
few microseconds, less than run-to-run noise on a shared machine; timed alone, the unit's
subgraph changes by a large fraction of its own time, so a dozen interleaved rounds find the
difference and the step. The cost: the units' savings are taken as additive and the
subgraph misses cache effects between layers; the planner's A/B confirmation
(``ab.measure_ab``) measures the whole model at the end. One whole-model measurement
calibrates the table (``calibrate.py``): the baseline, and the scale that ties the subgraphs'
savings to the whole model's.

Noise: all of one unit's variants are compiled at once and timed in interleaved rounds with
rotating order; a point is the median over rounds of each round's fastest run (``sampling``);
the step is believed only when it beats
the unblocked line by more than the medians' own uncertainty (``fit.detect_step``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import OnnxPruneError, UsageError
from . import cache as _cache
from .fit import STEP_CANDIDATES, detect_step
from .table import LatencySettings, LatencyTable, UnitLatency

if TYPE_CHECKING:  # the analysis and the runtimes load only when measuring, not on a cache hit
    import onnx

    from ..analysis import ChannelAnalysis
    from ..budget import MacsTracker
    from ..rules import RuleRegistry
    from .subgraph import BoundaryTensor, UnitGraph
    from .timers import Timed, Timer

__all__ = ["build_table", "measurement_counts", "partner_weights", "resolve_input_shapes", "timing_shapes"]

Progress = Callable[[str, int, int], None]
_STAGE = "latency table"


def measurement_counts(channels: int, removable: int) -> tuple[list[int], int]:
    """Kept counts to time a unit at, and the largest step they can reveal: 100/75/50/25%
    and, around a multiple ``m`` of 32 (else 16, 8, 4) near 60% of the width, m+1, m, m-1 and
    m-4 ... m-32 (each step candidate up to that multiple; m-p/2 at least must be possible).
    Only counts the unit can keep."""
    lo = max(channels - removable, 1)
    counts = {channels, *(round(f * channels) for f in (0.75, 0.5, 0.25))}
    reach = 1
    for p in (32, 16, 8, 4):
        multiples = [m for m in range(p, channels, p) if m - p // 2 >= lo and m + 1 <= channels]
        if multiples:
            m = min(multiples, key=lambda x: (abs(x - 0.6 * channels), x))
            counts |= {m + 1, m, m - 1, *(m - q for q in (4, 8, 16, 32) if q <= p)}
            reach = p
            break
    return sorted(k for k in counts if lo <= k <= channels), reach


def timing_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], batch: int
) -> dict[str, tuple[int, ...]]:
    """The input shapes the table and the A/B runs time at: ``shapes`` (the user's
    --input-shape, and for inputs with dynamic dimensions one sample's shape from the data:
    ``stages.prepare.with_data_shapes``, batch 1) with a batch of 1 set to the deployment's ``batch``
    where the model's batch (its first dimension) is dynamic. Without this, ``--batch 64`` with
    --calibration on a dynamic-batch model was refused ("has batch 1, --batch says 64"): the
    data's per-sample shape was taken for a batch the user asked for."""
    from ..shapes import dynamic_batch_inputs

    dynamic = set(dynamic_batch_inputs(model))
    return {
        name: ((batch, *shape[1:]) if name in dynamic and shape and shape[0] == 1 else tuple(shape))
        for name, shape in shapes.items()
    }


def resolve_input_shapes(
    model: onnx.ModelProto, given: Mapping[str, Sequence[int]], batch: int, source: str
) -> dict[str, tuple[int, ...]]:
    """Static shape of every model input: the user's, else the model's with a dynamic batch
    set to ``batch``; any other dynamic dimension (or a static batch other than ``batch``) is
    a usage error saying what to give."""
    inits = {t.name for t in model.graph.initializer}
    from ..shapes import batch_filled, check_input_names, input_dims, shape_text

    check_input_names(source, given, (vi.name for vi in model.graph.input if vi.name not in inits))
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = batch_filled(vi.name, input_dims(vi), given, source, batch=batch, check_rank=False, check_fixed=False)
        if vi.name in given:
            if shape and shape[0] != batch and batch != 1:
                raise UsageError(f"{source}: --input-shape {vi.name} has batch {shape[0]}, --batch says {batch}")
            out[vi.name] = shape
            continue
        if None in shape:
            # a form that can be typed once its named sizes are chosen: the batch and the
            # model's fixed sizes filled in, d<i> for each dynamic one
            free = [f"d{j}" for j, x in enumerate(shape) if x is None]
            raise UsageError(
                f"{source}: input {vi.name!r} dimension {shape.index(None)} is dynamic; give --input-shape "
                f"{vi.name}:{shape_text(shape, 'd{}')} with {', '.join(free)} the size{'s' if len(free) > 1 else ''} to time"
            )
        if batch != 1 and (not shape or shape[0] != batch):
            raise UsageError(
                f"{source}: input {vi.name!r} has a static batch of {shape[0] if shape else 'none'}; --batch {batch} needs a dynamic batch"
            )
        out[vi.name] = tuple(shape)
    return out


def partner_weights(
    macs0: Mapping[str, float],
    totals: Mapping[str, Sequence[int]],
    effects: Mapping[int, Sequence[tuple[str, int, int]]],
    unit_groups: Mapping[str, Sequence[int]],
) -> dict[str, tuple[tuple[str, float], ...]]:
    """For each unit, the other units it shares layers with, and the share of its MACs
    saving (all of its channels removed, the rest full) made in those layers, weighted by how
    much of the layer's other side is that unit's. From a ``budget.MacsTracker``'s ``macs0``,
    ``total`` ([outputs, inputs] per layer) and ``effects`` (group -> (layer, outputs, inputs))."""
    owner = {g: u for u, gs in unit_groups.items() for g in gs}
    sides: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    for gid, hits in effects.items():
        u = owner.get(gid)
        if u is None:
            continue
        for layer, d_out, d_in in hits:
            outs, ins = sides.setdefault(layer, ({}, {}))
            outs[u] = outs.get(u, 0) + d_out
            ins[u] = ins.get(u, 0) + d_in
    result = {}
    for u in unit_groups:
        saved, weights = 0.0, {}
        for layer, pair in sides.items():
            for side in (0, 1):
                n = pair[side].get(u, 0)
                if not n:
                    continue
                s = macs0[layer] * n / totals[layer][side]
                saved += s
                for other, m in pair[1 - side].items():
                    if other != u and m:
                        weights[other] = weights.get(other, 0.0) + s * m / totals[layer][1 - side]
        result[u] = tuple(sorted((o, w / saved) for o, w in weights.items())) if saved else ()
    return result


# A unit's rounds spreading by more than this share of its latency make steps hard to see.
_NOISY = 0.2


def noise_note(units) -> str | None:
    """A note when the measurements were noisy: the median over units of the p10-p90 spread
    of a point's rounds, relative to the unit's latency, above ``_NOISY``."""
    rel = [u.spread / max(t for _, t in u.points) for u in units if u.points]
    if not rel:
        return None
    typical = float(np.median(rel))
    if typical <= _NOISY:
        return None
    return (
        f"noisy measurements: a point's rounds spread by {typical:.0%} of the unit's latency (p10-p90, median over "
        f"units); steps are claimed only beyond that noise. A busy machine: multi-threaded inference suffers most "
        f"(--threads 1 measures far more steadily, if you deploy so), or build the table at a quieter time"
    )


def build_table(
    model: str | os.PathLike[str],
    settings: LatencySettings | None = None,
    *,
    timer: Timer | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    criterion: str = "l2",
    registry: RuleRegistry | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    rounds: int = 7,
    seconds_per_unit: float = 1.0,
    progress: Progress | None = None,
    calibrate: bool | None = None,
) -> LatencyTable:
    """The latency table of the model file ``model`` as deployed per ``settings``: read from
    the cache when one was measured for the same key (see ``cache``), else measured (see the
    module docstring) and stored. ``timer``: what times models (default ``RuntimeTimer``);
    ``rounds`` and ``seconds_per_unit``: interleaved rounds, and the timing spent per unit.
    ``calibrate=False``: no whole-model calibration (scale 1: the subgraphs' own savings; the
    original alone gives the baseline); None (default): calibrate unless the timer says its
    costs are additive by construction (``timer.additive``, the StepTimer), where the summed
    savings are exact already; then, unless calibrated, without the shared-layer correction
    either (no ``partners``: its layers cost no in x out corner to count twice)."""
    settings = settings or LatencySettings()
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    if not rounds >= 2:
        raise UsageError(f"--rounds must be an integer >= 2, got {rounds!r}")
    if not seconds_per_unit > 0:
        raise UsageError(f"--seconds-per-unit must be a positive number of seconds, got {seconds_per_unit!r}")
    own = timer is None
    if timer is None:
        from .timers import RuntimeTimer

        timer = RuntimeTimer(settings)
    additive = getattr(timer, "additive", False)
    if calibrate is None:
        calibrate = not additive
    try:
        notes: list[str] = []
        folder = _cache.cache_dir(cache_dir)
        sha = _cache.model_sha256(path, folder) if cache else _cache.file_sha256(path)
        key = _cache.table_key(sha, settings, timer.runtime, input_shapes, criterion, registry)
        if not calibrate:
            key["calibrated"] = "no"
        if cache:
            table, note = _cache.load_cached(key, folder)
            if table is not None:  # (one cached before 2026-12-01 with its partners: as measured now)
                return replace(_summed(table) if additive and not calibrate else table, cached=True)
            if note:
                notes.append(note)
        table = _measure(
            path,
            settings,
            timer,
            key,
            input_shapes or {},
            criterion,
            registry,
            rounds,
            seconds_per_unit,
            progress,
            notes,
            calibrate,
        )
        table = _summed(table) if additive and not calibrate else table
        if cache:
            try:
                _cache.store(table, folder)
            except OSError as exc:  # a read-only home: the table is still good
                table = replace(table, notes=(*table.notes, f"not cached: {exc.strerror or exc}"))
        return table
    finally:
        if own:
            timer.close()  # type: ignore[attr-defined]


def _summed(table: LatencyTable) -> LatencyTable:
    """``table`` without the shared-layer correction: a timer whose costs add up (the StepTimer)
    has no in x out corner to count twice, the summed savings are its prediction."""
    return replace(table, units={n: replace(u, partners=()) for n, u in table.units.items()})


def _measure(
    path: str,
    settings: LatencySettings,
    timer: Timer,
    key: Mapping[str, str],
    given: Mapping[str, Sequence[int]],
    criterion: str,
    registry: RuleRegistry | None,
    rounds: int,
    seconds_per_unit: float,
    progress: Progress | None,
    notes: list[str],
    calibrate_scale: bool,
) -> LatencyTable:
    from .. import stages
    from ..budget import MacsTracker, group_scores
    from ..config import PruneConfig
    from ..criteria import default_criteria
    from ..metrics import node_macs
    from ..rules import default_registry
    from ..sensitivity_analysis import find_units
    from .subgraph import probe_boundaries, unit_graphs
    from .timers import _feeds

    start = time.perf_counter()
    loaded = stages.load(path)
    proto = loaded.proto
    shapes = resolve_input_shapes(proto, given, settings.batch, path)
    config = PruneConfig(criterion=criterion, input_shapes=shapes)
    run = stages.Run(config, registry or default_registry(), default_criteria())
    analysis = stages.analyse(loaded, run)
    scores = group_scores(analysis, stages.layer_scores(analysis, proto, config, run.criteria, None, run.registry))
    units = find_units(analysis, scores)
    graphs = unit_graphs(proto, analysis, units)
    tracker = MacsTracker(analysis, node_macs(proto, analysis.shapes, run.registry), proto, run.registry)
    feeds = _feeds(proto, shapes)
    plans = [measurement_counts(g.channels, len(g.unit.groups)) for g in graphs]
    total = 1 + sum(len(c) for c, _ in plans)
    done = 0
    if progress:
        progress(_STAGE, done, total)
    partners = partner_weights(tracker.macs0, tracker.total, tracker.effects, {g.unit.name: g.groups for g in graphs})
    boundary = probe_boundaries(proto, sorted({t for g in graphs for t in g.inputs}), feeds, analysis.shapes, path)
    from .sampling import reference_model

    reference = timer.load(reference_model(), {}, "the latency reference workload")
    result: dict[str, UnitLatency] = {}
    for graph, (counts, reach) in zip(graphs, plans):
        name = graph.unit.name
        try:
            unit = _measure_unit(
                analysis,
                graph,
                proto,
                boundary,
                counts,
                reach,
                tracker,
                timer,
                run.registry,
                path,
                rounds,
                seconds_per_unit,
                reference,
            )
            result[name] = replace(unit, partners=partners.get(name, ()))
        except OnnxPruneError as exc:
            notes.append(f"unit {name!r} not measured: {exc}")
        done += len(counts)
        if progress:
            progress(_STAGE, min(done, total), total)
    noise = noise_note(result.values())
    if noise:
        notes.append(noise)
    from ..planning import PruningPlan
    from ..surgery import prune_deferred
    from .calibrate import calibrate, half_plan

    ranked = {g.unit.name: g.unit.groups for g in graphs}
    removed, kept = half_plan(analysis, {n: (u, ranked[n]) for n, u in result.items()})
    half = None
    if removed and calibrate_scale:
        try:
            plan = PruningPlan("latency", tuple(removed))
            half = prune_deferred(proto, analysis, plan, registry=run.registry, initializers=loaded.initializers)
            half = half.complete()
        except OnnxPruneError as exc:
            notes.append(f"not calibrated: the model at half width cannot be made: {exc}")
    # The one whole-model measurement sets every saving's scale: twice the rounds, four units' time.
    cal = calibrate(path, half, kept, result, timer, shapes, 2 * rounds + 1, 4 * seconds_per_unit, reference)
    notes.extend(cal.notes)
    result = {n: _in_seconds(u, cal.reference) for n, u in result.items()}
    if progress:
        progress(_STAGE, total, total)
    if cal.precision != settings.precision and settings.backend == "openvino":
        notes.append(f"OpenVINO ran in {cal.precision}, not the {settings.precision} asked for")
    return LatencyTable(
        key,
        cal.baseline,
        result,
        settings,
        time.perf_counter() - start,
        tuple(notes),
        scale=cal.scale,
        calibration=cal.to_dict() if cal.measured_ratio is not None else None,
    )


def _in_seconds(unit: UnitLatency, reference: float) -> UnitLatency:
    """A unit measured in units of the reference workload, in seconds."""
    return replace(unit, points=tuple((k, t * reference) for k, t in unit.points), spread=unit.spread * reference)


def _measure_unit(
    analysis: ChannelAnalysis,
    graph: UnitGraph,
    proto: onnx.ModelProto,
    boundary: Mapping[str, BoundaryTensor],
    counts: Sequence[int],
    reach: int,
    tracker: MacsTracker,
    timer: Timer,
    registry: RuleRegistry,
    path: str,
    rounds: int,
    seconds_per_unit: float,
    reference: Timed,
) -> UnitLatency:
    """The unit's points in units of the ``reference`` workload timed in the same rounds."""
    macs0 = tracker.original
    from .sampling import interleave, relative, runs_per_round
    from .subgraph import UnitVariants, submodel

    variants = UnitVariants(analysis, graph, submodel(proto, graph, boundary), registry, path)
    timed, kept, macs = [], [], []
    for k in counts:
        removed = variants.removal(k)
        actual = graph.channels - len(removed)
        if actual in kept:
            continue
        source = f"{path} (unit {graph.unit.name!r} at {actual} channels)"
        timed.append(timer.load(variants.model(removed), {}, source))
        kept.append(actual)
        macs.append((macs0 - tracker.evaluate(removed)) / macs0 if macs0 else 0.0)
    everything = [reference, *timed]
    times = interleave(everything, rounds, runs_per_round(everything, rounds, seconds_per_unit))
    summaries = [relative(per, times[0]) for per in times[1:]]
    points = tuple(zip(kept, (s.latency for s in summaries)))
    noise = 2.0 * float(np.median([s.error for s in summaries]))
    step = detect_step(points, graph.channels, noise=noise, candidates=[s for s in STEP_CANDIDATES if s <= reach])
    spread = float(np.median([s.p90 - s.p10 for s in summaries]))
    return UnitLatency(graph.unit.name, graph.unit.layers, graph.channels, points, step, tuple(zip(kept, macs)), spread)
