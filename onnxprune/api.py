"""The public face: load, analyze, plan, apply, verify, prune."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import onnx

from .analysis import ChannelAnalysis, analyze as _analyze, import_graph
from .budget import MacsTracker, layer_budgets, plan_with_budget
from .compensation import data_free_values, reader_masks, removed_id_mask
from .config import PruneConfig
from .criteria import CriterionRegistry, default_criteria, source_filters, zero_plan
from .criteria.activations import ActivationStats, group_activation_scores, sink_statistics
from .errors import UsageError, VerificationFailed
from .loading import load_model
from .shapes import dynamic_batch_inputs
from .validation import check_structure
from .saving import DeferredModel, check_output_folder, save_model, serialized_size
from .metrics import model_cost, node_macs
from .planning import PruningPlan, enforce_constraints
from .report import PruneReport, build_report
from .rules import RuleRegistry, default_registry
from .surgery import apply_pruning, prune_deferred
from .reconstruction import reconstruct
from .masking import masked_reference
from .verification import VerificationResult, compare_models, load_npz_inputs, make_inputs

__all__ = ["PruneResult", "prune", "analyze", "plan", "apply", "verify", "load", "save", "sensitivity", "layer_scores"]


@dataclass(frozen=True)
class PruneResult:
    """A pruned model, its report, the plan that made it and the analysis it stands on."""

    report: PruneReport
    plan: PruningPlan
    analysis: ChannelAnalysis
    pruned: DeferredModel = field(repr=False)

    @property
    def model(self) -> onnx.ModelProto:
        """The pruned model (its big new weights are put in on first access)."""
        return self.pruned.complete()

    def save(self, path: str | os.PathLike[str], *, external_data: bool | None = None) -> int:
        """Write the pruned model like ``onnxprune.save``; returns the bytes written."""
        return self.pruned.save(path, external_data)


def check_output_path(output: str | os.PathLike[str], model: object) -> None:
    """Refuse an output that is the input model or lies in a folder that does not exist."""
    out = os.fspath(output)
    if isinstance(model, (str, os.PathLike)):
        src = os.fspath(model)
        if os.path.abspath(out) == os.path.abspath(src) or (os.path.exists(out) and os.path.exists(src) and os.path.samefile(out, src)):
            raise UsageError(f"{out}: output must differ from the input model")
    check_output_folder(out)


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
    proto, source, _, initializers = load_model(model)
    return _analyze(proto, input_shapes=input_shapes, registry=registry, source=source, initializers=initializers)


def plan(
    analysis: ChannelAnalysis,
    criterion: str | None = None,
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
    config = (config or PruneConfig()).with_options(criterion, **options)
    criterion = config.criterion
    criteria = criteria or default_criteria()
    if criterion == "zero":
        return zero_plan(analysis)
    if criterion not in criteria.names():
        raise UsageError(f"unknown criterion {criterion!r}; choose from {', '.join(criteria.names())}")
    if config.ratio is None and config.macs_target is None and not any(r.sparsity for r in config.layer_rules):
        raise UsageError(f"criterion {criterion!r} needs a budget: --ratio, --macs-target or a config file")
    if model is None:
        raise UsageError(f"criterion {criterion!r} needs the model's weights (pass model=)")
    scores = layer_scores(analysis, model, config, criteria, stats)
    tracker = None
    if config.macs_target is not None:
        tracker = MacsTracker(analysis, node_macs(model, analysis.shapes), model.graph.node)
    return plan_with_budget(analysis, scores, config, tracker)


def layer_scores(
    analysis: ChannelAnalysis,
    model: onnx.ModelProto,
    config: PruneConfig,
    criteria: CriterionRegistry,
    stats: ActivationStats | None = None,
) -> dict[str, np.ndarray]:
    """Every source layer's channel scores under ``config.criterion`` (higher = keep)."""
    criterion = config.criterion
    if criteria.is_data(criterion):
        if stats is None:
            raise UsageError(f"criterion {criterion!r} needs calibration inputs (--calibration FILE.npz)")
        per = stats.mean_abs if criterion == "mean-activation" else {k: 1.0 - v for k, v in stats.zero_fraction.items()}
        return group_activation_scores(analysis, per)
    fn = criteria.weight_criterion(criterion)
    if fn is None:
        raise UsageError(f"unknown criterion {criterion!r}; choose from {', '.join(criteria.names())}")
    rng = np.random.default_rng(config.seed)
    budgets = layer_budgets(analysis, config)
    scores = {}
    for name, layer in source_filters(import_graph(model), analysis).items():
        b = budgets[name]
        sparsity = (config.ratio or 0.0) if config.global_ranking else b.sparsity
        keep = b.channels - int(sparsity * b.channels) if sparsity else b.channels // 2
        scores[name] = np.asarray(fn(layer, keep, rng), dtype=np.float64)
    if scores and not any(np.isfinite(s).any() for s in scores.values()):
        why = (
            "no layer's output goes straight into a BatchNormalization (folded into the weights at export?)"
            if criterion == "bn-gamma"
            else "it gives no finite score to any channel"
        )
        raise UsageError(f"criterion {criterion!r} has nothing to score in this model: {why}; try --criterion l2 or fpgm")
    return scores


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
        feeds = load_npz_inputs(config.verification_inputs, original, source=source)
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
    criterion: str | None = None,
    *,
    config: PruneConfig | None = None,
    registry: RuleRegistry | None = None,
    criteria: CriterionRegistry | None = None,
    pruning_plan: PruningPlan | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    output: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
    **options: object,
) -> PruneResult:
    """Prune ``model`` and return the pruned model with its report; with ``output``, also
    write it there once it is verified (atomically; ``external_data`` as in ``save``), and the
    report's size is the bytes written.

    Options are the fields of PruneConfig, given as ``config`` or as keyword arguments. With
    ``pruning_plan`` (e.g. ``PruningPlan.from_dict(json.load(f))``) the plan is applied instead
    of planning. Raises VerificationFailed (nothing returned) when the surgery is wrong: the
    pruned model must equal the original (zero criterion) or the original with the removed
    channels replaced where they are read (masked or compensated) to the tolerance.
    """
    config = (config or PruneConfig()).with_options(criterion, **options)
    registry = registry or default_registry()
    criteria = criteria or default_criteria()
    if output is not None:
        check_output_path(output, model)
    # The weights the analysis reads are kept for the surgery, which reads most of them again.
    proto, source, size_before, initializers = load_model(model)
    analysis = _analyze(proto, input_shapes=config.input_shapes, registry=registry, source=source, initializers=initializers)

    cal_feeds, eval_feeds, data_note = _calibration(proto, config, source)
    given_plan = pruning_plan.resolve(analysis) if pruning_plan is not None else None
    lossy = not given_plan.exact if given_plan is not None else config.lossy
    wants_stats = cal_feeds is not None and lossy and (criteria.is_data(config.criterion) or config.compensation in ("auto", "calibration"))
    stats = None
    if wants_stats:
        stats = sink_statistics(proto, analysis, cal_feeds, progress=progress and (lambda d, t: progress("calibration", d, t)), source=source)

    sens = None
    if given_plan is not None:
        the_plan = given_plan
    elif config.allocated:
        the_plan, sens = _allocated_plan(proto, analysis, config, criteria, stats, cal_feeds, registry, progress, source)
    else:
        the_plan = plan(analysis, config.criterion, model=proto, config=config, criteria=criteria, stats=stats)

    compensation = config.compensation
    if compensation == "auto":
        compensation = "calibration" if stats is not None else ("data-free" if not the_plan.exact else "none")
    estimates = _estimates(proto, analysis, the_plan.removed_groups, stats, compensation, registry, config) if not the_plan.exact else None
    before = model_cost(proto, analysis.shapes)
    if size_before is None:  # given a ModelProto
        size_before = serialized_size(proto)
    # Nothing reads the original after an unverified exact removal: build the result in it
    # (no second copy of the weights).
    consume = not config.verify and the_plan.exact and not config.reconstruct
    deferred = prune_deferred(proto, analysis, the_plan, registry=registry, estimates=estimates, consume=consume, initializers=initializers)
    del initializers
    # The pruned model's big new weights stay arrays until written (see saving.DeferredModel);
    # the checks below read its structure only.
    pruned = deferred.proto
    try:
        check_structure(pruned, full_check=True)
    except Exception as exc:
        raise VerificationFailed(f"{source}: the pruned model fails onnx.checker: {str(exc).splitlines()[0]}") from None

    # With an output (and no reconstruction, which changes the weights after verification) the
    # file verified is the file written: staged beside the destination, read from there by
    # onnxruntime, and moved into place only once verified. The original is read from its
    # file too, so neither model is encoded in memory for onnxruntime.
    staged = deferred.staged(output, external_data) if output is not None and not config.reconstruct else None
    with staged if staged is not None else contextlib.nullcontext():
        candidate = staged.path if staged is not None else None
        original = source if os.path.isfile(source) else proto
        result = fid = None
        reference_kind = "original"
        feeds, desc = [], "none"
        on_noise = False  # fidelity measured on seeded random inputs, not on data
        if eval_feeds:
            feeds, desc = eval_feeds, f"{len(eval_feeds)} evaluation samples ({data_note or 'given'})"
        elif config.verify or not the_plan.exact:
            feeds, desc = _verification_feeds(proto, config, source)
            on_noise = not config.verification_inputs
        if config.verify:
            reference = original
            if not the_plan.exact:
                reference = masked_reference(proto, analysis, reader_masks(analysis, removed_id_mask(analysis, the_plan), estimates))
                reference_kind = "original with removed channels replaced where read"
            result = compare_models(
                reference, candidate or deferred.complete(), feeds, config.tolerance, desc, source,
                progress=progress and (lambda d, t: progress("verification", d, t)),
            )
            if not result.passed:
                w = result.worst
                raise VerificationFailed(
                    f"{source}: verification failed: output {w.name!r} (batch {w.batch}) differs from the {reference_kind} "
                    f"by {w.max_abs_diff:.3g}, more than {config.tolerance:g} x its scale {w.scale:.3g}; nothing written"
                )
        reconstructed = ()
        if config.reconstruct and not the_plan.exact and cal_feeds:
            # The surgery is proven above; reconstruction then only changes kept weights' values.
            pruned, reconstructed = reconstruct(proto, deferred.complete(), analysis, the_plan, cal_feeds, seed=config.seed, source=source)
            check_structure(pruned, full_check=True)
            deferred = DeferredModel(pruned)
        score = None
        if not the_plan.exact:
            fid, score = _fidelity(original, candidate or deferred.complete(), feeds, config, source)
        if staged is not None:
            staged.commit()
            size_after = staged.size
        elif output is not None:
            size_after = deferred.save(output, external_data)
        else:  # upb's ByteSize would encode the whole model: count the encoded pieces instead
            size_after = deferred.size()
    report = build_report(source, before, (size_before, size_after), pruned, analysis, the_plan, config, result, fid, compensation, reference_kind)
    extra = {
        "fidelity_score": None if score is None else score[0],
        "fidelity_metrics": None if score is None else {o.name: {"metric": o.metric, "value": o.value} for o in score[1]},
        "evaluation": desc,
        "data_note": data_note,
        "reconstructed_layers": [
            {"node": r.node, "positions": r.positions, "error_before": r.error_before, "error_after": r.error_after} for r in reconstructed
        ],
        "sensitivity": None if sens is None else sens.to_dict(),
    }
    if fid is not None and on_noise:
        report = replace(
            report,
            fidelity_on_random_inputs=True,
            notes=report.notes + ("fidelity was measured on seeded random inputs, not real data: give --inputs or --calibration for meaningful numbers",),
        )
    report = replace(report, extra=extra)
    return PruneResult(report=report, plan=the_plan, analysis=analysis, pruned=deferred)


def sensitivity(
    model: onnx.ModelProto | str | os.PathLike[str],
    calibration: str,
    criterion: str = "l2",
    *,
    config: PruneConfig | None = None,
    registry: RuleRegistry | None = None,
    criteria: CriterionRegistry | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **options: object,
):  # noqa: ANN201 - returns sensitivity_analysis.SensitivityResult
    """For every unit of tied layers: the fidelity on the calibration inputs after removing
    each of ``config.sensitivity_ratios`` of it alone (lowest ``criterion`` scores first, with
    compensation), and the MACs that saves."""

    config = (config or PruneConfig()).with_options(criterion, calibration=calibration, **options)
    registry = registry or default_registry()
    criteria = criteria or default_criteria()
    proto, source, _, initializers = load_model(model)
    analysis = _analyze(proto, input_shapes=config.input_shapes, registry=registry, source=source, initializers=initializers)
    from .calibration import load_calibration, parse_preprocess

    # Sensitivity evaluates nothing afterwards: every sample is a calibration sample.
    pre = parse_preprocess(config.preprocess) if config.preprocess else None
    cal_feeds = load_calibration(calibration, proto, pre, limit=config.calibration_limit, seed=config.seed, model_source=source)
    stats = None
    if criteria.is_data(criterion) or config.compensation in ("auto", "calibration"):
        stats = sink_statistics(proto, analysis, cal_feeds, progress=progress and (lambda d, t: progress("calibration", d, t)), source=source)
    return _measure(proto, analysis, config, criteria, stats, cal_feeds, registry, progress, source).result


@dataclass(frozen=True)
class _Measured:
    """The sensitivity analysis with what allocation needs to go on from it."""

    result: "object"  # sensitivity_analysis.SensitivityResult
    runner: "object"  # sensitivity_analysis.TrialRunner
    tracker: MacsTracker
    estimates: "Mapping[str, np.ndarray] | None"
    scores: Mapping[int, float]
    protected: dict[str, str]


def _measure(proto, analysis, config, criteria, stats, cal_feeds, registry, progress, source="<model>") -> _Measured:  # noqa: ANN001
    """Units of tied layers, their sensitivity curves, and the trial runner behind them."""
    from .budget import group_scores as _group_scores
    from .sensitivity_analysis import TrialRunner, find_units, measure_sensitivity

    scores = _group_scores(analysis, layer_scores(analysis, proto, config, criteria, stats))
    protected = {n: b.excluded_by for n, b in layer_budgets(analysis, config).items() if b.excluded_by}
    units = [u for u in find_units(analysis, scores) if not set(protected) & set(u.layers)]
    tracker = MacsTracker(analysis, node_macs(proto, analysis.shapes), proto.graph.node)
    compensation = config.compensation if config.compensation != "auto" else ("calibration" if stats is not None else "data-free")
    estimates = _estimates(proto, analysis, sorted({g for u in units for g in u.groups}), stats, compensation, registry, config)
    runner = TrialRunner(proto, analysis, cal_feeds, source=source)
    result = measure_sensitivity(
        runner, analysis, units, tracker, config.sensitivity_ratios, estimates, config.criterion, config.fidelity_metrics,
        progress=progress and (lambda d, t: progress("sensitivity", d, t)),
    )
    return _Measured(result, runner, tracker, estimates, scores, protected)


def _calibration(proto: onnx.ModelProto, config: PruneConfig, source: str) -> tuple[list | None, list | None, str]:
    """Calibration and evaluation samples: the user's two sets, or one set split 3:1."""
    if not config.calibration:
        return None, None, ""
    from .calibration import load_calibration, parse_preprocess, split_calibration

    pre = parse_preprocess(config.preprocess) if config.preprocess else None
    feeds = load_calibration(config.calibration, proto, pre, limit=config.calibration_limit, seed=config.seed, model_source=source)
    given = load_npz_inputs(config.verification_inputs, proto, limit=config.calibration_limit, source=source) if config.verification_inputs else None
    return split_calibration(feeds, given)


def _fidelity(proto: onnx.ModelProto | str, pruned: onnx.ModelProto | str, feeds: list, config: PruneConfig, source: str):  # noqa: ANN202
    """Per-output fidelity figures and the run's fidelity score, from one pass over the feeds."""
    from .fidelity import fidelity, run_score

    outputs = fidelity(proto, pruned, feeds, config.fidelity_metrics, source=source)
    return outputs, run_score(outputs)


def _estimates(
    proto: onnx.ModelProto,
    analysis: ChannelAnalysis,
    groups: "tuple[int, ...] | list[int]",
    stats: ActivationStats | None,
    compensation: str,
    registry: RuleRegistry,
    config: PruneConfig,
) -> dict[str, np.ndarray] | None:
    """What removed channels are replaced by where they are read (see compensation)."""
    if not groups:
        return None
    if compensation == "calibration" and stats is not None:
        return dict(stats.mean)
    if compensation == "data-free":
        return data_free_values(proto, analysis, PruningPlan("tmp", tuple(groups)), registry, config.input_shapes)
    return None


def _allocated_plan(proto, analysis, config, criteria, stats, cal_feeds, registry, progress, source="<model>"):  # noqa: ANN001, ANN202
    """A plan from the sensitivity analysis under a fidelity budget (see sensitivity_analysis.allocate)."""
    from .sensitivity_analysis import allocate

    m = _measure(proto, analysis, config, criteria, stats, cal_feeds, registry, progress, source)
    sens, runner, tracker, estimates, scores, protected = m.result, m.runner, m.tracker, m.estimates, m.scores, m.protected
    if config.reconstruct and config.macs_target is None and len(cal_feeds) >= 2:
        # The budget is met by the reconstructed model: measure that, not the masked one.
        from .reconstruction import ReconstructedTrials

        runner = ReconstructedTrials(proto, analysis, cal_feeds, registry=registry, seed=config.seed, source=source)
    groups, _, _ = allocate(
        sens, analysis, runner, tracker, estimates, min_fidelity=config.min_fidelity, macs_target=config.macs_target, choices=config.fidelity_metrics
    )
    reasons: dict[int, list[str]] = {g.id: list(g.pinned_by) for g in analysis.groups if g.pinned}
    if config.round_to > 1:  # kept counts made multiples by putting back the best-scored groups
        from .budget import round_kept_counts

        groups = sorted(enforce_constraints(analysis, round_kept_counts(analysis, config, set(groups), scores, reasons), reasons))
    for g in analysis.groups:
        if g.id not in groups and not reasons.get(g.id):
            members = {n for n, _ in g.members}
            if members & set(protected):
                reasons[g.id] = [f"protected: {protected[next(iter(members & set(protected)))]}"]
            else:
                goal = f"fidelity >= {config.min_fidelity}" if config.macs_target is None else f"MACs <= {config.macs_target}"
                reasons[g.id] = [f"kept by the sensitivity-allocated budget ({goal})"]
    kept = {g.id: tuple(reasons.get(g.id, ())) for g in analysis.groups if g.id not in set(groups)}
    the_plan = PruningPlan(
        criterion=f"{config.criterion}",
        removed_groups=tuple(groups),
        kept_reasons=kept,
        scores={g: scores[g] for g in groups if g in scores},
        members={g: analysis.group(g).members for g in groups},
    )
    return the_plan, sens
