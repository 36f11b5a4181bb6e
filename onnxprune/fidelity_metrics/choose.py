"""Which metric scores an output, and why: from its shape and the reference's values alone
(deterministic), with the sibling outputs in view (a detection head's box regression sits
beside its class scores)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Choice", "detect_metric", "detect_metrics"]

# A CTC recogniser's blank is the top class on most steps (CTC's peaky outputs); a per-position
# classifier rarely has one class on a third of all positions at index 0 or C - 1.
CTC_BLANK_SHARE = 0.3
CTC_MIN_CLASSES = 10  # digits and a blank, at least
CTC_MIN_STEPS = 8
RAW_HEAD_MIN_ANCHORS = 100
END_TO_END_MIN_ROWS = 20


@dataclass(frozen=True)
class Choice:
    """An output's metric, its parameters and the reason it was chosen."""

    metric: str
    reason: str
    params: dict = field(default_factory=dict)


def _shape(r: np.ndarray, batch_axis: int) -> str:
    dims = ["N", *(str(d) for d in r.shape[1:])]
    if batch_axis:  # shown in the model's own order
        dims.insert(batch_axis, dims.pop(0))
    return "[" + ",".join(dims) + "]"


def _in_unit(r: np.ndarray) -> bool:
    return bool(r.size) and float(r.min()) >= 0.0 and float(r.max()) <= 1.0


def _distribution(r: np.ndarray) -> bool:
    """Every row along the last axis sums to 1 (a softmax), as class scores do."""
    return r.shape[-1] >= 2 and bool(np.all(np.abs(r.sum(axis=-1) - 1.0) <= 1e-3))


def _end_to_end(r: np.ndarray) -> bool:
    if r.ndim != 3 or r.shape[2] != 6 or r.shape[1] < END_TO_END_MIN_ROWS:
        return False
    cls, score = r[..., 5], r[..., 4]
    return bool(np.all(cls == np.round(cls)) and np.all(cls >= 0) and _in_unit(score))


def _raw_head(r: np.ndarray) -> str | None:
    """'[4 + C, anchors]' or '[anchors, 4 + C]' for a raw head: a box (cx, cy, w, h) in pixels
    and class scores in [0, 1] per anchor, many more anchors than features."""
    if r.ndim != 3:
        return None
    feats, anchors = sorted(r.shape[1:])
    if feats < 5 or anchors < RAW_HEAD_MIN_ANCHORS or anchors < 4 * feats:
        return None
    rows = r if r.shape[2] == feats else np.swapaxes(r, 1, 2)
    boxes, scores = rows[..., :4], rows[..., 4:]
    if not _in_unit(scores) or float(boxes.max()) <= 1.0 or float(boxes[..., 2:].min()) < 0.0:
        return None
    return f"{feats} features (4 box coordinates in pixels, {feats - 4} class scores in [0, 1]) for each of {anchors} anchors"


def _blank(r: np.ndarray) -> tuple[int, float]:
    top = np.argmax(r, axis=-1)
    c = r.shape[-1]
    share0, share_last = float(np.mean(top == 0)), float(np.mean(top == c - 1))
    return (0, share0) if share0 >= share_last else (c - 1, share_last)


def detect_metric(r: np.ndarray, batch_axis: int = 0) -> Choice:
    """The metric of one output from the reference's samples (samples first; ``batch_axis`` is
    where the model has them, for the reason's text)."""
    shape = _shape(r, batch_axis)
    per_sample = int(np.prod(r.shape[1:])) if r.ndim > 1 else 1
    seq_first = f", samples on axis {batch_axis}" if batch_axis else ""
    if per_sample <= 1:
        if _in_unit(r) and float(r.min()) < 0.5 < float(r.max()):
            # Cosine of one positive number is always 1: a probability is judged by its decision.
            return Choice(
                "dense",
                f"shape {shape}: one probability per sample, on both sides of 0.5 in the reference: "
                "the decision at 0.5 compared",
            )
        return Choice("cosine", f"shape {shape}: one value per sample")
    if _end_to_end(r):
        return Choice(
            "detection",
            f"shape {shape}: end-to-end detections (x1, y1, x2, y2, score, class): whole class indices, scores in [0, 1]",
        )
    raw = _raw_head(r)
    if raw:
        return Choice("detection", f"shape {shape}: a raw detection head, {raw}")
    if _in_unit(r) and not _distribution(r):
        return Choice(
            "dense",
            f"shape {shape}: values in [0, 1] that do not sum to 1 over the last axis: independent probabilities "
            "(a probability map, multi-label or per-anchor scores)",
        )
    if r.ndim == 3 and not _in_unit(r) and float(np.abs(r).max()) <= 1.0:
        return Choice("cosine", f"shape {shape}{seq_first}: values within [-1, 1]: a tanh-bounded state or features")
    if r.ndim == 3 and r.shape[1] >= 2 and r.shape[2] >= 2:
        blank, share = _blank(r)
        if r.shape[2] >= CTC_MIN_CLASSES and r.shape[1] >= CTC_MIN_STEPS and share >= CTC_BLANK_SHARE:
            return Choice(
                "ctc",
                f"shape {shape}{seq_first}: {r.shape[2]} class scores per step, class {blank} on top on "
                f"{share:.0%} of steps (a CTC blank)",
                {"blank": blank},
            )
        return Choice("top1", f"shape {shape}{seq_first}: class scores per position ({r.shape[2]} classes)")
    if r.ndim == 2:
        return Choice("top1", f"shape {shape}: class scores ({r.shape[1]} classes)")
    return Choice("cosine", f"shape {shape}: no task recognised (features, embedding or regression)")


def detect_metrics(names: Sequence[str], samples: Sequence[np.ndarray], batch_axes: Sequence[int]) -> list[Choice]:
    """Every output's metric. An output read per anchor (top1 or ctc, [N, anchors, K]) beside
    a score map or raw head with the same anchors is that head's box regression: cosine."""
    choices = [detect_metric(r, a) for r, a in zip(samples, batch_axes)]
    heads = {
        r.shape[:2]: name
        for name, r, c in zip(names, samples, choices)
        if c.metric in ("dense", "detection") and r.ndim == 3 and r.shape[1] >= RAW_HEAD_MIN_ANCHORS
    }
    for i, (r, c) in enumerate(zip(samples, choices)):
        if c.metric in ("top1", "ctc") and r.ndim == 3 and r.shape[:2] in heads:
            choices[i] = Choice(
                "cosine",
                f"shape {_shape(r, batch_axes[i])}: box regression beside the scores {heads[r.shape[:2]]!r} "
                f"(the same {r.shape[1]} anchors)",
            )
    return choices
