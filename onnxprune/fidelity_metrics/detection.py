"""Detection heads: the detections above a score threshold, their classes and boxes.

Two layouts. End-to-end heads give [N, K, 6] rows (x1, y1, x2, y2, score, class) whose order
may change with the scores, so the two sets are matched greedily by IoU. Raw heads give, per
anchor, a box (cx, cy, w, h) and class scores ([N, anchors, 4 + C], or [N, 4 + C, anchors]):
anchors are the same positions in both models, so they are compared anchor by anchor.
"""

from __future__ import annotations

import numpy as np

from .result import MetricResult, NothingToCompare

__all__ = ["box_iou", "coco_credit", "detection", "detection_layout", "paired_iou"]

# COCO's IoU thresholds 0.50:0.05:0.95: a detection's credit is the share it passes.
_COCO = np.linspace(0.5, 0.95, 10)


def coco_credit(iou: np.ndarray) -> np.ndarray:
    """The fraction of COCO's IoU thresholds (0.50, 0.55, ... 0.95) an IoU reaches: 1 from
    0.95 up, 0.1 at 0.5, 0 below."""
    return (np.asarray(iou)[..., None] >= _COCO - 1e-9).mean(axis=-1)


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def _iou(inter: np.ndarray, union: np.ndarray, same: np.ndarray) -> np.ndarray:
    # Two degenerate (zero-area) boxes: identical ones agree, others do not.
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), same.astype(np.float64))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [R, 4] with every box in ``b`` [G, 4] (x1, y1, x2, y2): [R, G]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return _iou(inter, union, np.all(a[:, None] == b[None, :], axis=-1))


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box in ``a`` with the box at the same index in ``b`` (x1, y1, x2, y2)."""
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = _area(a) + _area(b) - inter
    return _iou(inter, union, np.all(a == b, axis=-1))


def detection_layout(reference: np.ndarray) -> str:
    """'end-to-end' for [N, K, 6] rows whose last column is a whole class index, 'anchors-last'
    for [N, 4 + C, anchors], 'anchors-first' for [N, anchors, 4 + C]; ValueError otherwise."""
    if reference.ndim != 3 or min(reference.shape[1:]) < 5:
        raise ValueError(
            f"shape {list(reference.shape)}: a detection output is [N, K, 6] end-to-end rows or a raw head "
            "[N, 4 + classes, anchors] / [N, anchors, 4 + classes]"
        )
    cls = reference[..., 5] if reference.shape[2] == 6 else None
    if cls is not None and np.all(cls == np.round(cls)) and np.all(cls >= 0):
        return "end-to-end"
    return "anchors-last" if reference.shape[1] < reference.shape[2] else "anchors-first"


def _match(iou: np.ndarray, least: float) -> list[tuple[int, int]]:
    """Greedy matching: the pair of highest IoU first, each detection used once, pairs below
    ``least`` never matched."""
    iou = iou.copy()
    pairs = []
    for _ in range(min(iou.shape)):
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < least:
            break
        pairs.append((int(i), int(j)))
        iou[i, :] = -1.0
        iou[:, j] = -1.0
    return pairs


def _end_to_end(ref: np.ndarray, got: np.ndarray, score: float, least: float) -> MetricResult:
    values, n_ref, n_got, matched, same_class, ious = [], 0, 0, 0, 0, []
    if not (ref[..., 4] >= score).any():
        raise NothingToCompare(f"no detection with score >= {score:g} in the reference")
    for r, g in zip(ref, got):
        r, g = r[r[:, 4] >= score], g[g[:, 4] >= score]
        n_ref, n_got = n_ref + len(r), n_got + len(g)
        if not len(r) and not len(g):
            values.append(1.0)
            continue
        iou = box_iou(r[:, :4], g[:, :4]) if len(r) and len(g) else np.zeros((len(r), len(g)))
        pairs = _match(iou, least)
        credit = 0.0
        for i, j in pairs:
            agree = r[i, 5] == g[j, 5]
            credit += float(coco_credit(iou[i, j])) * agree
            same_class += int(agree)
            ious.append(iou[i, j])
        matched += len(pairs)
        values.append(credit / (len(r) + len(g) - len(pairs)))
    return MetricResult(
        float(np.mean(values)),
        {
            "layout": "end-to-end (x1, y1, x2, y2, score, class)",
            "score_threshold": score,
            "reference_detections": n_ref,
            "candidate_detections": n_got,
            "matched": matched,
            "class_agreement": same_class / matched if matched else 0.0,
            "mean_iou": float(np.mean(ious)) if ious else 0.0,
        },
    )


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    c, half = cxcywh[..., :2], np.abs(cxcywh[..., 2:4]) / 2
    return np.concatenate([c - half, c + half], axis=-1)


def _anchors(ref: np.ndarray, got: np.ndarray, score: float, layout: str) -> MetricResult:
    if layout == "anchors-last":
        ref, got = np.swapaxes(ref, 1, 2), np.swapaxes(got, 1, 2)
    sr, sg = ref[..., 4:], got[..., 4:]
    pr, pg = sr.max(axis=-1), sg.max(axis=-1)
    above_r, above_g = pr >= score, pg >= score
    if not above_r.any():
        raise NothingToCompare(f"no anchor with a class score >= {score:g} in the reference")
    agree = above_r & above_g & (sr.argmax(axis=-1) == sg.argmax(axis=-1))
    credit = np.where(agree, coco_credit(paired_iou(_xyxy(ref[..., :4]), _xyxy(got[..., :4]))), 0.0)
    union = (above_r | above_g).sum(axis=1)
    values = np.where(union > 0, credit.sum(axis=1) / np.maximum(union, 1), 1.0)
    both = above_r & above_g
    return MetricResult(
        float(values.mean()),
        {
            "layout": f"raw head, {layout} (cx, cy, w, h, {sr.shape[-1]} class scores per anchor)",
            "score_threshold": score,
            "reference_detections": int(above_r.sum()),
            "candidate_detections": int(above_g.sum()),
            "matched": int(both.sum()),
            "class_agreement": float(agree.sum() / both.sum()) if both.any() else 0.0,
            "mean_iou": float(paired_iou(_xyxy(ref[..., :4]), _xyxy(got[..., :4]))[both].mean()) if both.any() else 0.0,
        },
    )


def detection(reference: np.ndarray, candidate: np.ndarray, score: float = 0.25, iou: float = 0.5) -> MetricResult:
    """Detection heads (samples first). The detections are those with score >= ``score``
    (0.25, as Ultralytics predicts by default) in either model; a pair of detections, one from
    each model, counts when it is matched (end-to-end: greedily by IoU, at least ``iou``; raw
    heads: the same anchor) and has the same class; its credit is the share of COCO's IoU
    thresholds 0.50:0.05:0.95 its boxes reach (1 from IoU 0.95). Per sample the score is the
    credit over the detections of either model, counting a matched pair once (a soft IoU of
    the two sets): a sample where neither model detects anything is identical (1). Mean over
    samples. Raises NothingToCompare when the reference has no detection at all."""
    layout = detection_layout(reference)
    if layout == "end-to-end":
        return _end_to_end(reference, candidate, score, iou)
    return _anchors(reference, candidate, score, layout)
