"""The public face: load, analyze, plan, apply, verify, prune (the stages of stages/)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import onnx

from . import stages
from .analysis import ChannelAnalysis
from .config import PruneConfig
from .criteria import CriterionRegistry, default_criteria, zero_plan
from .criteria.activations import ActivationStats, sink_statistics
from .errors import UsageError
from .layer_names import check_layers_named
from .option_checks import check_exclusions_apply, check_plan_options
from .planning import PruningPlan
from .quantized import verification_form
from .report import PruneReport
from .rules import RuleRegistry, default_registry, load_rules
from .saving import DeferredModel, Outputs, check_writable, save_model
from .stages import LoadedModel, layer_scores
from .surgery import prune_deferred
from .verification import VerificationResult, check_interface, compare_models, limits

if TYPE_CHECKING:
    from .sensitivity_analysis import SensitivityResult

__all__ = ["PruneResult", "analyze", "apply", "layer_scores", "load", "plan", "prune", "save", "sensitivity", "verify"]


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
        if os.path.abspath(out) == os.path.abspath(src) or (
            os.path.exists(out) and os.path.exists(src) and os.path.samefile(out, src)
        ):
            raise UsageError(f"{out}: output must differ from the input model")
    check_writable(out)


def _model_argument(model: object, what: str) -> onnx.ModelProto:
    """``model`` as a ModelProto: itself, or loaded from a path; anything else a UsageError
    (not an AttributeError from deep inside)."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        return stages.load(model).proto
    raise UsageError(f"{what}: expected a path or onnx.ModelProto, got {type(model).__name__}")


def _check_kinds(
    registry: object = None, criteria: object = None, pruning_plan: object = None, progress: object = None
) -> None:
    """Refuse arguments of the wrong kind up front, naming them: an empty dict as ``registry``
    was taken for no registry (the default rules), a plan's dict failed deep inside."""
    for value, kind, name in (
        (registry, RuleRegistry, "registry"),
        (criteria, CriterionRegistry, "criteria"),
        (pruning_plan, PruningPlan, "pruning_plan"),
    ):
        if value is not None and not isinstance(value, kind):
            hint = " (PruningPlan.from_dict(json.load(f)) reads a plan file)" if name == "pruning_plan" else ""
            raise UsageError(f"{name} must be a {kind.__name__}, got {type(value).__name__}{hint}")
    if progress is not None and not callable(progress):
        raise UsageError(f"progress must be a function (stage, done, total), got {type(progress).__name__}")


def load(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    """Load and check a model (a path or a ModelProto, which is copied, never modified)."""
    return stages.load(model).proto


def save(model: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None) -> None:
    """Write ``model`` atomically (a temporary file in the same folder, then renamed). With
    ``external_data`` (automatic above the 2 GB protobuf limit) the weights go to
    ``<name>.data`` beside the model."""
    if not isinstance(model, onnx.ModelProto):
        raise UsageError(f"save: expected an onnx.ModelProto, got {type(model).__name__}")
    save_model(model, os.fspath(path), external_data)


def analyze(
    model: onnx.ModelProto | str | os.PathLike[str],
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    registry: RuleRegistry | None = None,
) -> ChannelAnalysis:
    """The channel groups of a model, each with its members and the reasons it is pinned."""
    _check_kinds(registry=registry)
    run = stages.Run(PruneConfig(input_shapes=input_shapes or {}), registry or default_registry(), default_criteria())
    return stages.analyse(stages.load(model), run)


def plan(
    analysis: ChannelAnalysis,
    criterion: str | None = None,
    *,
    model: onnx.ModelProto | str | os.PathLike[str] | None = None,
    config: PruneConfig | None = None,
    criteria: CriterionRegistry | None = None,
    stats: ActivationStats | None = None,
    registry: RuleRegistry | None = None,
    feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
    **options: object,
) -> PruningPlan:
    """Decide which groups to remove. Criteria other than ``zero`` need the ``model`` (its
    weights) and a budget in ``config`` or the options (``ratio``, ``global_ranking``,
    ``macs_target``, ``round_to``, ``exclude``, ``layer_rules``); data criteria need ``stats``
    (``reconstruction`` also the calibration samples, ``feeds``).
    ``registry``: the rules the analysis used (their layer semantics give filters and MACs)."""
    if not isinstance(analysis, ChannelAnalysis):
        raise UsageError(f"plan: expected the ChannelAnalysis of onnxprune.analyze, got {type(analysis).__name__}")
    _check_kinds(registry=registry, criteria=criteria)
    config = (config or PruneConfig()).with_options(criterion, **options)
    criterion = config.criterion
    criteria = criteria or default_criteria()
    check_layers_named(analysis, config, "the model")
    if criterion == "zero":
        check_exclusions_apply(config)
        return zero_plan(analysis)
    stages.check_budget(config, criteria)
    if model is None:
        raise UsageError(f"criterion {criterion!r} needs the model's weights (pass model=)")
    model = _model_argument(model, "plan")
    registry = load_rules(config.rules, registry)
    return stages.budget_plan(
        analysis, model, layer_scores(analysis, model, config, criteria, stats, registry, feeds=feeds), config, registry
    )


@overload
def apply(
    model: onnx.ModelProto | LoadedModel | str | os.PathLike[str],
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    *,
    registry: RuleRegistry | None = ...,
    estimates: Mapping[str, np.ndarray] | None = ...,
    deferred: Literal[False] = ...,
    consume: bool = ...,
) -> onnx.ModelProto: ...
@overload
def apply(
    model: onnx.ModelProto | LoadedModel | str | os.PathLike[str],
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    *,
    registry: RuleRegistry | None = ...,
    estimates: Mapping[str, np.ndarray] | None = ...,
    deferred: Literal[True],
    consume: bool = ...,
) -> DeferredModel: ...
def apply(
    model: onnx.ModelProto | LoadedModel | str | os.PathLike[str],
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    *,
    registry: RuleRegistry | None = None,
    estimates: Mapping[str, np.ndarray] | None = None,
    deferred: bool = False,
    consume: bool = False,
) -> onnx.ModelProto | DeferredModel:
    """Remove the plan's groups from a copy of ``model`` (``estimates``: compensation values
    per sink tensor, see ``compensation``). ``prune`` runs this step as well.

    ``model`` may be a path (loaded as ``onnxprune.load`` does) or a ``stages.LoadedModel``, whose weights already read by the analysis are
    reused. ``deferred``: return a ``saving.DeferredModel``, the big new weights kept as arrays
    until written (``.save``) or asked for (``.complete()``). ``consume``: build the result in
    ``model`` itself (no second copy of the weights); ``model`` is not to be used afterwards."""
    _check_kinds(registry=registry, pruning_plan=pruning_plan)
    if pruning_plan is None:
        raise UsageError("apply: pruning_plan must be a PruningPlan (onnxprune.plan), got None")
    loaded = model if isinstance(model, LoadedModel) else None
    proto = loaded.proto if loaded is not None else _model_argument(model, "apply")
    try:  # a plan of another model named groups by ids that mean other channels here
        pruning_plan = pruning_plan.resolve(analysis)
    except UsageError as exc:
        raise pruning_plan.mismatch(
            exc, os.fspath(model) if isinstance(model, (str, os.PathLike)) else "the model"
        ) from None
    initializers = loaded.initializers if loaded is not None else None
    pruned = prune_deferred(
        proto,
        analysis,
        pruning_plan,
        registry=registry,
        estimates=estimates,
        consume=consume,
        initializers=initializers,
    )
    return pruned if deferred else pruned.complete()


def verify(
    original: onnx.ModelProto | str | os.PathLike[str],
    pruned: onnx.ModelProto | str | os.PathLike[str],
    config: PruneConfig = PruneConfig(),
    source: str = "<model>",
) -> VerificationResult:
    """Compare two models (ModelProtos or paths) on seeded random inputs (batch 1 and 2 for a
    dynamic batch) or on the samples of ``config.verification_inputs``; every output within the
    tolerance."""
    if source == "<model>" and isinstance(original, (str, os.PathLike)):
        source = os.fspath(original)
    pruned_name = os.fspath(pruned) if isinstance(pruned, (str, os.PathLike)) else "the pruned model"
    original = _model_argument(original, "verify")
    pruned = _model_argument(pruned, "verify")
    check_interface(original, pruned, source if source != "<model>" else "the original", pruned_name)
    feeds, desc = stages.verification_feeds(original, config, source)
    tolerance, noise_multiple = limits(config.tolerance)
    return compare_models(
        original,
        pruned,
        feeds,
        tolerance,
        desc,
        source,
        noise_multiple=noise_multiple,
        form=verification_form(original),
    )


@stages.metric_errors_named
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
    outputs: Outputs | None = None,
    timer: object | None = None,
    **options: object,
) -> PruneResult:
    """Prune ``model`` and return the pruned model with its report; with ``output``, also
    write it there once it is verified (atomically; ``external_data`` as in ``save``), and the
    report's size is the bytes written. With ``outputs`` (a ``saving.Outputs``) the verified
    model stays staged in it, to be moved into place with the caller's other files by
    ``outputs.commit()``.

    Options are the fields of PruneConfig, given as ``config`` or as keyword arguments. With
    ``pruning_plan`` (e.g. ``PruningPlan.load(path)``) the plan is applied instead
    of planning. ``timer``: what a ``latency_target`` run times with (see ``latency``; tests
    pass a fake one); default the runtime's clock. Raises VerificationFailed (nothing returned) when the surgery is wrong: the
    pruned model must equal the original (zero criterion) or the original with the removed
    channels replaced where they are read (masked or compensated) to the tolerance.
    """
    _check_kinds(registry, criteria, pruning_plan, progress)
    config = (config or PruneConfig()).with_options(criterion, **options)
    if pruning_plan is not None:
        check_plan_options(config, pruning_plan.criterion)
    else:
        check_exclusions_apply(config)
    run = stages.Run(config, load_rules(config.rules, registry), criteria or default_criteria(), progress, timer)
    if output is not None:
        check_output_path(output, model)
    from .user_validation import check_spec

    check_spec(config.validate)  # before any work: a typo in the spec would surface minutes later
    loaded = stages.load(model, run.progress_of("load"))
    stages.check_metric_outputs(loaded.proto, config.fidelity_metrics, loaded.source)
    run = stages.with_data_shapes(loaded, run)
    config = run.config
    analysis = stages.analyse(loaded, run)
    data = stages.calibrate(
        loaded, analysis, run, lossy=config.lossy if pruning_plan is None else not pruning_plan.exact
    )
    scores = stages.score(loaded, analysis, data, run, given=pruning_plan)
    planned = stages.plan(loaded, analysis, scores, data, run, given=pruning_plan)
    comp = stages.compensate(loaded, analysis, planned.plan, data, run)
    original = stages.measure_original(loaded, analysis, run.registry)  # before a surgery that may build in it
    consume = stages.may_consume(planned.plan, config)
    pruned = apply(
        loaded, analysis, planned.plan, registry=run.registry, estimates=comp.estimates, deferred=True, consume=consume
    )
    loaded = loaded.after_surgery()
    stages.check(pruned, loaded.source)
    with stages.staging(pruned, output, external_data, config) as staged:
        verified = stages.verify(loaded, analysis, planned.plan, comp, pruned, staged, data, run)
        recovered = stages.recover(loaded, analysis, planned.plan, pruned, data, run, planned.reconstruct_levels)
        measured = stages.measure(loaded, planned.plan, recovered.model, staged, verified, run, planned.cross_fitted)
        validation = stages.validated(planned, recovered)
        size_after = stages.write(recovered.model, staged, output, external_data, outputs)
    report = stages.report(
        loaded, analysis, planned, data, comp, original, recovered, verified, measured, size_after, run, validation
    )
    return PruneResult(report=report, plan=planned.plan, analysis=analysis, pruned=recovered.model)


@stages.metric_errors_named
def sensitivity(
    model: onnx.ModelProto | str | os.PathLike[str],
    calibration: str | os.PathLike[str],
    criterion: str = "l2",
    *,
    config: PruneConfig | None = None,
    registry: RuleRegistry | None = None,
    criteria: CriterionRegistry | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **options: object,
) -> SensitivityResult:
    """For every unit of tied layers: the fidelity on the calibration inputs after removing
    each of ``config.ratios`` (``sensitivity_ratios``) of it alone (lowest ``criterion`` scores first, with
    compensation), and the MACs that saves."""
    _check_kinds(registry, criteria, progress=progress)
    if not isinstance(calibration, (str, os.PathLike)):
        raise UsageError(
            f"sensitivity: calibration must be the path of an .npz or a folder of images, got {calibration!r}"
        )
    config = (config or PruneConfig()).with_options(criterion, calibration=os.fspath(calibration), **options)
    run = stages.Run(config, load_rules(config.rules, registry), criteria or default_criteria(), progress)
    loaded = stages.load(model, run.progress_of("load"))
    stages.check_metric_outputs(loaded.proto, config.fidelity_metrics, loaded.source)
    run = stages.with_data_shapes(loaded, run)
    config = run.config
    analysis = stages.analyse(loaded, run)
    from .calibration import calibration_feeds

    # Sensitivity evaluates nothing afterwards: every sample is a calibration sample.
    proto, source = loaded.proto, loaded.source
    feeds = calibration_feeds(config, proto, source)
    stats = None
    if run.criteria.is_data(criterion) or config.compensation in ("auto", "calibration"):
        stats = sink_statistics(proto, analysis, feeds, progress=run.progress_of("calibration"), source=source)
    scores = layer_scores(analysis, proto, config, run.criteria, stats, run.registry, feeds=feeds, source=source)
    return stages.sensitivity_trials(loaded, analysis, scores, stats, feeds, run).result
