"""Fitting one unit's measured latencies: the channel step and a monotone curve.

Pure functions over ``(kept channels, seconds)`` points. A CPU kernel works on blocks of
channels (the SIMD width, a blocked memory layout): with step ``s``, every kept count in one
block costs the same as the block's end, ``min(ceil(kept / s) * s, channels)``. The step is
chosen by measurement: the candidate whose block-mapped counts explain the points best with a
straight line, and only when it explains them clearly better than no step (``s = 1``) does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["STEP_CANDIDATES", "block_end", "detect_step", "isotonic", "monotone_curve", "predict_from_curve"]

STEP_CANDIDATES = (1, 2, 4, 8, 16, 32, 64)
# The best step must cut the straight line's squared residuals by this factor to be believed:
# with noise only, the candidates differ by chance, well within it.
_STEP_EVIDENCE = 4.0


def block_end(kept: int, step: int, channels: int) -> int:
    """The kept count a kernel with blocks of ``step`` channels really computes."""
    return min(-(-kept // step) * step, channels) if step > 1 else min(kept, channels)


def _rss(xs: np.ndarray, ts: np.ndarray) -> tuple[float, float]:
    """Residual sum of squares of the least-squares line t = a + b x, and its slope b."""
    if len(set(xs.tolist())) < 2:
        return float(np.sum((ts - ts.mean()) ** 2)), 0.0
    b, a = np.polyfit(xs, ts, 1)
    return float(np.sum((ts - (a + b * xs)) ** 2)), float(b)


def detect_step(
    points: Sequence[tuple[int, float]],
    channels: int,
    *,
    noise: float = 0.0,
    candidates: Sequence[int] = STEP_CANDIDATES,
) -> int | None:
    """The channel granularity at which these points' latency changes, or None when it does
    not change measurably (every point within ``noise`` seconds of the others) or there are
    too few distinct counts to tell.

    Each candidate step maps the counts to their block ends and fits a line; the candidate with
    the smallest residuals wins (ties: the smaller step), and a step above 1 only if its
    residuals are clearly below the unblocked line's (beyond ``noise`` and by a factor)."""
    if len({k for k, _ in points}) < 3:
        return None
    ks = np.array([k for k, _ in points], dtype=np.float64)
    ts = np.array([t for _, t in points], dtype=np.float64)
    if float(ts.max() - ts.min()) <= noise:
        return None
    fits = []
    for s in sorted(set(candidates) | {1}):
        if s > channels:
            continue
        xs = np.array([block_end(int(k), s, channels) for k in ks], dtype=np.float64)
        if len(set(xs.tolist())) < 2:
            continue
        rss, slope = _rss(xs, ts)
        if slope > 0:
            fits.append((rss, s))
    if not fits:
        return None
    line = next((rss for rss, s in fits if s == 1), math.inf)
    floor = len(ts) * noise**2
    best_rss = min(rss for rss, _ in fits)
    # Ties within noise go to the smaller step (the simpler claim).
    best = min(s for rss, s in fits if rss <= best_rss + floor + 1e-12 * (1.0 + best_rss))
    if best == 1:
        return 1
    rss_best = next(rss for rss, s in fits if s == best)
    return best if line > _STEP_EVIDENCE * rss_best + floor else 1


def isotonic(values: Sequence[float]) -> list[float]:
    """Least-squares non-decreasing sequence (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    out: list[float] = []
    for m, w in blocks:
        out.extend([m] * int(w))
    return out


def monotone_curve(
    points: Sequence[tuple[int, float]], step: int | None, channels: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Knots of the fitted curve: the points' block ends (median of points sharing one) made
    non-decreasing in the count."""
    s = step or 1
    by_x: dict[int, list[float]] = {}
    for k, t in points:
        by_x.setdefault(block_end(int(k), s, channels), []).append(float(t))
    xs = sorted(by_x)
    return tuple(xs), tuple(isotonic([float(np.median(by_x[x])) for x in xs]))


def predict_from_curve(xs: Sequence[int], ts: Sequence[float], step: int | None, channels: int, kept: int) -> float:
    """Latency at ``kept`` channels: its block end, linearly between the knots, held flat
    outside them (no saving is promised beyond what was measured)."""
    if not xs:
        raise ValueError("no measured points")
    x = block_end(int(kept), step or 1, channels)
    return float(np.interp(x, xs, ts))
