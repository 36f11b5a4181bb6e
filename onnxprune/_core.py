"""Protobuf-free data structures of the channel analysis: channel ids, layouts, union-find."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

__all__ = ["Layout", "NotApplicable", "UnionFind"]


@dataclass(frozen=True)
class NotApplicable:
    """A rule's answer "I cannot map channels through this node", with the reason.

    Returned, not raised: the analysis then pins every channel the node touches.
    """

    reason: str


@dataclass(frozen=True, eq=False)
class Layout:
    """The channel ids of one tensor: for each axis that carries channels, one id per position.

    ``consts`` optionally gives, per carrying axis, the value each position is known to have
    everywhere (NaN = not constant). It feeds the zero criterion.
    """

    rank: int
    axes: Mapping[int, np.ndarray]
    consts: Mapping[int, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        axes = {int(a) % max(self.rank, 1): np.asarray(v, dtype=np.int64) for a, v in self.axes.items()}
        consts = {int(a) % max(self.rank, 1): np.asarray(v, dtype=np.float64) for a, v in self.consts.items()}
        for a, c in consts.items():
            if a not in axes or c.shape != axes[a].shape:
                raise ValueError("constants must match a channel axis")
        object.__setattr__(self, "axes", MappingProxyType(axes))
        object.__setattr__(self, "consts", MappingProxyType(consts))

    @property
    def single_axis(self) -> int | None:
        return next(iter(self.axes)) if len(self.axes) == 1 else None

    def const(self, axis: int) -> np.ndarray:
        """Known constant per position along ``axis`` (NaN where unknown)."""
        c = self.consts.get(axis)
        return c if c is not None else np.full(len(self.axes[axis]), np.nan)

    def all_ids(self) -> np.ndarray:
        return np.concatenate([v for v in self.axes.values()]) if self.axes else np.zeros(0, np.int64)


class UnionFind:
    """Union-find over integer channel ids, grown on demand."""

    def __init__(self) -> None:
        self._parent = np.zeros(0, dtype=np.int64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def fresh(self, n: int) -> np.ndarray:
        start = self._size
        self._size += n
        if self._size > len(self._parent):
            grown = np.arange(max(self._size, 2 * len(self._parent) + 16), dtype=np.int64)
            grown[: len(self._parent)] = self._parent
            self._parent = grown
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        p = self._parent
        root = int(i)
        while p[root] != root:
            root = int(p[root])
        while p[i] != root:  # path compression
            p[i], i = root, int(p[i])
        return root

    def roots(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) < 64:
            return np.fromiter((self.find(int(i)) for i in ids), dtype=np.int64, count=len(ids))
        # Pointer jumping over the whole forest: log2(depth) vectorised rounds, not a Python
        # loop per id (the analysis of a 5,000-layer net asks for every id at once).
        p = self._parent[: self._size].copy()
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p[ids]
            p = q

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            self._parent[hi] = lo
            return lo
        return ra

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.asarray(a, dtype=np.int64).ravel(), np.asarray(b, dtype=np.int64).ravel()
        if len(a) < 64:
            for x, y in zip(a.tolist(), b.tolist()):
                self.union(x, y)
            return
        # Vectorised: link the higher root of each pair under the lower. Pairs sharing a root
        # overwrite each other's link; the next round, on fresh roots, joins what was left.
        ra, rb = self.roots(a), self.roots(b)
        while True:
            apart = ra != rb
            if not apart.any():
                return
            self._parent[np.maximum(ra, rb)[apart]] = np.minimum(ra, rb)[apart]
            ra, rb = self.roots(a), self.roots(b)
