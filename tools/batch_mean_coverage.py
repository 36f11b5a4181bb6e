"""Coverage of the batch-mean rule (onnxprune/fidelity_metrics/batch_mean.py): how often the mean
over a batch of B other inputs reads at least the bound, the bound computed from n calibration
samples drawn from the same population. Deterministic (fixed seeds); simulated populations of
per-sample scores (a continuous score is 1 at no loss) and, optionally, measured scores.

    PYTHONPATH=$PWD python tools/batch_mean_coverage.py [--trials 1000] [--scores FILE.npz:KEY]...

Per population: the true 5% quantile of a batch's mean, then per method (``plain``: the
two-level bootstrap read at 1 - confidence, the rule before session 15; ``calibrated``: read at
the double bootstrap's calibrated level, the rule now) the share of (calibration set, batch)
pairs whose batch reads >= the bound, and the bounds' mean and spread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from onnxprune.fidelity_metrics.batch_mean import batch_mean_bound


def populations() -> dict[str, np.ndarray]:
    """Simulated per-sample scores: normal, lognormal losses (heavier tails as the log-sd grows)
    and atoms at 1 (dense maps unchanged) with a tail of losses."""
    rng = np.random.default_rng(1)
    size = 100_000
    out = {
        "normal 0.97 sd 0.01": np.clip(0.97 + 0.01 * rng.standard_normal(size), 0, 1),
        "lognormal loss, log-sd 0.5": 1 - np.exp(rng.normal(np.log(0.01), 0.5, size)),
        "lognormal loss, log-sd 1": 1 - np.exp(rng.normal(np.log(0.01), 1.0, size)),
        "lognormal loss, log-sd 1.5": 1 - np.exp(rng.normal(np.log(0.005), 1.5, size)),
    }
    rng = np.random.default_rng(2)
    out["50% at 1, else U(0.95, 1)"] = np.where(rng.random(size) < 0.5, 1.0, rng.uniform(0.95, 1.0, size))
    out["80% at 1, else U(0.9, 1)"] = np.where(rng.random(size) < 0.8, 1.0, rng.uniform(0.9, 1.0, size))
    out["95% at 1, else U(0.5, 1)"] = np.where(rng.random(size) < 0.95, 1.0, rng.uniform(0.5, 1.0, size))
    return out


def coverage(
    population: np.ndarray, n: int, batch: int, confidence: float, trials: int, *, calibrated: bool, seed: int = 11
) -> tuple[float, np.ndarray]:
    """(share of trials whose batch mean >= the bound, the bounds). Each trial draws n calibration
    scores and a batch of ``batch`` (without replacement from a population of >= 64 scores)."""
    rng = np.random.default_rng(seed)
    replace = len(population) < 64
    hits, bounds = 0, []
    for _ in range(trials):
        cal = rng.choice(population, n, replace=replace)
        held = rng.choice(population, batch, replace=replace).mean()
        b = batch_mean_bound([cal], batch, confidence, calibrated=calibrated)
        hits += held >= b
        bounds.append(b)
    return hits / trials, np.asarray(bounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--scores", action="append", default=[], help="FILE.npz:KEY, measured per-sample scores")
    a = ap.parse_args()
    pops = {}
    for spec in a.scores:
        f, key = spec.rsplit(":", 1)
        pops[f"{Path(f).name}:{key}"] = np.asarray(np.load(f)[key], np.float64)
    pops.update(populations())
    for name, pop in pops.items():
        rng = np.random.default_rng(7)
        replace = len(pop) < 64
        truth = np.quantile([rng.choice(pop, a.batch, replace=replace).mean() for _ in range(20000)], 1 - a.confidence)
        cells = []
        for calibrated in (False, True):
            cov, b = coverage(pop, a.n, a.batch, a.confidence, a.trials, calibrated=calibrated)
            cells.append(f"{'calibrated' if calibrated else 'plain'} {cov:.3f} (bound {b.mean():.4f} ± {b.std():.4f})")
        print(f"{name}: true {1 - a.confidence:g} quantile {truth:.4f} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
