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
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 299), st.integers(0, 299)), min_size=1, max_size=200), min_size=1, max_size=6
    ),
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
    """edits.apply_edits takes consecutive slices in one copy; the result is the same as
    slicing one axis after the other."""
    from onnxprune import edits

    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    ops = [
        edits.SliceAxis(a, np.array(data.draw(st.lists(st.booleans(), min_size=shape[a], max_size=shape[a]))))
        for a in axes
    ]
    want = arr
    for axis, keep in ((op.axis, op.keep) for op in ops):
        want = np.compress(keep, want, axis=axis)
    default = edits._ONE_COPY_BYTES
    for threshold in (0, default):  # np.ix_ (big arrays) and one compress per axis (small)
        edits._ONE_COPY_BYTES = threshold
        try:
            got = edits.apply_edits(arr, ops)
        finally:
            edits._ONE_COPY_BYTES = default
        assert got.shape == want.shape and np.array_equal(got, want) and got.flags.c_contiguous


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_slicing_a_weight_at_an_unaligned_offset(shape: list[int], data: st.DataObject) -> None:
    """Weights viewed in the model file's bytes may sit at an offset their item size does not
    divide; they are sliced a block of rows at a time, with the same result."""
    from onnxprune import edits

    n = int(np.prod(shape))
    raw = b"\0" + np.arange(n, dtype=np.float32).tobytes()
    arr = np.frombuffer(raw, dtype=np.float32, count=n, offset=1).reshape(shape)
    assert not arr.flags.aligned
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    ops = [
        edits.SliceAxis(a, np.array(data.draw(st.lists(st.booleans(), min_size=shape[a], max_size=shape[a]))))
        for a in axes
    ]
    want = np.array(arr)
    for axis, keep in ((op.axis, op.keep) for op in ops):
        want = np.compress(keep, want, axis=axis)
    default = edits._BLOCK_BYTES
    edits._BLOCK_BYTES = 8  # a few rows per block, and the block path for every size
    try:
        got = edits.apply_edits(arr, ops)
    finally:
        edits._BLOCK_BYTES = default
    assert got.shape == want.shape and np.array_equal(got, want) and got.flags.aligned


def test_edits_are_named_values_and_equal_edits_share_a_key() -> None:
    """Surgery edits are frozen named types; two readers asking for the same edit list get the
    same key (so they share one new tensor), a different mask or axis gives another key."""
    import dataclasses

    import pytest

    from onnxprune.edits import GroupColumns, SetValue, SliceAxis, apply_edits, edit_key

    keep = np.array([True, False, True])
    a = [SliceAxis(0, keep), SetValue(np.zeros(2, np.float32))]
    b = [SliceAxis(0, keep.copy()), SetValue(np.zeros(2, np.float32))]
    assert edit_key(a) == edit_key(b)
    assert edit_key([SliceAxis(1, keep)]) != edit_key([SliceAxis(0, keep)])
    assert edit_key([SliceAxis(0, ~keep)]) != edit_key([SliceAxis(0, keep)])
    assert edit_key([SetValue(np.zeros(2, np.float64))]) != edit_key([SetValue(np.zeros(2, np.float32))])
    with pytest.raises(dataclasses.FrozenInstanceError):
        a[0].axis = 1  # type: ignore[misc]
    w = np.arange(12, dtype=np.float32).reshape(4, 3)  # 2 groups of 2 rows
    cols = GroupColumns(2, np.array([[True, False, True], [False, True, True]]))
    got = apply_edits(w, [cols])
    assert np.array_equal(got, np.array([[0, 2], [3, 5], [7, 8], [10, 11]], np.float32))
    assert np.array_equal(
        apply_edits(w, [SliceAxis(0, np.array([1, 0, 0, 1], bool)), SetValue(np.ones((2, 3)))]),
        np.ones((2, 3), np.float32),
    )
