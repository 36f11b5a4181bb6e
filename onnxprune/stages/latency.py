"""The plan stage under a latency budget: the per-unit latency table measured on this machine,
the planner (``latency.planner``), and the A/B confirmation loop (``latency.confirm``) that
times candidates against the original until the measured ratio is within the target."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..budget import group_scores, layer_budgets
from ..errors import UsageError
from ..latency.confirm import Attempt, confirm
from ..latency.evaluations import EvaluationBudget, Spender
from ..latency.interactions import MeasuredOrder, default_budget
from ..latency.moves import CONTINUOUS_WEIGHT, move_space
from ..latency.planner import Constraint, LatencyPlan, UnitChoice, plan_for_latency
from .decide import Planned, SensitivityTrials, final_refit, layer_scores, recovered_trials, sensitivity_trials
from .prepare import CalibrationData, LoadedModel, Run
from .trials import selection_trials

if TYPE_CHECKING:
    from ..analysis import ChannelAnalysis
    from ..latency import LatencySettings, LatencyTable
    from ..latency.confirm import Measurement
    from ..user_validation import Validator

__all__ = ["MOST_OF_THE_REMOVABLE", "LatencyOutcome", "corrected_floor", "latency_plan", "overhead_note"]

# A target taking more than this share of what pruning can save at most (the table's floor:
# every unit at its smallest count) leaves little of the channels: say so.
MOST_OF_THE_REMOVABLE = 0.5


@dataclass(frozen=True)
class LatencyOutcome:
    """What a latency-budgeted plan was predicted and measured to do: per unit the kept
    channels and the table's curve, the final A/B measurement (median ratio, p10-p90, the
    precision the runtime computed in) and every attempt of the confirmation loop."""

    target: float
    settings: LatencySettings
    baseline_ms: float
    predicted_ratio: float
    measured_ratio: float
    measured_p10: float
    measured_p90: float
    precision: str
    met: bool
    units: tuple[UnitChoice, ...]
    attempts: tuple[Attempt, ...]
    table: LatencyTable = field(repr=False)
    constraint: str | None = None  # what the answers had to keep (fidelity floor, validation function)
    constraint_value: float | None = None  # its value for the chosen plan
    limited: bool = False  # the constraint stopped the plan before the latency target
    notes: tuple[str, ...] = ()
    # the table's prediction with every unit at its smallest count, its savings scaled as the
    # chosen plan's were measured: about the fastest pruning can make the model
    floor_ratio: float | None = None
    # the moves' order: fidelity evaluations of combined plans spent (of the budget), and the
    # moves taken with their cost measured on the plan they joined (0: each unit alone)
    evaluations: int = 0
    evaluation_budget: int = 0
    measured_moves: int = 0
    # with --reconstruct / --recalibrate the order's evaluations score the recovered model; with
    # those or a time budget (--latency-evaluation-seconds) the report has the seconds they took,
    # their time budget (None: the count alone bounds them) and which bound limited them
    # ("count", "time": MeasuredOrder.bound; None: the plans were reached first)
    recovered_order: bool = False
    evaluation_seconds: float = 0.0
    evaluation_seconds_budget: float | None = None
    order_bound: str | None = None
    # the answers' limit's own recovered evaluations (with --reconstruct / --recalibrate and a
    # fidelity floor), drawn on the same budget as the order's: how many, in how long, how many
    # of them checks started with the budget spent (the prefix is measured, never assumed), and
    # what the budget had run out of when it refused bisecting the move past the limit
    limit_evaluations: int | None = None
    limit_seconds: float = 0.0
    limit_past_budget: int = 0
    limit_bound: str | None = None

    def to_dict(self) -> dict:
        units = []
        for u in self.units:
            curve = self.table.units.get(u.unit)
            entry = u.to_dict()
            if curve is not None:
                entry["measured_ms"] = [[k, t * 1e3] for k, t in curve.points]
                entry["predicted_ms"] = curve.predict(u.kept) * 1e3
                entry["predicted_full_ms"] = curve.predict(curve.channels) * 1e3
            units.append(entry)
        return {
            "target": self.target,
            "settings": self.settings.to_dict(),
            "table_key": dict(self.table.key),
            "baseline_ms": self.baseline_ms,
            "predicted_ratio": self.predicted_ratio,
            "measured_ratio": self.measured_ratio,
            "measured_p10": self.measured_p10,
            "measured_p90": self.measured_p90,
            "precision": self.precision,
            "met": self.met,
            "constraint": self.constraint,
            "constraint_value": self.constraint_value,
            "limited_by_constraint": self.limited,
            "floor_ratio": self.floor_ratio,
            "order": {
                "evaluations": self.evaluations,
                "budget": self.evaluation_budget,
                "measured_moves": self.measured_moves,
                **(
                    {
                        "recovered": True,
                        "seconds": self.evaluation_seconds,
                        "seconds_budget": self.evaluation_seconds_budget,
                        "bound": self.order_bound,
                    }
                    if self.recovered_order
                    else {
                        "seconds": self.evaluation_seconds,
                        "seconds_budget": self.evaluation_seconds_budget,
                        "bound": self.order_bound,
                    }
                    if self.evaluation_seconds_budget is not None
                    else {}
                ),
            },
            **(
                {
                    "limit": {
                        "recovered": True,
                        "evaluations": self.limit_evaluations,
                        "seconds": self.limit_seconds,
                        "past_budget": self.limit_past_budget,
                        "budget": self.evaluation_budget,
                        "seconds_budget": self.evaluation_seconds_budget,
                        "bound": self.limit_bound,
                    }
                }
                if self.limit_evaluations is not None
                else {}
            ),
            "attempts": [a.to_dict() for a in self.attempts],
            "units": units,
            "notes": list(self.notes),
        }


def _protected_groups(analysis: ChannelAnalysis, protected: Mapping[str, str]) -> dict[int, str]:
    return {
        g.id: protected[n] for g in analysis.groups if not g.pinned for n in {m for m, _ in g.members} if n in protected
    }


def latency_plan(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    scores: Mapping[str, np.ndarray],
    data: CalibrationData,
    run: Run,
    judge: Validator | None = None,
) -> Planned:
    """The plan whose measured latency is <= ``config.latency_target`` x the original's
    (with ``min_fidelity`` or ``max_drop``: the fastest whose measured fidelity holds; with
    a validation function ``judge``: whose value stays within its drop)."""
    from ..latency.measure import build_table, timing_shapes
    from ..sensitivity_analysis import find_units

    config = run.config
    target = float(config.latency_target)  # type: ignore[arg-type]
    group = group_scores(analysis, scores)
    protected = {n: b.excluded_by for n, b in layer_budgets(analysis, config).items() if b.excluded_by}
    sens = None
    sensitivity = None
    constraint = None
    trials = None
    judging = None
    limit = None
    floored = False  # a fidelity floor judges the plans (not the user's validation function)
    if data.calibration:  # importance is the measured fidelity loss per unit, not the scores
        trials = sensitivity_trials(loaded, analysis, scores, data.stats, data.calibration, run)
        sensitivity = trials.result
        units = [us.unit for us in sensitivity.units]
        sens = {us.unit.name: us for us in sensitivity.units}
        judging, recovered = _judging_runner(loaded, analysis, data, run, trials)
        ledger = _evaluation_budget(run, len(units), recovered)
        judged = _Judgements(judging, trials, run)
        floored = not (judge is not None and config.validated_search) and config.fidelity_floor is not None
        limit = Spender(ledger) if recovered and floored else None  # the floor's refits: on the order's budget
        constraint = _constraint(run, judge, judged, limit)
    else:
        units = [u for u in find_units(analysis, group) if not set(protected) & set(u.layers)]
    if not units:
        raise UsageError(f"{loaded.source}: --latency-target: no unit of the model has channels that may go")
    guarded = _protected_groups(analysis, protected)
    with tempfile.TemporaryDirectory(prefix="onnxprune-latency-") as tmp:
        original = loaded.runnable
        if not isinstance(original, str):  # the table and the A/B runs time files
            original = os.path.join(tmp, "original.onnx")
            _save(loaded.proto, original)
        shapes = timing_shapes(loaded.proto, config.input_shapes, config.latency.batch)
        table = build_table(
            original,
            config.latency,
            timer=run.timer,
            input_shapes=shapes,
            criterion=config.criterion if config.criterion in ("l1", "l2", "fpgm") else "l2",
            registry=run.registry,
            progress=run.progress,
        )

        order = (
            _measured_order(analysis, units, table, group, sens, run, judged, ledger, recovered)
            if trials is not None
            else None
        )

        def plan_at(aim: float) -> LatencyPlan:
            return plan_for_latency(
                analysis,
                config,
                units,
                table,
                group,
                aim,
                sensitivity=sens,
                constraint=constraint,
                protected=guarded,
                order=order,
            )

        count = 0

        def measure(lp: LatencyPlan) -> Measurement:
            nonlocal count
            count += 1
            path = os.path.join(tmp, f"candidate{count}.onnx")
            _candidate(loaded, analysis, lp, run).save(path)
            return _measure(original, path, run, shapes)

        # what pruning can save at most (no constraint: the table's floor, nothing measured)
        floor = plan_for_latency(
            analysis, config, units, table, group, 0.0, sensitivity=sens, protected=guarded
        ).predicted_ratio
        confirmed = confirm(target, plan_at, measure, progress=run.progress_of("latency A/B"))
    chosen, m = confirmed.chosen, confirmed.measurement
    floor = corrected_floor(floor, chosen.predicted_ratio, m.ratio)
    overhead = overhead_note(target, floor, constraint is not None)
    the_plan = replace(chosen.plan, notes=(*chosen.plan.notes, *confirmed.notes, *overhead))
    outcome = LatencyOutcome(
        target=target,
        settings=config.latency,
        baseline_ms=table.baseline * 1e3,
        predicted_ratio=chosen.predicted_ratio,
        measured_ratio=m.ratio,
        measured_p10=m.ratio_p10,
        measured_p90=m.ratio_p90,
        precision=m.precision,
        met=confirmed.met,
        units=chosen.units,
        attempts=confirmed.attempts,
        table=table,
        constraint=chosen.constraint,
        constraint_value=chosen.constraint_value,
        limited=chosen.limited,
        notes=(*table.notes, *confirmed.notes, *overhead),
        floor_ratio=floor,
        evaluations=order.evaluations if order is not None else 0,
        evaluation_budget=order.budget if order is not None else 0,
        measured_moves=order.measured if order is not None else 0,
        recovered_order=order is not None and order.rescaled,
        evaluation_seconds=order.spent if order is not None else 0.0,
        evaluation_seconds_budget=ledger.seconds if trials is not None else None,
        order_bound=order.bound if order is not None else None,
        limit_evaluations=limit.evaluations if limit is not None else None,
        limit_seconds=limit.spent if limit is not None else 0.0,
        limit_past_budget=limit.past if limit is not None else 0,
        limit_bound=limit.bound if limit is not None else None,
    )
    cross_fitted, levels = None, None
    if floored and judging is not trials.runner and not recovered:  # type: ignore[union-attr]
        # The floor judged each half by the channels the criterion chose on the other (see
        # _judging_runner); the delivered plan's channels were chosen on all of them (in-sample
        # there): the report shows both, as decide's search does.
        from ..search_judgement import CrossFitted
        from ..selection_trials import SCORED_BY

        judged_plan = judged(set(the_plan.removed_groups))
        cross_fitted = CrossFitted(
            judged_plan, len(data.calibration or []), SCORED_BY, "the channels were chosen on them"
        )
    if limit is not None:  # the fidelity floor judged the recovered model (see _constraint)
        # The floor judged the recovered model cross-fitted; the delivered one is refitted on all
        # the calibration samples (in-sample there): the report shows both, as decide's search does.
        # A sequential refit capped in the trials is judged again uncapped (decide.final_refit).
        from ..search_judgement import CrossFitted

        score = judged(set(the_plan.removed_groups))
        the_plan, score, levels = final_refit(judging, the_plan, score, trials.estimates, config)  # type: ignore[union-attr]
        cross_fitted = CrossFitted(score, len(data.calibration or []))
    return Planned(
        the_plan, sensitivity, validator=judge, latency=outcome, cross_fitted=cross_fitted, reconstruct_levels=levels
    )  # type: ignore[arg-type]


def _judging_runner(
    loaded: LoadedModel, analysis: ChannelAnalysis, data: CalibrationData, run: Run, trials: SensitivityTrials
) -> tuple[Any, bool]:
    """What the order and the fidelity floor judge combined plans by, and whether it is a
    recovered model: with --reconstruct or --recalibrate the *recovered* model, cross-fitted on
    the calibration samples as the --min-fidelity search judges it (the fidelity the user gets:
    recovery wins back much of what masking loses, and not alike for every unit); with a data
    criterion (contribution, reconstruction, ...) each half of the samples by the channels the
    criterion chose on the other half, as that search judges it (channels chosen on the samples
    look better on them than elsewhere: a plan that holds only in-sample is not chosen; the same
    number of sample runs per judgement); else the sensitivity trials' masked runner."""
    config, feeds = run.config, data.calibration or []
    if len(feeds) < 2:
        return trials.runner, False
    if config.reconstruct or config.recalibrate:
        return recovered_trials(loaded, analysis, feeds, run), True
    if not run.criteria.is_data(config.criterion):
        return trials.runner, False

    def scorer(stats: Any, fit: Any) -> Mapping[str, np.ndarray]:
        return layer_scores(
            analysis, loaded.proto, config, run.criteria, stats, run.registry, feeds=fit, source=loaded.source
        )

    return selection_trials(loaded, analysis, trials, data.stats, feeds, run, scorer), False


def _evaluation_budget(run: Run, units: int, recovered: bool) -> EvaluationBudget:
    """The fidelity evaluations of combined plans the order and the answers' limit share: 2 per
    unit (``default_budget``), and a recovered runner's (each refits the model) one more per unit
    (each unit's first move measured on the recovered model: ``MeasuredOrder``'s seeding), or the
    count the user gives (--latency-evaluations); a time budget only when the user gives one
    (--latency-evaluation-seconds): the same command makes the same plan on a slower or busier
    machine."""
    given = run.config.latency_evaluations
    seconds = run.config.latency_evaluation_seconds
    # recovered: one more per unit, to measure each unit's first move on the recovered model
    # (MeasuredOrder's seeding) before ordering
    count = default_budget(units) + (units if recovered else 0) if given is None else given
    return EvaluationBudget(count, seconds, _clock(run))


class _Judgements:
    """``runner.judged`` of a plan's groups (the estimates and metric choices of the run), made
    once per plan: the order's evaluation of a plan and the limit's of the same plan are one (a
    recovered one refits the model)."""

    def __init__(self, runner: Any, trials: SensitivityTrials, run: Run) -> None:
        self._runner, self._values, self._choices = runner, trials.estimates, run.config.fidelity_metrics
        self._seen: dict[frozenset[int], Any] = {}

    def known(self, groups: set[int]) -> bool:
        return frozenset(groups) in self._seen

    def __call__(self, groups: set[int]) -> Any:
        key = frozenset(groups)
        if key not in self._seen:
            self._seen[key] = self._runner.judged(groups, self._values, self._choices)
        return self._seen[key]


def _measured_order(
    analysis: ChannelAnalysis,
    units: list,
    table: LatencyTable,
    group: Mapping[int, float],
    sens: Mapping[str, Any] | None,
    run: Run,
    judged: _Judgements,
    ledger: EvaluationBudget,
    recovered: bool,
) -> MeasuredOrder | None:
    """The moves ordered by their cost on the plan they join, scored by ``judged`` (``_Judgements``
    of the judging runner) on the calibration samples (the task fidelity, or its estimate on
    unseen inputs where lower, plus ``CONTINUOUS_WEIGHT`` x the outputs' cosine: what ``moves``
    measures alone; a recovered runner's costs are on another scale than the masked ones measured
    alone: rescaled), within ``ledger`` (``_evaluation_budget``); None with a budget of 0."""
    if ledger.count <= 0:
        return None

    def score(groups: set[int]) -> float:
        j = judged(groups)
        task = min(j.pooled, j.estimate if j.estimate is not None else 1.0)
        return task + CONTINUOUS_WEIGHT * (j.cosine if j.cosine is not None else 0.0)

    space = move_space(analysis, run.config, units, table, group, sensitivity=sens)
    return MeasuredOrder(space, score, ledger.count, rescaled=recovered, shared=ledger)


def _clock(run: Run) -> Any:
    """The clock time budgets are measured on: the latency timer's (``clock()``: a test's stand-in
    counts fake seconds), else the process's."""
    return getattr(run.timer, "clock", None) or time.perf_counter


def corrected_floor(floor: float, predicted: float, measured: float) -> float:
    """The table's floor with its savings scaled as the chosen plan's were really measured
    (units timed alone often save more than they do in the whole model), at most 2x either way."""
    if predicted >= 1.0 or measured >= 1.0:
        return floor
    scale = min(max((1.0 - measured) / (1.0 - predicted), 0.5), 2.0)
    return max(1.0 - (1.0 - floor) * scale, 0.0)


def overhead_note(target: float, floor: float, constrained: bool) -> tuple[str, ...]:
    """A note when the target takes most of what the prunable channels can save (a model
    whose latency is mostly fixed per-inference cost): most channels must go, and with them
    usually the answers."""
    removable = 1.0 - floor
    share = (1.0 - target) / removable if removable > 0 else float("inf")
    if share <= MOST_OF_THE_REMOVABLE:
        return ()
    what = (
        f"about {removable:.0%} of this model's latency at most goes with its prunable channels (floor "
        f"{floor:.3f}x: every unit at its smallest count, as the latency table predicts it corrected by the A/B "
        f"measurement; the rest is per-inference cost pruning cannot remove)"
    )
    if share >= 1.0:
        return (f"{what}: the target {target:g}x is below it",)
    advice = (
        ""
        if constrained
        else "; add --min-fidelity F (or --max-drop, --validate) for the fastest model that keeps them"
    )
    return (
        f"{what}: target {target:g}x takes {min(share, 9.99):.0%} of that, which usually costs the answers{advice}",
    )


def _constraint(run: Run, judge: Validator | None, judged: _Judgements, limit: Spender | None) -> Constraint | None:
    """What the answers must keep: the user's validation function within its drop, or the
    fidelity floor (``min_fidelity``, or 1 - ``max_drop``) on the calibration inputs, judged by
    ``judged`` (``_Judgements`` of ``_judging_runner``: recovered with --reconstruct /
    --recalibrate; a plan the order evaluated is not evaluated again). ``limit``: the recovered
    floor's share of the evaluation budget: its new evaluations are charged to it, and once the
    budget is spent the move past the limit is bisected no further (the prefix's checks still run:
    the answers are measured, never assumed)."""
    config = run.config
    if judge is not None and config.validated_search:
        judge.baseline  # noqa: B018 - computed first: a broken function fails before the search
        name = f"{judge.name} within {judge.max_drop} of the original's {judge.baseline:.6g}"
        return Constraint(name, lambda g: judge.within(g), lambda g: judge.value(g))
    floor = config.fidelity_floor
    if floor is None:
        return None

    def fidelity(groups: set[int]) -> float:
        if limit is None or judged.known(groups):
            return float(judged(groups).pooled)
        return float(limit.run(lambda: judged(groups)).pooled)

    refine = None if limit is None else (lambda g: judged.known(g) or not limit.refuse())
    return Constraint(f"fidelity >= {floor:g}", lambda g: fidelity(g) >= floor, fidelity, refine)


def _save(proto: Any, path: str) -> None:
    from ..saving import save_model

    save_model(proto, path, None)


def _candidate(loaded: LoadedModel, analysis: ChannelAnalysis, lp: LatencyPlan, run: Run) -> Any:
    """The candidate to time: the plan's surgery, without compensation (it changes values,
    not the time)."""
    from ..surgery import prune_deferred

    return prune_deferred(loaded.proto, analysis, lp.plan, registry=run.registry, initializers=loaded.initializers)


def _measure(original: str, candidate: str, run: Run, shapes: Mapping[str, tuple[int, ...]]) -> Measurement:
    from ..latency.ab import measure_ab

    return measure_ab(
        original,
        candidate,
        run.config.latency,
        timer=run.timer,  # type: ignore[arg-type]
        input_shapes=shapes,
    )
