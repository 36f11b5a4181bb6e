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

How: a two-level (predictive) bootstrap, read at a calibrated level. Each resample draws a
population of n scores with replacement from the n calibration samples (what the true
distribution might be, given these samples), then a batch of B from that population (what a
batch of B other inputs might read); the statistic is the batch's mean (several continuous
outputs: the lowest output mean, the samples drawn together, since the run's fidelity is the
worst output's). Its spread is the prediction error's, var ~ sigma^2 (1/n + 1/B): the batch's
own spread and the calibration mean's uncertainty (a one-level draw of B from the n samples
would leave out the second term). The bound is its quantile at a tail level chosen so that the
rule covers at ``confidence`` where the samples are the truth (the double bootstrap's
prepivoting, Beran 1987; ``calibrated_level``): calibration sets of n and batches of B are
drawn from the samples, each set's own two-level bootstrap ranks its batch, and the level is
the ``1 - confidence`` quantile of those ranks. Never above the calibration mean.

Why calibrate: read at ``1 - confidence`` itself (the rule of session 14, "plain" below), the
bootstrap's coverage is short on skewed scores, because a calibration set that missed the tail
has both a higher mean and a smaller spread -- the reason a z-interval under-covers a skewed
mean. The calibration sees that happen in the bootstrap world and reads further into the tail
(median level about 0.03 on the oww scores, 0.02 on lognormal losses of log-sd 1, 0.045 on
normal scores): second-order correct, as a studentized bootstrap is. Measured with
``tools/batch_mean_coverage.py`` (1000 pairs of a calibration set of 32 and a batch of 32 from
one population, confidence 0.95), the share of batches reading >= the bound, plain ->
calibrated:

- oww embedding's ``contribution`` 0.95 plan, its scores on 320 unseen inputs (the plan the
  benchmark's held-out batch read at 0.948): 0.934 -> 0.962 (mean bound 0.9440 -> 0.9407; the
  true 5% quantile of a batch's mean 0.9482);
- normal scores (0.97, sd 0.01): 0.930 -> 0.942;
- lognormal losses (median 0.01) of log-sd 0.5: 0.910 -> 0.939; log-sd 1: 0.863 -> 0.894 (mean
  bound 0.9748 -> 0.9712, true quantile 0.9767); log-sd 1.5: 0.818 -> 0.876;
- atoms at 1 (dense maps unchanged) with losses: 50% at 1, else U(0.95, 1): 0.948 -> 0.970;
  80% at 1, else U(0.9, 1): 0.901 -> 0.949; 95% at 1, else U(0.5, 1): 0.743 -> 0.779 (mean
  bound 0.9631 -> 0.9495, true quantile 0.9661).

Why not a studentized bootstrap (bootstrap-t): it covers a skewed mean about as well (0.944 on
the oww scores, 0.914 on log-sd 1 losses, in a like simulation of 2000 pairs), but a resample that drew only
equal scores has no spread to divide by -- per-sample scores are often exactly 1 (a dense map
unchanged) -- and its bound then swings far down (one sample at 0 among 31 at 1: 0.62 with a
floor sd / sqrt(n), against 0.84 here; its bounds' spread on log-sd 1.5 losses 0.071, against
0.024 plain). The calibrated read divides by nothing: the bound is always one of the same
bootstrap's batch means, only further into its tail. The level is kept between ``(1 -
confidence) / LEVEL_FLOOR`` (0.01 at 0.95), so that one rare loss seen once (the bootstrap
world then often misses it, and the level would go to 0) cannot send the bound to the
bootstrap's single worst draw, and ``1 - confidence`` (never less cautious than the plain read,
which under-covered every population measured). Why not a normal (mean - z sd sqrt(1/n +
1/B)): per-sample fidelities are bounded above by 1 and their losses have a heavy lower tail;
the bootstrap keeps the samples' skew. Why not a distribution-free bound (Hoeffding, empirical
Bernstein on [0, 1]): with 32 samples their slack alone is 0.2-0.3, far wider than any floor
worth asking for.

What it leaves out: a tail the calibration samples did not reach (no resample can draw an input
worse than the worst seen) and inputs unlike them; so on heavy tails its coverage still falls
short of the confidence (the table: lognormal log-sd 1.5; scores 95% at 1, whose tail a
calibration set of 32 misses entirely in 19% of draws -- no rule from the samples alone covers
those, so at most about 85%).

Cost: 2000 two-level draws, and 400 x 250 for the calibration (one gather of 3.2M indices per
output): about 20-60 ms a plan on this host, for n = B = 32.

Resamples use a fixed seed, the same draws for every plan of a search (common random numbers,
as ``unseen_bound``): plans are compared on the same resamples, the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BATCH_MEAN_METRICS", "RESAMPLES", "BatchMean", "batch_mean_bound", "batch_mean_rule", "calibrated_level"]

BATCH_MEAN_METRICS = ("cosine", "dense")  # continuous: a batch's score is the mean of its inputs'
RESAMPLES = 2000  # the two-level draws the bound is read from
OUTER, INNER = 400, 250  # the calibration's draws: sets of the bootstrap world, each one's own bootstrap
LEVEL_FLOOR = 5  # the calibrated tail level is at least (1 - confidence) / LEVEL_FLOOR


def batch_mean_bound(
    per_sample: Sequence[Sequence[float]],
    batch: int,
    confidence: float,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    calibrated: bool = True,
) -> float:
    """The lower prediction bound at ``confidence`` of the mean over a batch of ``batch`` other
    inputs (several outputs: the lowest output's mean), from ``per_sample``: per continuous
    output, each calibration sample's score (all outputs over the same samples). Two-level
    bootstrap read at the calibrated tail level (see the module's docstring); never above the
    lowest output's calibration mean. Fewer than 2 samples or ``confidence`` <= 0.5: that mean.
    ``calibrated=False``: read at ``1 - confidence`` itself (the rule before session 15, kept to
    measure coverage against: tools/batch_mean_coverage.py)."""
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
    means = _batch_means(s, _nested(rng, n, batch, resamples))  # [resamples]: each batch's worst output mean
    level = calibrated_level(s, batch, confidence, rng=rng) if calibrated else 1.0 - confidence
    low = float(np.quantile(means, level, method="inverted_cdf"))
    return min(point, low)


def _nested(rng: np.random.Generator, n: int, batch: int, resamples: int) -> np.ndarray:
    """[resamples, batch] sample indices: a population of n drawn from the n samples, then a
    batch of ``batch`` drawn from that population."""
    population = rng.integers(0, n, size=(resamples, n))
    return np.take_along_axis(population, rng.integers(0, n, size=(resamples, batch)), axis=1)


def _batch_means(s: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Per draw (any leading shape of ``drawn``), the lowest output's mean over the drawn samples;
    one output at a time (the gather is the memory)."""
    out = s[0][drawn].mean(axis=-1)
    for row in s[1:]:
        out = np.minimum(out, row[drawn].mean(axis=-1))
    return out


def calibrated_level(
    s: np.ndarray,
    batch: int,
    confidence: float,
    *,
    rng: np.random.Generator,
    outer: int = OUTER,
    inner: int = INNER,
) -> float:
    """The tail level at which the two-level bootstrap's batch means are read (the double
    bootstrap's prepivoting, Beran 1987): in the bootstrap world, where ``s`` (outputs x samples)
    is the truth, ``outer`` calibration sets of n are drawn from it, each with a batch of
    ``batch`` others; each set's own two-level bootstrap (``inner`` draws) places its batch at
    a rank u (mid-rank over ties). Reading each set's bootstrap at the ``1 - confidence``
    quantile of u covers that world's batches in ``confidence`` of cases. Kept between
    ``(1 - confidence) / 5`` (a rare loss seen once must not send the bound to the bootstrap's
    extreme draw) and ``1 - confidence`` (never less cautious than the plain two-level read)."""
    n = s.shape[1]
    sets = rng.integers(0, n, size=(outer, n))
    others = _batch_means(s, rng.integers(0, n, size=(outer, batch)))  # [outer]: the world's batches
    inner_draws = sets[:, _nested(rng, n, batch, inner)]  # [outer, inner, batch]: each set's own bootstrap
    m = _batch_means(s, inner_draws)  # [outer, inner]
    tie = 1e-12 * max(1.0, float(np.abs(s).max()))
    u = ((m < others[:, None] - tie).sum(axis=1) + 0.5 * (np.abs(m - others[:, None]) <= tie).sum(axis=1)) / inner
    tail = 1.0 - confidence
    return float(min(tail, max(tail / LEVEL_FLOOR, np.quantile(u, tail, method="inverted_cdf"))))


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
