"""Weight-based criteria: each scores every output channel of a layer (higher = keep)."""

from __future__ import annotations

import warnings

import numpy as np

from .filters import LayerFilters

__all__ = ["bn_gamma", "fpgm", "kmeans", "l1", "l2", "random_scores"]


def l1(layer: LayerFilters, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of absolute weights of each filter (Li et al., Pruning Filters for Efficient ConvNets)."""
    return np.abs(layer.filters).sum(axis=1, dtype=np.float64)


def l2(layer: LayerFilters, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Euclidean norm of each filter."""
    return np.sqrt(np.square(layer.filters, dtype=np.float64).sum(axis=1))


def fpgm(layer: LayerFilters, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of distances to the layer's other filters (He et al., CVPR 2019): filters near the
    geometric median are the most replaceable, so they score lowest."""
    f = layer.filters.astype(np.float64)
    sq = np.square(f).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (f @ f.T), 0.0)
    return np.sqrt(d2).sum(axis=1)


def random_scores(layer: LayerFilters, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded random scores: the baseline every criterion must beat."""
    return rng.random(len(layer.filters))


def kmeans(layer: LayerFilters, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster the filters into ``keep`` clusters and keep the filter nearest each centroid
    (Ridurre's method): those score 1 + their L2 norm, the others their L2 norm only, so a
    budget that keeps ``keep`` filters keeps exactly the representatives."""
    from scipy.cluster.vq import kmeans2  # well-tested k-means; imported only when asked for

    f = layer.filters.astype(np.float64)
    n = len(f)
    norms = np.sqrt(np.square(f).sum(axis=1))
    base = norms / (norms.max() + 1e-12)  # in [0, 1]: ties broken by norm, below any representative
    if keep >= n or keep < 1:
        return base + 1.0
    # Clustering cost grows with filters x clusters x fan-in: wide layers are clustered on a
    # seeded random projection to 64 dimensions (distances kept up to a small factor, JL).
    if f.shape[1] > 64:
        f = f @ (rng.standard_normal((f.shape[1], 64)) / 8.0)
    with warnings.catch_warnings():  # an empty cluster just leaves fewer representatives
        warnings.simplefilter("ignore")
        # k-means++ seeding loops in Python over the clusters: random points for many clusters.
        init = "++" if keep <= 256 else "points"
        centroids, labels = kmeans2(f, keep, minit=init, seed=rng, missing="warn", iter=5)
    chosen = set()
    for k in range(keep):
        members = np.flatnonzero(labels == k)
        if len(members) == 0:
            continue
        d = np.square(f[members] - centroids[k]).sum(axis=1)
        chosen.add(int(members[np.argmin(d)]))
    scores = base.copy()
    scores[sorted(chosen)] += 1.0
    return scores


def bn_gamma(layer: LayerFilters, keep: int, rng: np.random.Generator) -> np.ndarray:
    """|gamma| of the BatchNormalization that follows (network slimming); NaN without one,
    which keeps the whole layer."""
    if layer.bn_gamma is None or len(layer.bn_gamma) != len(layer.filters):
        return np.full(len(layer.filters), np.nan)
    return layer.bn_gamma
