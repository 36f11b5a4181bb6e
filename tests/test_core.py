"""The union-find of channel ids: the vectorised paths must give the same partition as one
union at a time."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from hypothesis import given, settings

from onnxprune._core import UnionFind


def _partition(roots: np.ndarray) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, r in enumerate(roots.tolist()):
        groups.setdefault(r, set()).add(i)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(70, 300),
    batches=st.lists(st.lists(st.tuples(st.integers(0, 299), st.integers(0, 299)), min_size=1, max_size=200), min_size=1, max_size=6),
)
def test_vectorised_unions_match_one_at_a_time(n: int, batches: list[list[tuple[int, int]]]) -> None:
    fast, slow = UnionFind(), UnionFind()
    fast.fresh(n)
    slow.fresh(n)
    for batch in batches:
        pairs = np.array([(a % n, b % n) for a, b in batch], dtype=np.int64)
        fast.union_arrays(pairs[:, 0], pairs[:, 1])
        for a, b in pairs.tolist():
            slow.union(a, b)
    fast_roots = fast.roots(np.arange(n))
    slow_roots = np.array([slow.find(i) for i in range(n)])
    assert _partition(fast_roots) == _partition(slow_roots)
    assert np.array_equal(fast_roots, slow_roots)  # the root is the smallest id either way
    assert all(fast.find(i) == r for i, r in enumerate(fast_roots.tolist()))


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data())
def test_slices_of_several_axes_in_one_copy(shape: list[int], data: st.DataObject) -> None:
    """surgery._apply_ops takes consecutive slices in one copy; the result is the same as
    slicing one axis after the other."""
    import onnxprune.surgery as surgery

    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    ops = [("slice", a, np.array(data.draw(st.lists(st.booleans(), min_size=shape[a], max_size=shape[a])))) for a in axes]
    want = arr
    for _, axis, keep in ops:
        want = np.compress(keep, want, axis=axis)
    default = surgery._ONE_COPY_BYTES
    for threshold in (0, default):  # np.ix_ (big arrays) and one compress per axis (small)
        surgery._ONE_COPY_BYTES = threshold
        try:
            got = surgery._apply_ops(arr, ops)
        finally:
            surgery._ONE_COPY_BYTES = default
        assert got.shape == want.shape and np.array_equal(got, want) and got.flags.c_contiguous


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_slicing_a_weight_at_an_unaligned_offset(shape: list[int], data: st.DataObject) -> None:
    """Weights viewed in the model file's bytes may sit at an offset their item size does not
    divide; they are sliced a block of rows at a time, with the same result."""
    import onnxprune.surgery as surgery

    n = int(np.prod(shape))
    raw = b"\0" + np.arange(n, dtype=np.float32).tobytes()
    arr = np.frombuffer(raw, dtype=np.float32, count=n, offset=1).reshape(shape)
    assert not arr.flags.aligned
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    ops = [("slice", a, np.array(data.draw(st.lists(st.booleans(), min_size=shape[a], max_size=shape[a])))) for a in axes]
    want = np.array(arr)
    for _, axis, keep in ops:
        want = np.compress(keep, want, axis=axis)
    default = surgery._BLOCK_BYTES
    surgery._BLOCK_BYTES = 8  # a few rows per block, and the block path for every size
    try:
        got = surgery._apply_ops(arr, ops)
    finally:
        surgery._BLOCK_BYTES = default
    assert got.shape == want.shape and np.array_equal(got, want) and got.flags.aligned
