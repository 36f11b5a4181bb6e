"""The stages after the surgery: check and verify the pruned model, refit it (reconstruction),
measure its fidelity, write it, and report the run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import onnx

from ..analysis import ChannelAnalysis
from ..compensation import reader_masks, removed_id_mask
from ..config import PruneConfig
from ..errors import VerificationFailed
from ..fidelity import OutputFidelity
from ..masking import masked_reference
from ..metrics import ModelCost, model_cost
from ..planning import PruningPlan
from ..quantized import QUANTIZED_SAMPLES, verification_form
from ..report import (
    CalibrationFidelity,
    Generalisation,
    HeldOutFidelity,
    PruneReport,
    UnseenEstimate,
    build_report,
)
from ..rules import RuleRegistry
from ..saving import DeferredModel, Outputs, StagedModel, serialized_size
from ..search_judgement import CrossFitted
from ..shapes import dynamic_batch_inputs
from ..validation import check_structure
from ..verification import SCALE_FLOOR, VerificationResult, compare_models, failure_text, limits
from ..verification_inputs import check_run_size, load_npz_inputs, make_inputs
from .decide import Compensation, Planned
from .prepare import CalibrationData, Feeds, LoadedModel, Run

if TYPE_CHECKING:
    from ..fidelity import OutputScore
    from ..fidelity_metrics.batch_mean import BatchMean
    from ..fidelity_metrics.batch_prediction import BatchPrediction, BatchRule
    from ..recalibration import RecalibratedLayer
    from ..reconstruction import ReconstructedLayer
    from ..user_validation import ValidationResult

__all__ = [
    "Measured",
    "Original",
    "Recovered",
    "Verified",
    "check",
    "may_consume",
    "measure",
    "measure_original",
    "recover",
    "report",
    "runnable",
    "staging",
    "validated",
    "verification_feeds",
    "verify",
    "write",
]


@dataclass(frozen=True)
class Original:
    """The original's parameters and MACs, and its size (on disk, or serialised for a ModelProto)."""

    cost: ModelCost
    size: int


@dataclass(frozen=True)
class Verified:
    """The onnxruntime comparison (None when not asked for), what it compared against, and the
    inputs it ran on, which the fidelity is measured on too (``on_random_inputs``: seeded random
    inputs, not data)."""

    result: VerificationResult | None
    reference: str
    feeds: Feeds
    inputs: str
    on_random_inputs: bool = False
    # The calibration samples when ``feeds`` are held-out evaluation samples (the fidelity is
    # then measured on both, side by side); empty otherwise.
    calibration: Feeds = field(default=(), repr=False)


@dataclass(frozen=True)
class Recovered:
    """The pruned model after reconstruction and re-calibration (the same model without them),
    the layers refitted and the layers re-calibrated."""

    model: DeferredModel = field(repr=False)
    layers: tuple[ReconstructedLayer, ...] = ()
    recalibrated: tuple[RecalibratedLayer, ...] = ()


@dataclass(frozen=True)
class Measured:
    """Fidelity of the pruned model against the original (lossy runs only): per output, and
    the run's score under its fidelity metrics."""

    fidelity: tuple[OutputFidelity, ...] | None = None
    score: float | None = None
    metrics: tuple[OutputScore, ...] | None = None
    generalisation: Generalisation | None = None  # calibration vs held-out fidelity, with counts


def measure_original(loaded: LoadedModel, analysis: ChannelAnalysis, registry: RuleRegistry | None = None) -> Original:
    """Parameters and MACs of the original, and its size: taken before a surgery that may
    build the pruned model in it. ``registry``: the analysis' rules (they count the MACs)."""
    size = loaded.size if loaded.size is not None else serialized_size(loaded.proto)
    return Original(model_cost(loaded.proto, analysis.shapes, registry), size)


def may_consume(pruning_plan: PruningPlan, config: PruneConfig) -> bool:
    """Nothing reads the original after an unverified exact removal: the surgery may build the
    result in it (no second copy of the weights)."""
    return not config.verify and pruning_plan.exact and not (config.reconstruct or config.recalibrate)


def check(pruned: DeferredModel, source: str) -> None:
    """onnx.checker on the pruned model's structure (its big new weights stay arrays)."""
    try:
        check_structure(pruned.proto, full_check=True)
    except Exception as exc:
        raise VerificationFailed(f"{source}: the pruned model fails onnx.checker: {str(exc).splitlines()[0]}") from None


def staging(
    pruned: DeferredModel, output: str | os.PathLike[str] | None, external_data: bool | None, config: PruneConfig
) -> AbstractContextManager[StagedModel | None]:
    """With an output (and no reconstruction or re-calibration, which change the weights after verification) the
    file verified is the file written: staged beside the destination, read from there by
    onnxruntime, and moved into place by ``write`` once verified (removed if anything fails)."""
    if output is None or config.reconstruct or config.recalibrate:
        return contextlib.nullcontext()
    return pruned.staged(output, external_data)


def runnable(pruned: DeferredModel, staged: StagedModel | None) -> onnx.ModelProto | str:
    """What onnxruntime is given for the pruned model: its staged file, else the model."""
    return staged.path if staged is not None else pruned.complete()


def verification_feeds(original: onnx.ModelProto, config: PruneConfig, source: str) -> tuple[list, str]:
    """The samples of ``config.verification_inputs``, or seeded random inputs (batch 1 and 2 for
    a dynamic batch), with their description for the report."""
    if config.verification_inputs:
        feeds = load_npz_inputs(config.verification_inputs, original, source=source)
        return feeds, f"{len(feeds)} samples from {config.verification_inputs}"
    batches = [1, 2] if dynamic_batch_inputs(original) else [None]
    # A quantized model's rounding flips are judged per sample (see quantized): more samples.
    repeats = QUANTIZED_SAMPLES if verification_form(original) is not None else 1
    batches = batches * repeats
    feeds = [make_inputs(original, config.input_shapes, b, config.seed + i, source) for i, b in enumerate(batches)]
    samples = f"{repeats} samples of " if repeats > 1 else ""
    return (
        feeds,
        f"seeded random inputs (seed {config.seed}), {samples}batch {'1 and 2' if len(set(batches)) == 2 else 'as in the model'}",
    )


def verify(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    compensation: Compensation,
    pruned: DeferredModel,
    staged: StagedModel | None,
    data: CalibrationData,
    run: Run,
) -> Verified:
    """The pruned model against the original (exact plans) or against the original with the
    removed channels replaced where they are read (lossy plans), on the evaluation samples or
    the verification inputs; raises VerificationFailed past the tolerance."""
    config, source = run.config, loaded.source
    feeds: Feeds = []
    inputs = "none"
    on_random = False
    calibration: Feeds = ()
    if data.evaluation:
        feeds, inputs = data.evaluation, f"{len(data.evaluation)} evaluation samples ({data.note or 'given'})"
        calibration = data.calibration or ()
    elif config.verify or not pruning_plan.exact:
        feeds, inputs = verification_feeds(loaded.proto, config, source)
        on_random = not config.verification_inputs
    if not config.verify:
        return Verified(None, "original", feeds, inputs, on_random, calibration)
    reference: onnx.ModelProto | str = loaded.runnable
    kind = "original"
    if not pruning_plan.exact:
        masks = reader_masks(analysis, removed_id_mask(analysis, pruning_plan), compensation.estimates)
        reference = masked_reference(loaded.proto, analysis, masks)
        kind = "original with removed channels replaced where read"
    check_run_size(loaded.proto, analysis.shapes, {t.name for t in loaded.proto.graph.initializer}, source)
    tolerance, noise_multiple = limits(config.tolerance)
    result = compare_models(
        reference,
        runnable(pruned, staged),
        feeds,
        tolerance,
        inputs,
        source,
        progress=run.progress_of("verification"),
        noise_multiple=noise_multiple,
        form=verification_form(loaded.proto),
    )
    quantized = result.quantized
    bad = quantized.failure() if quantized is not None else None
    if quantized is not None and bad is not None:
        raise VerificationFailed(
            f"{source}: verification failed on {bad.runtime}: output {bad.worst_output!r} differs from the {kind} by "
            f"{bad.max_abs_diff:.3g} ({bad.flipped_samples} of {bad.samples} samples past its float limit {bad.limit:.3g}: "
            f"{tolerance:g} x max(its scale {bad.scale:.3g}, {SCALE_FLOOR:g}); a quantized model passes {quantized.rule}); "
            "nothing written"
        )
    if not result.passed:
        raise VerificationFailed(f"{source}: verification failed: {failure_text(result, kind)}; nothing written")
    return Verified(result, kind, feeds, inputs, on_random, calibration)


def recover(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    pruned: DeferredModel,
    data: CalibrationData,
    run: Run,
    levels: int | None = None,
) -> Recovered:
    """With ``config.reconstruct``: the readers of removed channels refitted by least squares on
    the calibration samples; with ``config.recalibrate``: then the kept channels' statistics
    corrected to the original's. The surgery is proven by then; this only changes kept weights'
    values (and biases). ``levels``: a sequential refit's levels in sequence (decide.Planned's
    ``reconstruct_levels``; None: all)."""
    config = run.config
    if not ((config.reconstruct or config.recalibrate) and not pruning_plan.exact and data.calibration):
        return Recovered(pruned)
    from ..recovery import recover_model

    model, layers, recalibrated = recover_model(
        loaded.proto,
        pruned.complete(),
        analysis,
        pruning_plan,
        data.calibration,
        reconstruct=config.reconstruct,
        recalibrate=config.recalibrate,
        reconstruct_from=config.reconstruct_from,
        reconstruct_levels=levels,
        registry=run.registry,
        seed=config.seed,
        source=loaded.source,
        progress=run.progress_of("reconstruction"),
    )
    check_structure(model, full_check=True)
    return Recovered(DeferredModel(model), tuple(layers), tuple(recalibrated))


def validated(planned: Planned, recovered: Recovered) -> ValidationResult | None:
    """With a validation function: its value on the original and on the delivered model (from
    the search's cache when the search scored this very plan, else one more call)."""
    judge = planned.validator
    if judge is None:
        return None
    judge.baseline  # noqa: B018 - the original first: a broken function fails on it
    final = judge.value(planned.plan.removed_groups, model=recovered.model.complete)
    return judge.result(final)


# -- measure, write, report ---------------------------------------------------------------------
def measure(
    loaded: LoadedModel,
    pruning_plan: PruningPlan,
    pruned: DeferredModel,
    staged: StagedModel | None,
    verified: Verified,
    run: Run,
    cross_fitted: CrossFitted | None = None,
) -> Measured:
    """The fidelity of a lossy run on the inputs it was verified on: per output, and its score;
    with held-out evaluation samples, also on the calibration samples the plan was chosen on,
    side by side (``generalisation``): the gap is what choosing on them cost elsewhere. With
    ``cross_fitted`` (the search's judgement of a recovered plan, decide.Planned) that too: the
    final refit saw the calibration samples, so its fidelity on them is in-sample."""
    if pruning_plan.exact:
        return Measured()
    from ..calibration import shared_samples
    from ..fidelity import fidelity, run_score

    choices, model = run.config.fidelity_metrics, runnable(pruned, staged)
    outputs = fidelity(loaded.runnable, model, verified.feeds, choices, source=loaded.source)
    score, metrics = run_score(outputs)
    general = None
    if verified.calibration:
        level = run.config.fidelity_confidence
        calibrated = fidelity(
            loaded.runnable, model, verified.calibration, choices, source=loaded.source, estimate=True, confidence=level
        )
        on_calibration = run_score(calibrated)
        general = Generalisation(
            CalibrationFidelity(len(verified.calibration), on_calibration[0]),
            HeldOutFidelity(len(verified.feeds), score, shared_samples(verified.calibration, verified.feeds)),
        )
        estimated = [o for o in calibrated if o.estimate is not None and o.bound is not None]
        # Only the fidelity floor's allocation search judges by the bound; a ratio, a MACs target
        # (with a floor too: the shortest prefix reaching it) or the user's validation function
        # chose the plan otherwise, and the latency planner's floor judges the measured agreement.
        config = run.config
        judged = (
            config.fidelity_floor is not None
            and config.allocated
            and config.macs_target is None
            and not config.validated_search
        )
        estimate = None
        if estimated:
            # What the search judged discrete outputs by (search_judgement.search_score), for this plan:
            # the bound (of the lower of the estimate and the agreement on the samples).
            estimate = UnseenEstimate(
                samples=len(verified.calibration),
                fidelity=min(o.estimate for o in estimated),
                bound=min(min(o.score, o.bound) for o in estimated),
                confidence=level,
                what="estimated agreement on unseen inputs from the calibration samples' top-1 / CTC / detection-score "
                "margins and the pruned model's margin losses (an estimate, not a measurement); bound: the lower of it "
                "and the agreement on the calibration samples"
                + (f", bounded at confidence {level:g} (bootstrap over the samples)" if level > 0.5 else "")
                + (
                    (": what the search judged" if judged else ": for information (no search judged the plan by it)")
                    if cross_fitted is None
                    else f": in-sample ({cross_fitted.in_sample}; the search judged cross_fitted)"
                ),
                judged_by_search=judged and cross_fitted is None,
                batch=_batch_prediction(estimated, len(verified.feeds), config.fidelity_floor, cross_fitted),
            )
        rule = None
        if config.fidelity_batch is not None and config.fidelity_floor is not None:
            rule = _batch_rule(estimated, config, cross_fitted)
        mean_rule = _batch_mean(calibrated, config, cross_fitted) if judged else None
        general = replace(general, estimate=estimate, cross_fitted=cross_fitted, batch_rule=rule, batch_mean=mean_rule)
    return Measured(outputs, score, metrics, general)


def _batch_rule(
    estimated: Sequence[OutputFidelity], config: PruneConfig, cross_fitted: CrossFitted | None
) -> BatchRule:
    """What ``--fidelity-batch`` judged (fidelity_metrics.batch_prediction.batch_rule), for the
    delivered plan: each discrete output's agreement at its bound on the calibration samples; a
    recovered plan's at no more than the cross-fitted bound the search saw (the refit's own is
    in-sample)."""
    from ..fidelity_metrics.batch_prediction import batch_rule

    cap = cross_fitted.score.bound if cross_fitted is not None else None
    bounds = [min(o.score, o.bound) for o in estimated if o.bound is not None]
    agreements = [b if cap is None else min(b, cap) for b in bounds]
    assert config.fidelity_batch is not None and config.fidelity_floor is not None
    return batch_rule(
        agreements,
        config.fidelity_batch,
        config.fidelity_confidence,
        config.fidelity_floor,
        outputs=[o.name for o in estimated if o.bound is not None],
    )


def _batch_mean(
    calibrated: Sequence[OutputFidelity], config: PruneConfig, cross_fitted: CrossFitted | None
) -> BatchMean | None:
    """What the batch-mean rule judged the delivered plan's continuous outputs by
    (fidelity_metrics.batch_mean, as search_judgement.search_score): the search's cross-fitted one for
    a recovered plan or a data criterion's (the final model's own scores are in-sample), else
    from the calibration samples' scores. None: no continuous output one row per sample."""
    from ..fidelity_metrics.batch_mean import batch_mean_rule

    assert config.fidelity_floor is not None
    if cross_fitted is not None:
        judged = cross_fitted.score.batch_mean
        return None if judged is None else replace(judged, floor=config.fidelity_floor, cross_fitted=True)
    continuous = [o for o in calibrated if o.per_sample is not None]
    if not continuous or len({len(o.per_sample) for o in continuous}) != 1:  # type: ignore[arg-type]
        return None
    n = len(continuous[0].per_sample)  # type: ignore[arg-type]
    return batch_mean_rule(
        [o.per_sample for o in continuous],  # type: ignore[misc]
        [o.name for o in continuous],
        config.fidelity_batch or n,
        config.fidelity_confidence,
        floor=config.fidelity_floor,
    )


def _batch_prediction(
    estimated: Sequence[OutputFidelity], samples: int, floor: float | None, cross_fitted: CrossFitted | None
) -> BatchPrediction:
    """What a batch of ``samples`` other inputs (as many as the evaluation samples) is expected to
    score, from each discrete output's estimate (fidelity_metrics.batch_prediction); a recovered
    plan's estimates are in-sample, so none is taken above the cross-fitted one the search saw."""
    from ..fidelity_metrics.batch_prediction import predict_batch

    cap = cross_fitted.score.estimate if cross_fitted is not None else None
    estimates = [o.estimate if cap is None else min(o.estimate, cap) for o in estimated if o.estimate is not None]
    return predict_batch(estimates, samples, floor=floor)


def write(
    pruned: DeferredModel,
    staged: StagedModel | None,
    output: str | os.PathLike[str] | None,
    external_data: bool | None,
    outputs: Outputs | None = None,
) -> int:
    """Move the staged file into place, or write the model, or (no output) count its bytes;
    returns the bytes written or counted. With ``outputs`` the staged file is handed to it
    instead, to be moved into place with the caller's other files."""
    if outputs is not None and output is not None:
        if staged is None:  # reconstructed after verification: the final weights are staged now
            staged = pruned.staged(output, external_data)
        outputs.add_model(staged)
        return staged.size
    if staged is not None:
        staged.commit()
        return staged.size
    if output is not None:
        return pruned.save(output, external_data)
    return pruned.size()  # upb's ByteSize would encode the whole model: count the encoded pieces instead


def report(
    loaded: LoadedModel,
    analysis: ChannelAnalysis,
    planned: Planned,
    data: CalibrationData,
    compensation: Compensation,
    original: Original,
    recovered: Recovered,
    verified: Verified,
    measured: Measured,
    size_after: int,
    run: Run,
    validation: ValidationResult | None = None,
) -> PruneReport:
    """The run's report (see report.PruneReport)."""
    return build_report(
        loaded.source,
        original.cost,
        (original.size, size_after),
        recovered.model.proto,
        analysis,
        planned.plan,
        run.config,
        verified.result,
        measured.fidelity,
        compensation.mode,
        verified.reference,
        fidelity_on_random_inputs=verified.on_random_inputs,
        fidelity_score=measured.score,
        fidelity_metrics=measured.metrics,
        evaluation=verified.inputs,
        data_note=data.note,
        generalisation=measured.generalisation,
        reconstructed_layers=recovered.layers,
        recalibrated_layers=recovered.recalibrated,
        sensitivity=planned.sensitivity,
        registry=run.registry,
        validation=validation,
        latency=planned.latency,
    )
