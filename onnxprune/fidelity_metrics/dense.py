"""Dense maps (probability maps, multi-label scores): the regions above a threshold."""

from __future__ import annotations

import numpy as np

from .result import MetricResult, NothingToCompare

__all__ = ["dense", "dense_threshold"]


def dense_threshold(reference: np.ndarray) -> tuple[np.ndarray, str]:
    """The threshold per sample, from the reference alone: 0.5 for probabilities (every value
    in [0, 1]); 0 for logits (values of both signs: 0 is probability 0.5); otherwise the
    midpoint of the sample's range."""
    n = len(reference)
    flat = reference.reshape(n, -1)
    if flat.size and flat.min() >= 0.0 and flat.max() <= 1.0:
        return np.full(n, 0.5), "0.5 (probabilities)"
    if flat.size and flat.min() < 0.0 < flat.max():
        return np.zeros(n), "0 (logits: probability 0.5)"
    mid = (flat.min(axis=1) + flat.max(axis=1)) / 2 if flat.size else np.zeros(n)
    return mid, "the midpoint of each sample's range"


def dense(reference: np.ndarray, candidate: np.ndarray, threshold: float | None = None) -> MetricResult:
    """Dense maps ([N, ...], samples first): both maps are thresholded (``threshold``, or the
    rule of ``dense_threshold``) and compared by IoU of the cells above it, per sample, mean
    over samples; a sample where neither map has a cell above is identical (1). Beside it: the
    largest and mean abs error relative to the reference's range (max - min). Raises
    NothingToCompare when no reference sample has a cell above the threshold."""
    n = len(reference)
    r, g = reference.reshape(n, -1), candidate.reshape(n, -1)
    if threshold is None:
        t, rule = dense_threshold(reference)
    else:
        t, rule = np.full(n, float(threshold)), f"{threshold:g} (given)"
    above_r, above_g = r > t[:, None], g > t[:, None]
    count_r = np.count_nonzero(above_r, axis=1)
    if not count_r.any():
        raise NothingToCompare(f"no value above the threshold {rule} in the reference")
    inter = np.count_nonzero(above_r & above_g, axis=1)
    union = count_r + np.count_nonzero(above_g, axis=1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    span = float(r.max() - r.min()) if r.size else 0.0
    err = np.abs(r - g)
    return MetricResult(
        float(iou.mean()),
        {
            "threshold": rule,
            "iou": float(iou.mean()),
            "worst_sample_iou": float(iou.min()),
            "reference_above": float(count_r.sum() / max(r.size, 1)),
            "max_error_of_range": float(err.max() / span) if span > 0 else float(err.max() > 0),
            "mean_error_of_range": float(err.mean() / span) if span > 0 else float(err.mean() > 0),
        },
    )
