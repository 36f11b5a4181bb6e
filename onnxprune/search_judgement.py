"""How the ``--min-fidelity`` search judges a plan on the calibration samples: ``SearchScore``
(discrete outputs by a lower bound of their agreement and its estimate on unseen inputs,
continuous ones by the worse half and the batch-mean rule), ``search_score`` that computes it
from the outputs (``fidelity.fidelity_from_outputs`` per output), and ``CrossFitted``, the
report's record of the cross-fitted judgement. Kept apart from ``fidelity``, which computes the
fidelity itself: this module is the search's acceptance rule on top of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .fidelity import Reference, fidelity_from_outputs, run_score
from .fidelity_metrics.batch_mean import BatchMean, batch_mean_rule
from .fidelity_metrics.unseen_bound import DEFAULT_CONFIDENCE

__all__ = ["CrossFitted", "SearchScore", "search_score"]


@dataclass(frozen=True)
class SearchScore:
    """How the fidelity-budgeted search judges a plan on the calibration samples.

    Per output: a discrete metric (top1, ctc; and detection, whose detections appear and vanish
    at a score threshold) by a lower confidence bound of the lower of its agreement on all the
    samples and its estimated agreement on unseen inputs (``fidelity_metrics.unseen``: the
    samples' margins against the candidate's margin losses, so a 0.99 target is not "no flip
    among 16" and near-ties count before they flip; the bound,
    ``fidelity_metrics.unseen_bound``: a bootstrap over the samples, so a plan at the floor is
    not kept on a coin toss); a continuous one by the worse of the two halves of the samples
    (cross-validated: one lucky half cannot hide one that fails). The plan's value is the
    worst output's. With reconstruction the candidate's outputs are cross-fitted (each
    sample's from a refit that did not see it: reconstruction_trials.ReconstructedTrials)."""

    value: float
    pooled: float  # the fidelity on all the samples
    worst_half: float | None  # the worse half's (None: outputs not one row per sample)
    estimate: float | None  # the lowest estimated agreement of the discrete outputs (None: none)
    bound: float | None = None  # the lowest of their lower bounds (None: no discrete output)
    # the lowest output cosine on all the samples: a continuous score beneath coarse task metrics
    # (the latency planner orders moves by it where top-1 or detections tie, e.g. both lost)
    cosine: float | None = None
    # With ``batch`` (--fidelity-batch N): the fidelity a batch of N other inputs reads at least
    # with probability ``confidence``, the discrete outputs' agreements at their bounds
    # (fidelity_metrics.batch_prediction.batch_reading); it caps their value. None: no rule, or
    # no discrete output.
    batch_reading: float | None = None
    # The continuous outputs' (cosine, dense) batch-mean rule: the mean over a batch of
    # ``--fidelity-batch`` (else as many as the samples) other inputs predicted >= its bound at
    # ``confidence`` (fidelity_metrics.batch_mean); the bound caps their value. None: no
    # continuous output, or outputs not one row per sample.
    batch_mean: BatchMean | None = None


@dataclass(frozen=True)
class CrossFitted:
    """The search's cross-fitted judgement of the delivered plan (``--reconstruct`` /
    ``--recalibrate`` with ``--min-fidelity``): every calibration sample scored by the model
    recovered on the other half of them (reconstruction_trials.ReconstructedTrials); with a data
    criterion and no recovery, by the channels the criterion chose on the other half
    (selection_trials.SelectionTrials). The final model is refitted (its channels chosen) on all
    the calibration samples, so its fidelity on them is in-sample and overstates what it keeps on
    other inputs; this is what the search saw."""

    score: SearchScore
    samples: int  # the calibration samples, each judged by the refit of the half without it
    scored_by: str = "the model recovered on the other half"  # what judged each sample
    in_sample: str = "the final refit was fitted on them"  # why the calibration fidelity is in-sample

    def to_dict(self) -> dict:
        s = self.score
        return {
            "samples": self.samples,
            "fidelity": s.pooled,
            "judged": s.value,
            "worst_half": s.worst_half,
            "estimate": s.estimate,
            "bound": s.bound,
            **({"batch_mean": s.batch_mean.bound} if s.batch_mean is not None else {}),
            "scored_by": self.scored_by,
            "in_sample": self.in_sample,
            "what": f"cross-fitted: each calibration sample scored by {self.scored_by} of "
            "the calibration samples (what the --min-fidelity search judged the plan by); fidelity: on all of them; "
            "judged: the search's value (continuous outputs: the lower of the worse half and batch_mean, the "
            "predicted lower bound of a batch's mean; top-1 / CTC / detection: the lower bound of the agreement and "
            "its estimate on unseen inputs)",
        }


def _per_feed(arrays: Sequence[np.ndarray] | Reference) -> Sequence[Sequence[np.ndarray]] | Reference:
    """One array per output (all the samples) as ``fidelity_from_outputs`` reads its outputs."""
    return arrays if isinstance(arrays, Reference) else [[a] for a in arrays]


def search_score(
    names: Sequence[str],
    reference: Sequence[np.ndarray] | Reference,
    candidate: Sequence[np.ndarray],
    halves: Sequence[tuple[Sequence[np.ndarray] | Reference, Sequence[np.ndarray]]] | None = None,
    choices: Mapping[str, str] | None = None,
    *,
    batch_axes: Mapping[str, int] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    batch: int | None = None,
) -> SearchScore:
    """The search's judgement of a candidate (see ``SearchScore``): one array per output for
    all the samples, and ``halves`` as (reference, candidate) pairs of the same cut in two (a
    reference may be ``prepare_reference``'s of its arrays); ``confidence`` the level of the
    discrete outputs' bound (0.5: the point estimate). With ``batch`` N (``--fidelity-batch``)
    a discrete output's value is also at most what a batch of N other inputs reads with
    probability ``confidence`` if every discrete output's agreement is at its bound (binomial;
    their tails added up): ``value >= F`` then also means "a batch of N reads >= F in at least
    that share of batches". A continuous output (cosine, dense) is judged by the lower of its
    worse half and the batch-mean rule's bound: the mean over a batch of N (without ``batch``:
    as many as the samples) other inputs predicted at ``confidence`` from the samples' scores
    (``fidelity_metrics.batch_mean``; a two-level bootstrap: their score over a batch is an
    average, not a count of inputs)."""
    pooled = fidelity_from_outputs(
        names,
        _per_feed(reference),
        [[g] for g in candidate],
        choices,
        batch_axes=batch_axes,
        estimate=True,
        confidence=confidence,
    )
    parts = [
        fidelity_from_outputs(names, _per_feed(ref), [[g] for g in got], choices, batch_axes=batch_axes)
        for ref, got in (halves or ())
    ]
    values, estimates, bounds, continuous = [], [], [], []
    for k, f in enumerate(pooled):
        if f.estimate is not None and f.bound is not None:
            estimates.append(f.estimate)
            bounds.append(min(f.score, f.bound))
            values.append(bounds[-1])
        else:
            values.append(min((p[k].score for p in parts), default=f.score))
            if f.per_sample is not None:
                continuous.append(f)
    worst = min(run_score(p)[0] for p in parts) if parts else None
    mean_rule = None
    if continuous and len({len(f.per_sample) for f in continuous}) == 1:  # type: ignore[arg-type]
        n = len(continuous[0].per_sample)  # type: ignore[arg-type]
        mean_rule = batch_mean_rule(
            [f.per_sample for f in continuous],  # type: ignore[misc]
            [f.name for f in continuous],
            batch or n,
            confidence,
        )
        if mean_rule is not None:
            values.append(mean_rule.bound)  # caps the continuous outputs' values
    reading = None
    if batch is not None and bounds:
        from .fidelity_metrics.batch_prediction import batch_reading

        reading = batch_reading(bounds, batch, confidence)
        values.append(reading)  # caps the discrete outputs' values: the batch's worst output
    return SearchScore(
        min(values, default=1.0),
        run_score(pooled)[0],
        worst,
        min(estimates) if estimates else None,
        min(bounds) if bounds else None,
        min((f.cosine for f in pooled), default=None),
        reading,
        mean_rule,
    )
