"""Parameter edits as values: what a rule asks the surgery to do to one operand of a node, and
how an edit list is applied to an array (the surgery commits them copy-on-write)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Edit", "GroupColumns", "SetValue", "SliceAxis", "apply_edits", "edit_key"]


@dataclass(frozen=True, eq=False)
class SliceAxis:
    """Keep the positions of ``axis`` where ``keep`` is True."""

    axis: int
    keep: np.ndarray  # bool, one per position

    def key(self) -> tuple:
        return ("slice", self.axis, self.keep.tobytes())


@dataclass(frozen=True, eq=False)
class GroupColumns:
    """A grouped weight [groups * rows, cols]: keep column ``keep[g]`` of each group's rows."""

    groups: int
    keep: np.ndarray  # bool [groups, cols]

    def key(self) -> tuple:
        return ("cols", self.groups, self.keep.tobytes(), self.keep.shape)


@dataclass(frozen=True, eq=False)
class SetValue:
    """Replace the value outright (cast to the operand's dtype)."""

    values: np.ndarray

    def key(self) -> tuple:
        arr = np.asarray(self.values)
        return ("set", arr.dtype.str, arr.shape, arr.tobytes())


Edit = SliceAxis | GroupColumns | SetValue


def edit_key(edits: Sequence[Edit]) -> tuple:
    """Equal for equal edit lists: readers asking for the same edit share one new tensor."""
    return tuple(e.key() for e in edits)


def apply_edits(arr: np.ndarray, edits: Sequence[Edit]) -> np.ndarray:
    """``arr`` with ``edits`` applied in order (a new contiguous array)."""
    i = 0
    while i < len(edits):
        edit = edits[i]
        if isinstance(edit, SliceAxis):
            # Slices of several axes in a row are taken in one copy: a big weight sliced on both
            # axes would otherwise exist three times at once.
            masks: dict[int, np.ndarray] = {}
            while i < len(edits) and isinstance(edits[i], SliceAxis) and edits[i].axis not in masks:
                masks[edits[i].axis] = edits[i].keep
                i += 1
            arr = _slice_axes(arr, masks)
            continue
        if isinstance(edit, SetValue):  # a later set (after slicing) replaces the value outright
            arr = np.asarray(edit.values).astype(arr.dtype)
        else:
            groups, keep = edit.groups, edit.keep
            rows = arr.shape[0] // groups
            arr = np.concatenate([arr[g * rows : (g + 1) * rows][:, keep[g]] for g in range(groups)], axis=0)
        i += 1
    return np.ascontiguousarray(arr)


def _slice_axes(arr: np.ndarray, masks: dict[int, np.ndarray]) -> np.ndarray:
    if not arr.flags.aligned and arr.ndim and arr.nbytes >= _BLOCK_BYTES:
        return _slice_unaligned(arr, masks)
    if len(masks) == 1 or arr.nbytes < _ONE_COPY_BYTES:  # one compress per axis is faster
        for axis, keep in masks.items():
            arr = np.compress(keep, arr, axis=axis)
        return arr
    index = [np.flatnonzero(masks[a]) if a in masks else np.arange(n) for a, n in enumerate(arr.shape)]
    return arr[np.ix_(*index)]


_ONE_COPY_BYTES = 64 << 20  # from this size, memory matters more than the few ms np.ix_ costs
_BLOCK_BYTES = 16 << 20


def _slice_unaligned(arr: np.ndarray, masks: dict[int, np.ndarray]) -> np.ndarray:
    """Slice a weight that is a view of the model file's bytes at an offset its item size does
    not divide: numpy would first copy all of it to aligned memory. Rows are taken a block at
    a time instead (each block an aligned copy) and sliced into the result."""
    rows = np.flatnonzero(masks[0]) if 0 in masks else np.arange(arr.shape[0])
    rest = {a: m for a, m in masks.items() if a != 0}
    shape = [len(rows), *(int(np.count_nonzero(masks[a])) if a in masks else n for a, n in enumerate(arr.shape) if a)]
    out = np.empty(shape, dtype=arr.dtype)
    step = max(1, _BLOCK_BYTES // max(1, arr[:1].nbytes))
    for start in range(0, len(rows), step):
        block = arr[rows[start : start + step]]  # fancy indexing: an aligned copy of these rows
        for axis, keep in rest.items():
            block = np.compress(keep, block, axis=axis)
        out[start : start + len(block)] = block
    return out
