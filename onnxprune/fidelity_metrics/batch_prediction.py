"""What a batch of other inputs is expected to score, from the estimated agreement on unseen
inputs (top-1, CTC, detection): a binomial prediction interval.

Why: a discrete fidelity measured on a few inputs moves in steps of 1/N, and a plan whose true
agreement is 0.978 (the captcha CRNN at 0.95: estimated 0.978, 0.979 measured on 96 further
inputs) loses 2 or more of 32 other inputs 15% of the time, a measured 0.938. A user reading one
held-out batch should see beforehand what such a batch scores: "30-32 of 32, below the floor
in 15% of batches" rather than be surprised by one batch.

How: if the estimate ``p`` is right, each of N new inputs keeps its answer with probability
``p``, independently, so a batch keeps K ~ Binomial(N, p) of them. Each input counts as one
answer that flips as a whole: for inputs with several answers (per-position classes, several
detections) this is the widest case (their answers' flips move together), so the interval is
wider than the estimate implies, not narrower. With several discrete outputs the batch's
score is the worst output's: the lower end and the chance of falling below the floor add up
the outputs' tails (a union bound: at most, never understated), the upper end is the worst
output's. What it leaves out: the estimate's own uncertainty (the search's bound speaks to
that) and inputs unlike the calibration samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from ..errors import UsageError

__all__ = [
    "BATCH_RULE_METRICS",
    "PREDICTION_LEVEL",
    "BatchPrediction",
    "BatchRule",
    "batch_reading",
    "batch_rule",
    "predict_batch",
]

# The outputs --fidelity-batch judges: those whose score counts inputs (their agreement has a
# bound: fidelity_metrics.unseen_bound); a cosine or dense score over a batch is an average.
BATCH_RULE_METRICS = ("top1", "ctc", "detection")
PREDICTION_LEVEL = 0.95  # central: each tail at most (1 - level) / 2; chosen before measuring


@dataclass(frozen=True)
class BatchPrediction:
    """A batch of ``samples`` other inputs: at least ``low`` and at most ``high`` of them keep
    their answers in ``level`` of such batches, if every output's estimate is right;
    ``below_floor``: the chance (several outputs: at most) that the batch scores below ``floor``."""

    samples: int
    estimates: tuple[float, ...]  # per discrete output, the estimated agreement it assumes
    level: float
    low: int
    high: int
    floor: float | None = None
    below_floor: float | None = None

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "estimate": min(self.estimates),
            "outputs": len(self.estimates),
            "level": self.level,
            "low": self.low / self.samples,
            "high": self.high / self.samples,
            "low_inputs": self.low,
            "high_inputs": self.high,
            "floor": self.floor,
            "below_floor": self.below_floor,
            "what": f"what a batch of {self.samples} other inputs is expected to score, if the estimate is right: each input "
            "keeps its answers with the estimated probability, independently (binomial; an input's answers flip "
            f"together); low / high: the central {self.level:g} interval of the worst discrete output's score (several "
            "outputs: their tails added up); below_floor: the chance of a batch below the floor (several outputs: at "
            "most). Not included: the estimate's own uncertainty (see bound) and inputs unlike the calibration samples",
        }


def predict_batch(
    estimates: Sequence[float], samples: int, *, level: float = PREDICTION_LEVEL, floor: float | None = None
) -> BatchPrediction:
    """The binomial prediction for a batch of ``samples`` inputs of the worst of the discrete
    outputs whose estimated agreements are ``estimates`` (see the module's docstring)."""
    if samples < 1 or not estimates:
        raise ValueError("a batch prediction needs at least one input and one estimate")
    ps = _clipped(estimates, "estimate")
    tail = (1.0 - level) / 2
    low = _lowest_kept(ps, samples, tail)
    worst = min(ps)
    # The smallest k with P(more than k) within the tail, for the worst output (the batch's
    # score is at most its score).
    high = min(k for k in range(samples + 1) if float(binom.sf(k, samples, worst)) <= tail)
    below_floor = None
    if floor is not None:
        # fewer than floor * N inputs kept: K / N < floor (the smallest k with k >= floor * N).
        below_floor = float(_below(ps, samples)[math.ceil(floor * samples - 1e-9)])
    return BatchPrediction(samples, ps, level, low, high, floor, below_floor)


def _clipped(agreements: Sequence[float], what: str) -> tuple[float, ...]:
    """The agreements clipped to [0, 1]; a NaN is refused: it compares false everywhere and
    leaves no count within a tail (a bare IndexError)."""
    if any(math.isnan(float(p)) for p in agreements):
        raise UsageError(f"batch prediction: an {what} is NaN ({list(map(float, agreements))}); each must be in [0, 1]")
    return tuple(min(max(float(p), 0.0), 1.0) for p in agreements)


def _below(ps: Sequence[float], samples: int) -> np.ndarray:
    """For k = 0..N, P(the worst output keeps fewer than k of the batch), at most (union over
    the outputs): non-decreasing in k, 0 at k = 0."""
    k = np.arange(samples + 1)
    return np.minimum(1.0, sum((binom.cdf(k - 1, samples, p) for p in ps), np.zeros(samples + 1)))


def _lowest_kept(ps: Sequence[float], samples: int, tail: float) -> int:
    """The largest k whose "fewer than k kept" chance stays within ``tail``."""
    return int(np.flatnonzero(_below(ps, samples) <= tail)[-1])


def batch_reading(agreements: Sequence[float], samples: int, probability: float) -> float:
    """The fidelity a batch of ``samples`` other inputs reads at least, with at least
    ``probability``, if each discrete output keeps an input's answers with its ``agreements``
    (binomial, one-sided; several outputs: their lower tails added up, so the chance is at
    least ``probability``): the largest k / N with P(fewer than k kept) <= 1 - probability.
    ``batch_reading(...) >= F`` exactly when a batch reads >= F with that chance: the
    acceptance rule of ``--fidelity-batch`` (search_judgement.search_score)."""
    if samples < 1 or not agreements:
        raise ValueError("a batch reading needs at least one input and one agreement")
    return _lowest_kept(_clipped(agreements, "agreement"), samples, 1.0 - probability) / samples


@dataclass(frozen=True)
class BatchRule:
    """What ``--fidelity-batch`` judged (the report's ``generalisation.batch_rule``): a batch of
    ``samples`` other inputs had to read >= ``floor`` in at least ``probability`` of such
    batches; ``agreement``: the worst discrete output's agreement at its bound, ``reading``: what
    such a batch reads at least with that chance, ``below_floor``: the chance it reads below the
    floor, ``met``. ``agreement``, ``reading``, ``below_floor`` and ``met`` are None when the
    model has no top-1 / CTC / detection output (the rule judged nothing)."""

    samples: int
    floor: float
    probability: float
    outputs: tuple[str, ...]
    what: str
    agreement: float | None = None
    reading: float | None = None
    below_floor: float | None = None
    met: bool | None = None

    def to_dict(self) -> dict:
        if self.agreement is None:
            return {
                "samples": self.samples,
                "floor": self.floor,
                "probability": self.probability,
                "outputs": list(self.outputs),
                "what": self.what,
            }
        return {
            "samples": self.samples,
            "floor": self.floor,
            "probability": self.probability,
            "agreement": self.agreement,
            "outputs": list(self.outputs),
            "reading": self.reading,
            "below_floor": self.below_floor,
            "met": self.met,
            "what": self.what,
        }


def batch_rule(
    agreements: Sequence[float], samples: int, probability: float, floor: float, *, outputs: Sequence[str] = ()
) -> BatchRule:
    """What ``--fidelity-batch`` judged (generalisation.batch_rule) for a plan whose discrete
    outputs' agreements at their bounds are ``agreements`` (empty: none, the rule judged
    nothing)."""
    what = (
        f"--fidelity-batch {samples}: the search kept a plan only if a batch of {samples} other inputs reads >= the "
        f"floor {floor:g} on its top-1 / CTC / detection outputs in at least {probability:g} of such batches, each "
        "output's agreement taken at its lower bound (binomial, an input's answers flipping together; several "
        "outputs: their tails added up); reading: what such a batch reads at least with that chance; below_floor: "
        "the chance it reads below the floor. Continuous outputs (cosine, dense) are judged by the batch-mean rule "
        f"(generalisation.batch_mean) for a batch of {samples}"
    )
    if not agreements:
        return BatchRule(
            samples,
            floor,
            probability,
            (),
            f"--fidelity-batch {samples} judged nothing: no top-1 / CTC / detection output (continuous scores "
            "are averages over a batch, not counts of inputs; they are judged by the batch-mean rule for a batch of "
            f"{samples}: generalisation.batch_mean)",
        )
    reading = batch_reading(agreements, samples, probability)
    below = predict_batch(agreements, samples, floor=floor).below_floor
    return BatchRule(
        samples,
        floor,
        probability,
        tuple(outputs),
        what,
        agreement=min(agreements),
        reading=reading,
        below_floor=below,
        met=reading >= floor,
    )
