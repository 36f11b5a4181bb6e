"""The stages that decide: score the channels, plan which groups go (a budget, a fidelity
budget from measured sensitivity, or a given plan), and what replaces them (compensation)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..analysis import ChannelAnalysis, import_graph
from ..budget import (
    MacsTracker,
    finish_plan,
    layer_budgets,
    pinned_reasons,
    plan_with_budget,
)
from ..config import PruneConfig
from ..criteria import CriterionRegistry, source_filters, zero_plan
from ..criteria.activations import ActivationStats, group_activation_scores
from ..errors import UsageError
from ..option_checks import unknown_criterion
from ..planning import PruningPlan
from ..rules import RuleRegistry, default_registry
from .prepare import CalibrationData, Feeds, LoadedModel, Run
from .trials import (
    SensitivityTrials,
    compensation_mode,
    estimates,
    known_macs,
    recovered_trials,
    selection_trials,
    sensitivity_trials,
)

if TYPE_CHECKING:
    from ..reconstruction_trials import ReconstructedTrials
    from ..search_judgement import CrossFitted, SearchScore
    from ..sensitivity_analysis import SensitivityResult
    from ..trial_runner import TrialRunner
    from ..user_validation import Validator
    from .latency import LatencyOutcome

__all__ = [
    "Compensation",
    "Planned",
    "SensitivityTrials",
    "budget_plan",
    "check_budget",
    "compensate",
    "compensation_mode",
    "estimates",
    "final_refit",
    "known_macs",
    "layer_scores",
    "plan",
    "recovered_trials",
    "score",
    "sensitivity_trials",
    "small_calibration_note",
    "validator",
]


@dataclass(frozen=True)
class Planned:
    """The plan, with a fidelity budget the sensitivity analysis it was allocated from, with
    a validation function the judge (its cache holds every plan it scored), and with a latency
    budget what was predicted and measured (``latency.LatencyOutcome``). With ``--reconstruct``
    / ``--recalibrate`` and a fidelity floor, ``cross_fitted``: the search's judgement of the
    plan (the report shows it beside the final refit's in-sample fidelity). ``reconstruct_levels``:
    the sequential refit's levels the result gets (None: every level; the trials' cap when the
    full refit of the chosen plan judged below the floor the trials' refit met)."""

    plan: PruningPlan
    sensitivity: SensitivityResult | None = None
    validator: Validator | None = field(default=None, repr=False, compare=False)
    latency: LatencyOutcome | None = None
    cross_fitted: CrossFitted | None = None
    reconstruct_levels: int | None = None


@dataclass(frozen=True)
class Compensation:
    """What removed channels are replaced by where they are read: the mode ('calibration',
    'data-free' or 'none'; 'auto' resolved) and the values per sink tensor (None: zero)."""

    mode: str
    estimates: Mapping[str, np.ndarray] | None = None


def check_budget(config: PruneConfig, criteria: CriterionRegistry) -> None:
    """Refuse a lossy criterion that is unknown or has no budget."""
    criterion = config.criterion
    if criterion not in criteria.names():
        raise unknown_criterion(criterion, criteria.names())
    if (
        config.ratio is None
        and config.macs_target is None
        and config.latency_target is None
        and not any(r.sparsity for r in config.layer_rules)
    ):
        raise UsageError(
            f"criterion {criterion!r} needs a budget: --ratio, --macs-target, --latency-target or a config file"
        )


def layer_scores(
    analysis: ChannelAnalysis,
    model: onnx.ModelProto,
    config: PruneConfig,
    criteria: CriterionRegistry,
    stats: ActivationStats | None = None,
    registry: RuleRegistry | None = None,
    *,
    feeds: Feeds | None = None,
    source: str = "<model>",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Every source layer's channel scores under ``config.criterion`` (higher = keep);
    ``registry``: the analysis' rules (their layer semantics give each layer's filters);
    ``feeds``: the calibration samples (the ``reconstruction`` criterion reads activations);
    ``progress``: the reconstruction / contribution criterion's steps (reconstruction_scores)."""
    criterion = config.criterion
    if criteria.is_data(criterion):
        readers = criterion in ("reconstruction", "contribution")  # read the readers' inputs
        if stats is None or (readers and not feeds):
            raise UsageError(f"criterion {criterion!r} needs calibration inputs (--calibration FILE.npz)")
        if readers:
            from ..criteria.reconstruction_error import reconstruction_scores

            return reconstruction_scores(
                model,
                analysis,
                feeds or [],
                registry=registry or default_registry(),
                seed=config.seed,
                source=source,
                refit=criterion == "reconstruction",
                progress=progress,
            )
        per = stats.mean_abs if criterion == "mean-activation" else {k: 1.0 - v for k, v in stats.zero_fraction.items()}
        return group_activation_scores(analysis, per)
    fn = criteria.weight_criterion(criterion)
    if fn is None and criterion == "zero":  # a registered name, but one that ranks nothing
        lossy = ", ".join(n for n in criteria.names() if n != "zero")
        raise UsageError(
            f"criterion 'zero' removes only provably constant channels and scores none; rank by a lossy criterion: {lossy}"
        )
    if fn is None:
        raise unknown_criterion(criterion, criteria.names())
    rng = np.random.default_rng(config.seed)
    budgets = layer_budgets(analysis, config)
    scores = {}
    for name, layer in source_filters(import_graph(model), analysis, registry or default_registry()).items():
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
        raise UsageError(
            f"criterion {criterion!r} has nothing to score in this model: {why}; try --criterion l2 or fpgm"
        )
    return scores


def score(
    loaded: LoadedModel, analysis: ChannelAnalysis, data: CalibrationData, run: Run, *, given: PruningPlan | None = None
) -> Mapping[str, np.ndarray] | None:
    """Every source layer's channel scores, or None when the plan needs none (the zero
    criterion, a given plan)."""
    config = run.config
    if given is not None or (config.criterion == "zero" and not config.allocated):
        return None
    if not config.allocated:  # a fidelity budget is a budget, and picks its criterion itself
        check_budget(config, run.criteria)
    # The criteria that read the readers' inputs run the model and solve per layer (PicoDet's
    # reconstruction criterion: a minute and a half): a stage of their own on the progress, a
    # step per sample run and per source layer scored.
    progress = run.progress_of("criterion") if config.criterion in ("reconstruction", "contribution") else None
    return layer_scores(
        analysis,
        loaded.proto,
        config,
        run.criteria,
        data.stats,
        run.registry,
        feeds=data.calibration,
        source=loaded.source,
        progress=progress,
    )


def budget_plan(
    analysis: ChannelAnalysis,
    model: onnx.ModelProto,
    scores: Mapping[str, np.ndarray],
    config: PruneConfig,
    registry: RuleRegistry | None = None,
    source: str = "<model>",
) -> PruningPlan:
    """The plan for a ratio, global or MACs budget (see budget.plan_with_budget); ``registry``:
    the analysis' rules (their layer semantics count the MACs)."""
    tracker = None
    if config.macs_target is not None:
        registry = registry or default_registry()
        tracker = MacsTracker(analysis, known_macs(model, analysis, registry, "--macs-target", source), model, registry)
    return plan_with_budget(analysis, scores, config, tracker)


def plan(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    scores: Mapping[str, np.ndarray] | None,
    data: CalibrationData,
    run: Run,
    *,
    given: PruningPlan | None = None,
) -> Planned:
    """The groups to remove: the ``given`` plan matched to this analysis, the zero criterion's,
    a budget's, or allocated under a fidelity budget from measured sensitivity."""
    measure = validator(loaded, analysis, data, run) if run.config.validate is not None else None
    if given is not None:
        try:
            resolved = given.resolve(analysis)
        except UsageError as exc:  # the plan's words; its file and the model it does not fit are named here
            raise given.mismatch(exc, loaded.source) from None
        return Planned(resolved, validator=measure)
    if run.config.latency_target is not None:
        from .latency import latency_plan

        return latency_plan(loaded, analysis, scores or {}, data, run, measure)
    if run.config.allocated:
        return _allocated_plan(loaded, analysis, scores or {}, data, run, measure)
    if scores is None:
        return Planned(zero_plan(analysis), validator=measure)
    return Planned(
        budget_plan(analysis, loaded.proto, scores, run.config, run.registry, loaded.source), validator=measure
    )


def validator(loaded: LoadedModel, analysis: ChannelAnalysis, data: CalibrationData, run: Run) -> Validator:
    """The user's validation function as a judge of plans: each candidate is built exactly as
    the run builds its result (surgery with the run's compensation, then with ``reconstruct``
    and ``recalibrate`` the recovery on the calibration samples), so a plan's cached value is
    the delivered model's."""
    from ..surgery import apply_pruning
    from ..user_validation import Validator, resolve_function

    config, proto = run.config, loaded.proto
    fn, name = resolve_function(config.validate)  # type: ignore[arg-type]  # checked in PruneConfig
    mode = compensation_mode(config, data.stats)

    def build(groups: frozenset[int]) -> onnx.ModelProto:
        plan = PruningPlan(config.criterion or "candidate", tuple(groups))
        values = estimates(proto, analysis, plan.removed_groups, data.stats, mode, run)
        pruned = apply_pruning(proto, analysis, plan, registry=run.registry, estimates=values)
        if (config.reconstruct or config.recalibrate) and data.calibration:
            from ..recovery import recover_model

            pruned, _, _ = recover_model(
                proto,
                pruned,
                analysis,
                plan,
                data.calibration,
                reconstruct=config.reconstruct,
                recalibrate=config.recalibrate,
                reconstruct_from=config.reconstruct_from,
                registry=run.registry,
                seed=config.seed,
                source=loaded.source,
            )
        return pruned

    return Validator(fn, name, loaded.runnable, build, config.pruning_drop)


def compensate(
    loaded: LoadedModel, analysis: ChannelAnalysis, pruning_plan: PruningPlan, data: CalibrationData, run: Run
) -> Compensation:
    """What the removed channels are replaced by where they are read (exact plans: nothing)."""
    mode = compensation_mode(run.config, data.stats, pruning_plan.exact)
    if pruning_plan.exact:
        return Compensation(mode)
    return Compensation(mode, estimates(loaded.proto, analysis, pruning_plan.removed_groups, data.stats, mode, run))


def small_calibration_note(config: PruneConfig, samples: int, read: int) -> str:
    """A note when ``samples`` calibration samples cannot resolve the fidelity floor: with no
    disagreement among n samples the 95% upper bound on the disagreement rate is 3/n (the rule
    of three), so a floor F needs n >= 3 / (1 - F); "" when there are enough."""
    floor = config.fidelity_floor
    if floor is None or floor >= 1.0:
        return ""
    need = math.ceil(3.0 / (1.0 - floor) - 1e-9)
    if samples >= need:
        return ""
    capped = (
        f" (at most --calibration-limit {config.calibration_limit} samples are read)"
        if read >= config.calibration_limit
        else ""
    )
    return (
        f"calibration set small for fidelity >= {floor:g}: the search judged plans on {samples} calibration samples, "
        f"a reliable {floor:g} needs about {need} (rule of three: with no disagreement among n samples the disagreement "
        f"rate is below 3/n at 95% confidence, so resolving 1 - F = {1.0 - floor:.3g} takes n >= 3 / (1 - F)); "
        f"the plan may lose more on other data: give more samples{capped}"
    )


def batch_rule_unjudged(config: PruneConfig, runner: TrialRunner) -> str:
    """A note when ``--fidelity-batch`` has nothing to judge: no output is top-1, CTC or
    detection (a continuous score over a batch is an average, not a count of inputs); ""
    otherwise, or without the option."""
    if config.fidelity_batch is None:
        return ""
    from ..fidelity_metrics.batch_prediction import BATCH_RULE_METRICS

    metrics = runner.metrics(config.fidelity_metrics)
    if any(m.metric in BATCH_RULE_METRICS for m in metrics):
        return ""
    scored = ", ".join(f"{m.name}: {m.metric}" for m in metrics)
    return (
        f"--fidelity-batch {config.fidelity_batch} judged no top-1 / CTC / detection output ({scored}); "
        "a continuous score over a batch is an average, not a count of inputs: it is judged by the predicted mean of "
        f"a batch of {config.fidelity_batch} (the batch-mean rule)"
    )


def _allocated_plan(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    scores: Mapping[str, np.ndarray],
    data: CalibrationData,
    run: Run,
    judge: Validator | None = None,
) -> Planned:
    """A plan from the sensitivity analysis under a fidelity budget, or a drop of the user's
    validation function (``judge``) (see sensitivity_analysis.allocate)."""
    from ..sensitivity_analysis import allocate

    config, feeds = run.config, data.calibration or []
    if judge is not None:
        judge.baseline  # noqa: B018 - computed first: a broken function fails before the trials
    # The masked fidelity of a unit alone bounds the search's only when the search judges the
    # masked model: recovery can win back what masking loses, a validation function judges
    # something else, and a MACs target takes the best fidelity whatever it is.
    searched = judge is not None and config.validated_search and config.macs_target is None
    recovering = config.reconstruct or config.recalibrate
    floor = None if (searched or recovering or config.macs_target is not None) else config.fidelity_floor
    trials = sensitivity_trials(loaded, analysis, scores, data.stats, feeds, run, floor=floor)
    runner = trials.runner
    if judge is not None and trials.tracker.original:
        judge.macs_ratio = lambda g: trials.tracker.evaluate(g) / trials.tracker.original
    if recovering and config.macs_target is None and len(feeds) >= 2 and not searched:
        # The budget is met by the recovered model: measure that, not the masked one.
        runner = recovered_trials(loaded, analysis, feeds, run)
    elif run.criteria.is_data(config.criterion) and config.macs_target is None and len(feeds) >= 2 and not searched:
        # The channels were chosen on the calibration samples: judge each half by the other's choice.
        def scorer(stats: ActivationStats, fit: Feeds) -> Mapping[str, np.ndarray]:
            return layer_scores(
                analysis, loaded.proto, config, run.criteria, stats, run.registry, feeds=fit, source=loaded.source
            )

        runner = selection_trials(loaded, analysis, trials, data.stats, feeds, run, scorer)
    groups, _, _ = allocate(
        trials.result,
        analysis,
        runner,
        trials.tracker,
        trials.estimates,
        min_fidelity=config.fidelity_floor,
        macs_target=config.macs_target,
        choices=config.fidelity_metrics,
        judge=judge.within if searched and judge is not None else None,
        progress=run.progress_of("search"),
    )
    if config.macs_target is not None:
        goal = f"MACs <= {config.macs_target}"
    elif searched and judge is not None:
        goal = f"{judge.name} within {judge.max_drop} of the original's {judge.baseline:.6g}"
    else:
        goal = f"fidelity >= {config.fidelity_floor:g}"

    def kept_reason(gid: int) -> str:
        protected = next((n for n, _ in analysis.group(gid).members if n in trials.protected), None)
        return (
            f"protected: {trials.protected[protected]}"
            if protected
            else f"kept by the sensitivity-allocated budget ({goal})"
        )

    the_plan = finish_plan(analysis, config, groups, trials.scores, pinned_reasons(analysis), kept_reason)
    if not searched and config.macs_target is None:
        small = small_calibration_note(config, len(feeds), len(feeds) + len(data.evaluation or []))
        if small:
            the_plan = replace(the_plan, notes=(*the_plan.notes, small))
        unjudged = batch_rule_unjudged(config, trials.runner)
        if unjudged:
            the_plan = replace(the_plan, notes=(*the_plan.notes, unjudged))
    if config.macs_target is not None and trials.tracker.original:
        reached = trials.tracker.evaluate(the_plan.removed_groups) / trials.tracker.original
        if reached > config.macs_target:
            why = (
                f"--round-to {config.round_to} put groups back"
                if config.round_to > 1
                else "no allocation the search found goes further"
            )
            the_plan = replace(
                the_plan,
                notes=(
                    *the_plan.notes,
                    f"MACs target {config.macs_target:g} not reached: {reached:.3f}x, because {why}",
                ),
            )
    cross_fitted, levels = None, None
    if runner is not trials.runner:  # judged recovered (ReconstructedTrials): what the search saw
        from ..search_judgement import CrossFitted
        from ..selection_trials import SCORED_BY, SelectionTrials

        judged = runner.judged(the_plan.removed_groups, trials.estimates, config.fidelity_metrics)
        if isinstance(runner, SelectionTrials):
            cross_fitted = CrossFitted(judged, len(feeds), SCORED_BY, "the channels were chosen on them")
        else:
            the_plan, judged, levels = final_refit(
                runner, the_plan, judged, trials.estimates, config, run.progress_of("final judgement")
            )
            cross_fitted = CrossFitted(judged, len(feeds))
    return Planned(the_plan, trials.result, judge, cross_fitted=cross_fitted, reconstruct_levels=levels)


def final_refit(
    runner: ReconstructedTrials,
    the_plan: PruningPlan,
    judged: SearchScore,
    values: Mapping[str, np.ndarray] | None,
    config: PruneConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PruningPlan, SearchScore, int | None]:
    """The refit the result gets and its judgement: the trials capped the sequential refit's
    levels (ReconstructedTrials.SEQUENTIAL_LEVELS), so the chosen plan is judged again with every
    level in sequence, the refit delivered; when that misses the floor the trials' refit met (or
    judges below it when neither meets it), the result gets the trials' refit, which the search
    judged, and the plan says so. Otherwise (no cap) the trials' judgement and refit stand. ``progress``
    hears that judgement (one step: two refits of every level; PicoDet's take a minute or two)."""
    if progress and runner.sequential_levels is not None:
        progress(0, 1)
    full = runner.final_judged(the_plan.removed_groups, values, config.fidelity_metrics)
    if progress and full is not None:
        progress(1, 1)
    if full is None:
        return the_plan, judged, None
    floor = config.fidelity_floor
    if (floor is None or full.value >= floor) or full.value >= judged.value:
        return the_plan, full, None
    cap = runner.sequential_levels
    note = (
        f"the sequential refit of every level judged {full.value:.4g} (cross-fitted), below the fidelity floor "
        f"{floor:g} that the search's refit (the shallowest {cap} levels in sequence, the deeper ones independently) "
        f"met at {judged.value:.4g}: the result gets the search's refit"
        if judged.value >= floor
        else f"the sequential refit of every level judged {full.value:.4g} (cross-fitted), below the search's refit "
        f"(the shallowest {cap} levels in sequence) at {judged.value:.4g}: the result gets the search's refit"
    )
    return replace(the_plan, notes=(*the_plan.notes, note)), judged, cap
