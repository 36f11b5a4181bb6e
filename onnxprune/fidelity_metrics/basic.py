"""The two general metrics: top-1 agreement of class scores and cosine similarity."""

from __future__ import annotations

import numpy as np

from .result import MetricResult

__all__ = ["cosine", "cosine_metric", "cosine_samples", "sample_norms", "top1", "top1_agreement"]


def sample_norms(reference: np.ndarray) -> np.ndarray:
    """Each sample's (flattened) L2 norm, as ``cosine`` computes it."""
    return np.linalg.norm(reference.reshape(max(len(reference), 1), -1), axis=1)


def cosine_samples(
    reference: np.ndarray, candidate: np.ndarray, reference_norms: np.ndarray | None = None
) -> np.ndarray:
    """Cosine similarity of each sample (flattened), in [-1, 1]. An all-zero sample is identical
    to an all-zero one (1) and unlike any other (0): it has no direction. ``reference_norms``:
    ``sample_norms(reference)``, made once for many candidates."""
    r = reference.reshape(max(len(reference), 1), -1)
    g = candidate.reshape(max(len(candidate), 1), -1)
    norm_r = sample_norms(reference) if reference_norms is None else reference_norms
    norm_g = np.linalg.norm(g, axis=1)
    denom = norm_r * norm_g
    dot = (r * g).sum(axis=1)
    zero = np.where((norm_r == 0) & (norm_g == 0), 1.0, 0.0)
    cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), zero)
    return np.clip(cos, -1.0, 1.0)


def cosine(reference: np.ndarray, candidate: np.ndarray, reference_norms: np.ndarray | None = None) -> float:
    """``cosine_samples``' mean over the samples."""
    return float(cosine_samples(reference, candidate, reference_norms).mean())


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """How often the largest entry along the last axis is at the same index (every sample and
    position)."""
    return float(np.mean(np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)))


def top1(reference: np.ndarray, candidate: np.ndarray) -> MetricResult:
    """Classification: the fraction of samples (and positions, for [N, T, classes]) whose
    largest class score is at the same index as the original's. Already in [0, 1]."""
    return MetricResult(top1_agreement(reference, candidate))


def cosine_metric(reference: np.ndarray, candidate: np.ndarray) -> MetricResult:
    """Embeddings and everything else: cosine similarity per sample (flattened), mean over the
    samples. 1 is the same direction at any scale; it is kept signed (down to -1, opposite) as
    the score always was, so an opposite output ranks below an orthogonal one."""
    cos = cosine_samples(reference, candidate)
    return MetricResult(float(cos.mean()), samples=cos)
