"""What the mean over a batch of other inputs reads, for continuous outputs (cosine, dense): a
lower prediction bound from the calibration samples' per-sample scores. The search judges
continuous outputs by it (``search_judgement.search_score``), as ``--fidelity-batch`` judges the discrete
ones by a binomial reading (``batch_prediction``).

Why: a continuous score on a batch is the mean of its inputs' scores, so a plan whose true mean
is just above the floor reads below it on many batches. The open-wake-word embedding's
``--criterion contribution --min-fidelity 0.95`` plan (23.2% of the MACs) holds 0.957 on 320
unseen inputs, but 8.8% of batches of 32 read below 0.95 and the held-out batch read 0.948; its
calibration samples' mean was 0.964 (cross-fitted), and the worse half (0.953), the judge
before, says nothing about a batch of 32 others.

How: a two-level (predictive) bootstrap. Each resample draws a population of n scores with
replacement from the n calibration samples (what the true distribution might be, given these
samples), then a batch of B from that population (what a batch of B other inputs might read);
the statistic is the batch's mean (several continuous outputs: the lowest output mean, the
samples drawn together, since the run's fidelity is the worst output's). The bound is its
``1 - confidence`` quantile, never above the calibration mean. Its spread is the prediction
error's, var ~ sigma^2 (1/n + 1/B): the batch's own spread and the calibration mean's
uncertainty. A one-level draw of B from the n samples would leave out the second term (on a
batch as large as the calibration set: half the variance).

Why not a normal (mean - z sd sqrt(1/n + 1/B)): per-sample fidelities are bounded above by 1
and their losses have a heavy lower tail (oww, a reconstructed plan at 0.99: calibration sd
0.0045, 0.0080 on 320 unseen inputs), so a batch mean's lower tail is longer than a normal's;
the bootstrap keeps the samples' skew (in the population's mean and again in the batch). Why
not a distribution-free bound (Hoeffding, empirical Bernstein on [0, 1]): with 32 samples
their slack alone is 0.2-0.3, far wider than any floor worth asking for. Why not a studentized
bootstrap (bootstrap-t): it covers a skewed mean better, but a resample that drew only equal
scores has no spread to divide by -- per-sample scores are often exactly 1 (a dense map
unchanged) -- and its bound then swings far down (one sample at 0 among 31 at 1, a batch of
32, a resample's sd floored at sd / sqrt(n): 0.62 against this rule's 0.875; measured as below,
it covered the oww scores in 95% of pairs, but scores 95% exactly 1 at a mean bound of 0.90
where this rule's is 0.96 and the true 5% quantile 0.966).

What it leaves out: a tail the calibration samples did not reach (no resample can draw an input
worse than the worst seen) and inputs unlike them. So its coverage falls short of the confidence
on heavy tails. Measured by drawing calibration sets of 32 and batches of 32 from the oww
plan's scores on 320 unseen inputs (300 pairs, confidence 0.95): a batch read >= the bound in
90-94% of pairs; on simulated scores with lognormal losses (log-sd 1 / 1.5) in 84% / 79%; with
normal scores in 93%.

Resamples use a fixed seed, the same draws for every plan of a search (common random numbers,
as ``unseen_bound``): plans are compared on the same resamples, the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BATCH_MEAN_METRICS", "RESAMPLES", "BatchMean", "batch_mean_bound", "batch_mean_rule"]

BATCH_MEAN_METRICS = ("cosine", "dense")  # continuous: a batch's score is the mean of its inputs'
RESAMPLES = 2000


def batch_mean_bound(
    per_sample: Sequence[Sequence[float]],
    batch: int,
    confidence: float,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> float:
    """The lower prediction bound at ``confidence`` of the mean over a batch of ``batch`` other
    inputs (several outputs: the lowest output's mean), from ``per_sample``: per continuous
    output, each calibration sample's score (all outputs over the same samples). Two-level
    bootstrap (see the module's docstring); never above the lowest output's calibration mean.
    Fewer than 2 samples or ``confidence`` <= 0.5: that mean itself."""
    s = np.asarray([np.asarray(p, np.float64).ravel() for p in per_sample], np.float64)
    if s.ndim != 2 or not s.size:
        raise ValueError("a batch-mean bound needs at least one output with at least one sample")
    if batch < 1:
        raise ValueError(f"a batch-mean bound needs a batch of at least 1 input, got {batch}")
    n = s.shape[1]
    point = float(s.mean(axis=1).min())
    if n < 2 or confidence <= 0.5:
        return point
    rng = np.random.default_rng(seed)
    population = rng.integers(0, n, size=(resamples, n))
    drawn = np.take_along_axis(population, rng.integers(0, n, size=(resamples, batch)), axis=1)
    means = s[:, drawn].mean(axis=2).min(axis=0)  # [resamples]: each batch's worst output mean
    low = float(np.quantile(means, 1.0 - confidence, method="inverted_cdf"))
    return min(point, low)


@dataclass(frozen=True)
class BatchMean:
    """What the search judged continuous outputs by (the report's ``generalisation.batch_mean``):
    the mean over a batch of ``samples`` other inputs predicted to read at least ``bound`` in
    ``confidence`` of such batches, from ``calibration`` calibration samples whose mean is
    ``mean`` (the lowest continuous output's); ``met``: ``bound >= floor`` (None without a
    floor); ``cross_fitted``: each calibration sample scored by a fit that did not see it (as
    the search judged)."""

    samples: int
    calibration: int
    confidence: float
    mean: float
    bound: float
    outputs: tuple[str, ...]
    floor: float | None = None
    cross_fitted: bool = False

    @property
    def met(self) -> bool | None:
        return None if self.floor is None else self.bound >= self.floor

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "calibration": self.calibration,
            "confidence": self.confidence,
            "floor": self.floor,
            "mean": self.mean,
            "bound": self.bound,
            "met": self.met,
            "outputs": list(self.outputs),
            "cross_fitted": self.cross_fitted,
            "what": f"continuous outputs (cosine, dense): the mean over a batch of {self.samples} other inputs is "
            f"predicted to read >= bound in {self.confidence:g} of such batches (two-level bootstrap over the "
            f"{self.calibration} calibration samples' per-sample scores"
            + (", each scored cross-fitted" if self.cross_fitted else "")
            + "; several outputs: the lowest output's mean); the --min-fidelity search keeps a plan only if bound >= "
            "the floor. Not included: a tail the calibration samples did not reach, and inputs unlike them",
        }


def batch_mean_rule(
    per_sample: Sequence[Sequence[float]],
    outputs: Sequence[str],
    batch: int,
    confidence: float,
    *,
    floor: float | None = None,
    cross_fitted: bool = False,
) -> BatchMean | None:
    """The ``BatchMean`` of a plan whose continuous outputs ``outputs`` scored ``per_sample``
    on the calibration samples; None without a continuous output or with fewer than 2 samples
    (nothing to judge: the search kept the worse half alone)."""
    if not per_sample or min(len(p) for p in per_sample) < 2:
        return None
    s = [np.asarray(p, np.float64) for p in per_sample]
    return BatchMean(
        batch,
        len(s[0]),
        confidence,
        float(min(p.mean() for p in s)),
        batch_mean_bound(s, batch, confidence),
        tuple(outputs),
        floor,
        cross_fitted,
    )
