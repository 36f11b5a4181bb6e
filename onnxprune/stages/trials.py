"""The trial builders of a fidelity budget: the sensitivity analysis' trials
(``sensitivity_trials``) and the trials of recovered plans (``recovered_trials``), with what
they and the planning stages share: every layer's MACs for a budget (``known_macs``), the
compensation mode and its values (``compensation_mode``, ``estimates``). ``decide`` re-exports
them and calls ``sensitivity_trials`` through its own name (tools patch it there)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..analysis import ChannelAnalysis
from ..budget import MacsTracker, group_scores, layer_budgets
from ..compensation import data_free_values
from ..config import PruneConfig
from ..criteria.activations import ActivationStats
from ..errors import UsageError
from ..metrics import node_macs, unknown_macs_reason
from ..planning import PruningPlan
from ..rules import RuleRegistry
from .prepare import Feeds, LoadedModel, Run

if TYPE_CHECKING:
    from ..reconstruction_trials import ReconstructedTrials
    from ..selection_trials import SelectionTrials
    from ..sensitivity_analysis import SensitivityResult, TrialRunner

__all__ = [
    "SensitivityTrials",
    "compensation_mode",
    "estimates",
    "known_macs",
    "recovered_trials",
    "selection_trials",
    "sensitivity_trials",
]


def known_macs(
    model: onnx.ModelProto, analysis: ChannelAnalysis, registry: RuleRegistry, what: str, source: str
) -> dict[str, int | None]:
    """Every weight-bearing layer's MACs, for a budget that ranks or cuts on them; a UsageError
    naming the inputs to give shapes or data for when some are unknown (never ranked on the
    layers whose shapes happen to be known)."""
    per_node = node_macs(model, analysis.shapes, registry)
    inputs = {
        vi.name: analysis.shapes.get(vi.name, ())
        for vi in model.graph.input
        if vi.name not in {i.name for i in model.graph.initializer}
    }
    why = unknown_macs_reason(model, per_node, inputs)
    if why is not None:
        raise UsageError(f"{source}: {what} needs the MACs of every layer, but {why}")
    return per_node


def compensation_mode(config: PruneConfig, stats: ActivationStats | None, exact: bool = False) -> str:
    """The compensation mode with 'auto' resolved: calibration means when there are
    statistics, else data-free values for a lossy plan, else none."""
    if config.compensation != "auto":
        return config.compensation
    return "calibration" if stats is not None else ("data-free" if not exact else "none")


def estimates(
    proto: onnx.ModelProto,
    analysis: ChannelAnalysis,
    groups: Sequence[int],
    stats: ActivationStats | None,
    mode: str,
    run: Run,
) -> dict[str, np.ndarray] | None:
    """What removed channels are replaced by where they are read (see compensation)."""
    if not groups:
        return None
    if mode == "calibration" and stats is not None:
        return dict(stats.mean)
    if mode == "data-free":
        return data_free_values(
            proto, analysis, PruningPlan("tmp", tuple(groups)), run.registry, run.config.input_shapes
        )
    return None


@dataclass(frozen=True)
class SensitivityTrials:
    """The sensitivity analysis with what allocation needs to go on from it."""

    result: SensitivityResult
    runner: TrialRunner = field(repr=False)
    tracker: MacsTracker = field(repr=False)
    estimates: Mapping[str, np.ndarray] | None = field(repr=False)
    scores: Mapping[int, float]
    protected: Mapping[str, str]


def sensitivity_trials(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    scores: Mapping[str, np.ndarray],
    stats: ActivationStats | None,
    feeds: Feeds,
    run: Run,
    *,
    floor: float | None = None,
) -> SensitivityTrials:
    """Units of tied layers, their sensitivity curves, and the trial runner behind them. With
    ``floor``, a unit's larger ratios are not run once one falls below it; with a fidelity
    floor, trials far below it on their first samples end there (see
    sensitivity_analysis.measure_sensitivity)."""
    from ..sensitivity_analysis import Screen, TrialRunner, find_units, measure_sensitivity

    config, proto = run.config, loaded.proto
    group = group_scores(analysis, scores)
    protected = {n: b.excluded_by for n, b in layer_budgets(analysis, config).items() if b.excluded_by}
    units = [u for u in find_units(analysis, group) if not set(protected) & set(u.layers)]
    what = (
        "--macs-target"
        if config.macs_target is not None
        else "the sensitivity allocation (it ranks layers by the MACs they save)"
    )
    tracker = MacsTracker(analysis, known_macs(proto, analysis, run.registry, what, loaded.source), proto, run.registry)
    mode = compensation_mode(config, stats)
    values = estimates(proto, analysis, sorted({g for u in units for g in u.groups}), stats, mode, run)
    # Trials far below the floor on their first samples end there (trial_runner.Screen): a
    # fidelity floor's search only; a MACs target or the user's function ranks every trial.
    floored = config.macs_target is None and not config.validated_search
    screen = Screen.for_floor(config.fidelity_floor if floored else None, len(feeds))
    progress = run.progress_of("sensitivity")
    if progress:  # before the runner's own runs of the model (the reference, a detector's: seconds)
        progress(0, len(units) * len(config.ratios))
    runner = TrialRunner(
        proto,
        analysis,
        feeds,
        source=loaded.source,
        screen=screen,
        confidence=config.fidelity_confidence,
        batch=config.fidelity_batch,
    )
    result = measure_sensitivity(
        runner,
        analysis,
        units,
        tracker,
        config.ratios,
        values,
        config.criterion,
        config.fidelity_metrics,
        progress=progress,
        floor=floor,
    )
    return SensitivityTrials(result, runner, tracker, values, group, protected)


def recovered_trials(loaded: LoadedModel, analysis: ChannelAnalysis, feeds: Feeds, run: Run) -> ReconstructedTrials:
    """Trials of plans as the user gets them with ``--reconstruct`` / ``--recalibrate``: each
    plan's readers refitted (cross-fitted over ``feeds``) before it is judged."""
    from ..reconstruction_trials import ReconstructedTrials

    config = run.config
    return ReconstructedTrials(
        loaded.proto,
        analysis,
        feeds,
        registry=run.registry,
        seed=config.seed,
        source=loaded.source,
        reconstruct=config.reconstruct,
        recalibrate=config.recalibrate,
        reconstruct_from=config.reconstruct_from,
        confidence=config.fidelity_confidence,
        batch=config.fidelity_batch,
        sequential_levels=ReconstructedTrials.SEQUENTIAL_LEVELS,  # read here: a test may change it
    )


def selection_trials(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    trials: SensitivityTrials,
    stats: ActivationStats | None,
    feeds: Feeds,
    run: Run,
    scorer: Callable[[ActivationStats, Feeds], Mapping[str, np.ndarray]],
) -> SelectionTrials:
    """Trials of plans whose channels a data criterion chose, judged cross-fitted over ``feeds``
    (selection_trials): each half judged with the channels ``scorer`` (the criterion's layer
    scores from a half's statistics and samples) ranks first on the other half, and, with
    calibration-mean compensation, that half's means."""
    from ..criteria.activations import sink_statistics
    from ..selection_trials import Fold, SelectionTrials
    from ..shapes import dynamic_batch_inputs

    config, proto = run.config, loaded.proto
    half = len(feeds) // 2
    indices = (tuple(range(half)), tuple(range(half, len(feeds))))
    means = compensation_mode(config, stats) == "calibration"
    folds = []
    for judged, fitted in (indices, indices[::-1]):
        fit = [feeds[i] for i in fitted]
        fit_stats = sink_statistics(proto, analysis, fit, source=loaded.source)
        scores = group_scores(analysis, scorer(fit_stats, fit))
        folds.append(Fold(judged, scores, dict(fit_stats.mean) if means else None))
    names_in = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    return SelectionTrials(
        trials.runner,
        analysis,
        [u.unit for u in trials.result.units],
        feeds,
        folds,
        dynamic=set(dynamic_batch_inputs(proto)) >= set(names_in),
        confidence=config.fidelity_confidence,
        batch=config.fidelity_batch,
    )
