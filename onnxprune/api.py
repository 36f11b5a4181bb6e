"""The public face: load, analyze, plan, apply, verify, prune."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np
import onnx

from .analysis import ChannelAnalysis, analyze as _analyze, import_graph, static_shapes
from .budget import MacsTracker, layer_budgets, plan_with_budget
from .compensation import data_free_values, removed_id_mask, sink_fills
from .config import PruneConfig
from .criteria import CriterionRegistry, default_criteria, source_filters, zero_plan
from .criteria.activations import ActivationStats, group_activation_scores, sink_statistics
from .errors import UsageError, VerificationFailed
from .graph import check_structure, file_size, concrete_input_shapes, dynamic_batch_inputs, load_model, save_model
from .metrics import model_cost, node_macs
from .planning import PruningPlan
from .report import KeptGroup, LayerChange, PruneReport
from .rules import RuleRegistry, default_registry
from .surgery import apply_pruning
from .verify import OutputFidelity, VerificationResult, compare_models, fidelity, load_npz_inputs, make_inputs, masked_reference

__all__ = ["PruneResult", "prune", "analyze", "plan", "apply", "verify", "load", "save"]


@dataclass(frozen=True)
class PruneResult:
    """A pruned model, its report, the plan that made it and the analysis it stands on."""

    model: onnx.ModelProto
    report: PruneReport
    plan: PruningPlan
    analysis: ChannelAnalysis

    def save(self, path: str | os.PathLike[str], *, external_data: bool | None = None) -> None:
        save_model(self.model, os.fspath(path), external_data, size=self.report.size_after)


def load(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    """Load and check a model (a path or a ModelProto, which is copied, never modified)."""
    return load_model(model)[0]


def save(model: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None) -> None:
    """Write ``model`` atomically (a temporary file in the same folder, then renamed). With
    ``external_data`` (automatic above the 2 GB protobuf limit) the weights go to
    ``<name>.data`` beside the model."""
    save_model(model, os.fspath(path), external_data)


def analyze(
    model: onnx.ModelProto | str | os.PathLike[str],
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    registry: RuleRegistry | None = None,
) -> ChannelAnalysis:
    """The channel groups of a model, each with its members and the reasons it is pinned."""
    proto, source = load_model(model)
    return _analyze(proto, input_shapes=input_shapes, registry=registry, source=source)


def plan(
    analysis: ChannelAnalysis,
    criterion: str = "zero",
    *,
    model: onnx.ModelProto | None = None,
    config: PruneConfig | None = None,
    criteria: CriterionRegistry | None = None,
    stats: ActivationStats | None = None,
    **options: object,
) -> PruningPlan:
    """Decide which groups to remove. Criteria other than ``zero`` need the ``model`` (its
    weights) and a budget in ``config`` or the options (``ratio``, ``global_ranking``,
    ``macs_target``, ``round_to``, ``exclude``, ``layer_rules``); data criteria need ``stats``."""
    config = replace(config or PruneConfig(), criterion=criterion, **options)  # type: ignore[arg-type]
    criteria = criteria or default_criteria()
    if criterion == "zero":
        return zero_plan(analysis)
    if criterion not in criteria.names():
        raise UsageError(f"unknown criterion {criterion!r}; choose from {', '.join(criteria.names())}")
    if config.ratio is None and config.macs_target is None and not any(r.sparsity for r in config.layer_rules):
        raise UsageError(f"criterion {criterion!r} needs a budget: --ratio, --macs-target or a config file")
    if model is None:
        raise UsageError(f"criterion {criterion!r} needs the model's weights (pass model=)")
    if criteria.is_data(criterion):
        if stats is None:
            raise UsageError(f"criterion {criterion!r} needs calibration inputs (--calibration FILE.npz)")
        per = stats.mean_abs if criterion == "mean-activation" else {k: 1.0 - v for k, v in stats.zero_fraction.items()}
        scores = group_activation_scores(analysis, per)
    else:
        fn = criteria.weight_criterion(criterion)
        assert fn is not None
        rng = np.random.default_rng(config.seed)
        budgets = layer_budgets(analysis, config)
        scores = {}
        for name, layer in source_filters(import_graph(model), analysis).items():
            b = budgets[name]
            sparsity = config.ratio or 0.0 if config.global_ranking else b.sparsity
            keep = b.channels - int(sparsity * b.channels)
            scores[name] = np.asarray(fn(layer, keep, rng), dtype=np.float64)
    tracker = None
    if config.macs_target is not None:
        tracker = MacsTracker(analysis, node_macs(model, analysis.shapes), model.graph.node)
    return plan_with_budget(analysis, scores, config, tracker)


def apply(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    *,
    registry: RuleRegistry | None = None,
    estimates: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """Remove the plan's groups from a copy of ``model`` (``estimates``: compensation values
    per sink tensor, see ``compensation``)."""
    return apply_pruning(model, analysis, pruning_plan, registry=registry, estimates=estimates)


def _verification_feeds(original: onnx.ModelProto, config: PruneConfig, source: str) -> tuple[list, str]:
    if config.verification_inputs:
        feeds = load_npz_inputs(config.verification_inputs, original)
        return feeds, f"{len(feeds)} samples from {config.verification_inputs}"
    batches = [1, 2] if dynamic_batch_inputs(original) else [None]
    feeds = [make_inputs(original, config.input_shapes, b, config.seed + i, source) for i, b in enumerate(batches)]
    return feeds, f"seeded random inputs (seed {config.seed}), batch {'1 and 2' if len(batches) == 2 else 'as in the model'}"


def verify(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    config: PruneConfig = PruneConfig(),
    source: str = "<model>",
) -> VerificationResult:
    """Compare two models on seeded random inputs (batch 1 and 2 for a dynamic batch) or on
    the samples of ``config.verification_inputs``; every output within the tolerance."""
    feeds, desc = _verification_feeds(original, config, source)
    return compare_models(original, pruned, feeds, config.tolerance, desc, source)


def prune(
    model: onnx.ModelProto | str | os.PathLike[str],
    criterion: str = "zero",
    *,
    config: PruneConfig | None = None,
    registry: RuleRegistry | None = None,
    criteria: CriterionRegistry | None = None,
    pruning_plan: PruningPlan | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **options: object,
) -> PruneResult:
    """Prune ``model`` and return the pruned model with its report.

    Options are the fields of PruneConfig, given as ``config`` or as keyword arguments. With
    ``pruning_plan`` (e.g. ``PruningPlan.from_dict(json.load(f))``) the plan is applied instead
    of planning. Raises VerificationFailed (nothing returned) when the surgery is wrong: the
    pruned model must equal the original (zero criterion) or the original with the removed
    channels replaced where they are read (masked or compensated) to the tolerance.
    """
    config = replace(config or PruneConfig(), criterion=criterion, **options)  # type: ignore[arg-type]
    registry = registry or default_registry()
    criteria = criteria or default_criteria()
    proto, source = load_model(model)
    analysis = _analyze(proto, input_shapes=config.input_shapes, registry=registry, source=source)

    calibration = load_npz_inputs(config.calibration, proto, limit=256) if config.calibration else None
    wants_stats = calibration is not None and (criteria.is_data(config.criterion) or config.compensation in ("auto", "calibration"))
    stats = None
    if wants_stats:
        stats = sink_statistics(proto, analysis, calibration, progress=progress and (lambda d, t: progress("calibration", d, t)))

    if pruning_plan is not None:
        the_plan = pruning_plan.resolve(analysis)
    else:
        the_plan = plan(analysis, config.criterion, model=proto, config=config, criteria=criteria, stats=stats)

    compensation = config.compensation
    if compensation == "auto":
        compensation = "calibration" if stats is not None else ("data-free" if not the_plan.exact else "none")
    estimates = None
    if not the_plan.exact and the_plan.removed_groups:
        if compensation == "calibration" and stats is not None:
            estimates = dict(stats.mean)
        elif compensation == "data-free":
            estimates = data_free_values(proto, analysis, the_plan, registry, config.input_shapes)
    pruned = apply_pruning(proto, analysis, the_plan, registry=registry, estimates=estimates)
    try:
        check_structure(pruned, full_check=True)
    except Exception as exc:
        raise VerificationFailed(f"{source}: the pruned model fails onnx.checker: {str(exc).splitlines()[0]}") from None

    result = fid = None
    reference_kind = "original"
    if config.verify:
        feeds, desc = _verification_feeds(proto, config, source)
        reference = proto
        if not the_plan.exact:
            removed_ids = removed_id_mask(analysis, the_plan)
            fills = sink_fills(analysis, removed_ids, estimates)
            sinks = {(s.node, s.input_index): s for s in analysis.sinks}
            removed = {k: removed_ids[analysis.layouts[sinks[k].tensor].axes[sinks[k].axis]] for k in fills}
            axes = {k: sinks[k].axis for k in fills}
            reference = masked_reference(proto, analysis.node_labels, fills, removed, axes)
            reference_kind = "original with removed channels replaced where read"
        result = compare_models(
            reference, pruned, feeds, config.tolerance, desc, source, progress=progress and (lambda d, t: progress("verification", d, t))
        )
        if not result.passed:
            w = result.worst
            raise VerificationFailed(
                f"{source}: verification failed: output {w.name!r} (batch {w.batch}) differs from the {reference_kind} "
                f"by {w.max_abs_diff:.3g}, more than {config.tolerance:g} x its scale {w.scale:.3g}; nothing written"
            )
        if not the_plan.exact:
            fid = fidelity(proto, pruned, feeds)
    report = _report(source, proto, pruned, analysis, the_plan, config, result, fid, compensation, reference_kind)
    return PruneResult(model=pruned, report=report, plan=the_plan, analysis=analysis)


def _report(
    source: str,
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    config: PruneConfig,
    verification: VerificationResult | None,
    fid: tuple[OutputFidelity, ...] | None,
    compensation: str,
    reference_kind: str,
) -> PruneReport:
    removed = removed_id_mask(analysis, pruning_plan)
    layers = []
    total = cut = 0
    for src in analysis.sources:
        n, gone = len(src.ids), int(removed[src.ids].sum())
        total += n
        cut += gone
        if gone:
            layers.append(LayerChange(src.node, src.op, n, n - gone))
    in_shapes = concrete_input_shapes(original, config.input_shapes, source)
    before = model_cost(original, analysis.shapes)
    after = model_cost(pruned, static_shapes(pruned, in_shapes))
    removed_set = set(pruning_plan.removed_groups)
    kept = tuple(
        KeptGroup(g.id, len(g.members), g.members, pruning_plan.kept_reasons.get(g.id, ()))
        for g in analysis.groups
        if g.id not in removed_set and pruning_plan.kept_reasons.get(g.id)
    )
    notes = []
    if not before.macs_complete:
        notes.append("some layers have unknown shapes; their MACs are not counted (give --input-shape)")
    budget = {
        "ratio": config.ratio,
        "global": config.global_ranking,
        "macs_target": config.macs_target,
        "round_to": config.round_to,
        "exclude": list(config.exclude),
        "config_entries": len(config.layer_rules),
    }
    return PruneReport(
        model=source,
        criterion=pruning_plan.criterion,
        channels_total=total,
        channels_removed=cut,
        groups_total=len(analysis.groups),
        groups_removed=len(pruning_plan.removed_groups),
        params_before=before.params,
        params_after=after.params,
        macs_before=before.macs,
        macs_after=after.macs,
        macs_complete=before.macs_complete and after.macs_complete,
        size_before=file_size(source) if os.path.isfile(source) else original.ByteSize(),
        size_after=pruned.ByteSize(),  # upb computes this by encoding: once, reused by save()
        layers=tuple(layers),
        kept_groups=kept,
        verification=verification,
        notes=tuple(notes),
        fidelity=fid,
        compensation=compensation if not pruning_plan.exact else "exact constants",
        reference=reference_kind,
        budget=budget if not pruning_plan.exact else None,
    )
