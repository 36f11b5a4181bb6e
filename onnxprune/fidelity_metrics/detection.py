"""Detection heads: the detections above a score threshold, their classes and boxes.

Two layouts. End-to-end heads give [N, K, 6] rows (x1, y1, x2, y2, score, class) whose order
may change with the scores. Raw heads give, per anchor, a box (cx, cy, w, h) and class scores
([N, anchors, 4 + C], or [N, 4 + C, anchors]); they are decoded and NMS'd as their
post-processing would, so duplicates of one object flickering at the threshold do not count.
Either way the two sets of detections are matched greedily by IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .result import MetricResult, NothingToCompare

__all__ = ["DetectionParts", "box_iou", "coco_credit", "detection", "detection_layout", "detection_parts", "nms"]

MAX_CANDIDATES = 1000  # boxes above the score threshold that enter NMS, best first
MAX_DETECTIONS = 300  # kept after it (Ultralytics' max_det)

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
    ``least`` never matched (ties: the earlier row, then the earlier column)."""
    i, j = np.nonzero(iou >= least)
    order = np.lexsort((j, i, -iou[i, j]))
    used_r, used_g = set(), set()
    pairs = []
    for a, b in zip(i[order].tolist(), j[order].tolist()):
        if a not in used_r and b not in used_g:
            used_r.add(a)
            used_g.add(b)
            pairs.append((a, b))
    return pairs


def _compare(refs: list[np.ndarray], gots: list[np.ndarray], least: float) -> tuple[list[float], dict]:
    """Per sample, the detections of both models (rows x1, y1, x2, y2, score, class) matched
    greedily by IoU; every sample's score and the figures behind them."""
    values, n_ref, n_got, matched, same_class, ious = [], 0, 0, 0, 0, []
    for r, g in zip(refs, gots):
        n_ref, n_got = n_ref + len(r), n_got + len(g)
        if not len(r) and not len(g):
            values.append(1.0)
            continue
        iou = box_iou(r[:, :4], g[:, :4]) if len(r) and len(g) else np.zeros((len(r), len(g)))
        pairs = _match(iou, least)
        ri, gj = np.array([p[0] for p in pairs], int), np.array([p[1] for p in pairs], int)
        agree = r[ri, 5] == g[gj, 5]
        credit = float((coco_credit(iou[ri, gj]) * agree).sum())
        same_class += int(agree.sum())
        ious.extend(iou[ri, gj].tolist())
        matched += len(pairs)
        values.append(credit / (len(r) + len(g) - len(pairs)))
    return values, {
        "reference_detections": n_ref,
        "candidate_detections": n_got,
        "matched": matched,
        "class_agreement": same_class / matched if matched else 0.0,
        "mean_iou": float(np.mean(ious)) if ious else 0.0,
    }


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    c, half = cxcywh[..., :2], np.abs(cxcywh[..., 2:4]) / 2
    return np.concatenate([c - half, c + half], axis=-1)


def nms(rows: np.ndarray, overlap: float, most: int = MAX_DETECTIONS) -> np.ndarray:
    """Class-aware non-maximum suppression of rows (x1, y1, x2, y2, score, class), best score
    first: a row goes when it overlaps a kept row of its class by more than ``overlap`` IoU.
    At most ``most`` rows are kept (of the best ``MAX_CANDIDATES``)."""
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:MAX_CANDIDATES]
    keep: list[int] = []
    for c in np.unique(rows[:, 5]):  # classes apart: a few small IoU matrices, not one big one
        idx = np.nonzero(rows[:, 5] == c)[0]
        iou = box_iou(rows[idx, :4], rows[idx, :4])
        gone = np.zeros(len(idx), bool)
        for k in range(len(idx)):
            if not gone[k]:
                keep.append(int(idx[k]))
                gone |= iou[k] > overlap
    return rows[sorted(keep)[:most]]  # indices in score order: the best ``most``


def _rows(sample: np.ndarray, score: float = -np.inf) -> np.ndarray:
    """A raw head's anchors [anchors, 4 + C] with best score >= ``score`` as rows (x1, y1, x2,
    y2, score, class)."""
    scores = sample[:, 4:]
    best = scores.max(axis=1)
    keep = best >= score
    return np.concatenate(
        [_xyxy(sample[keep, :4]), best[keep, None], scores[keep].argmax(axis=1)[:, None].astype(np.float64)], axis=1
    )


def _sets(
    reference: np.ndarray, candidate: np.ndarray, score: float, overlap: float
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray], str]:
    """(each model's detections per sample, each model's rows per sample (a raw head's anchors
    as rows), a description of the layout)."""
    layout = detection_layout(reference)
    if layout == "end-to-end":
        every = [list(reference), list(candidate)]
        dets = [[r[r[:, 4] >= score] for r in rows] for rows in every]
        return dets[0], dets[1], every[0], every[1], "end-to-end (x1, y1, x2, y2, score, class)"
    if layout == "anchors-last":
        reference, candidate = np.swapaxes(reference, 1, 2), np.swapaxes(candidate, 1, 2)
    every = [[_rows(s) for s in head] for head in (reference, candidate)]
    dets = [[nms(r[r[:, 4] >= score], overlap) for r in rows] for rows in every]
    what = f"raw head, {layout} (cx, cy, w, h and {reference.shape[-1] - 4} class scores per anchor), NMS at IoU {overlap:g}"
    return dets[0], dets[1], every[0], every[1], what


def detection(
    reference: np.ndarray, candidate: np.ndarray, score: float = 0.25, iou: float = 0.5, nms: float = 0.7
) -> MetricResult:
    """Detection heads (samples first). The detections of each model are those with score >=
    ``score`` (0.25, as Ultralytics predicts by default); a raw head's are its anchors' boxes
    (cx, cy, w, h -> corners) with their best class, after class-aware NMS at IoU ``nms``
    (0.7, Ultralytics' default), as its post-processing would give them. The two sets are
    matched greedily by IoU (at least ``iou``; the rows of an end-to-end head may come in any
    order); a matched pair of the same class earns the share of COCO's IoU thresholds
    0.50:0.05:0.95 its boxes reach (1 from IoU 0.95). Per sample the score is that credit over
    the detections of either model, a matched pair counted once (a soft IoU of the two sets);
    a sample where neither model detects anything is identical (1). Mean over samples.
    Raises NothingToCompare when the reference has no detection at all."""
    refs, gots, _, _, what = _sets(reference, candidate, score, nms)
    if not any(len(r) for r in refs):
        raise NothingToCompare(f"no detection with score >= {score:g} in the reference")
    values, figures = _compare(refs, gots, iou)
    return MetricResult(float(np.mean(values)), {"layout": what, "score_threshold": score, **figures})


@dataclass(frozen=True)
class DetectionParts:
    """Per sample: the detection score (``detection``'s, before the mean), and its decisions'
    margins, the candidate's losses of them and what a flip of each costs the sample's score
    (same length per sample; see ``detection_parts``)."""

    values: np.ndarray  # [N]
    margins: tuple[np.ndarray, ...]
    losses: tuple[np.ndarray, ...]
    costs: tuple[np.ndarray, ...]


_BIG = 1e9  # the loss of a detection the candidate no longer has at all: past any margin


def _scale(reference: np.ndarray) -> bool:
    """Scores compared as logits: every score of the reference is a probability."""
    return bool(reference.size) and float(reference.min()) >= 0.0 and float(reference.max()) <= 1.0


def _logit(p: np.ndarray, logits: bool) -> np.ndarray:
    if not logits:
        return np.asarray(p, np.float64)
    q = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


def _decisions(
    dets: np.ndarray, rows: np.ndarray, got_rows: np.ndarray, score: float, iou: float, logits: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One sample's (margins, losses): one decision per reference detection (it stays above
    the score threshold: margin = its score minus the threshold; loss = its score minus the
    candidate's best score of the same class at IoU >= ``iou`` with it, any score; none: lost)
    and one for the background (nothing else rises above the threshold: margin = the threshold
    minus the reference's best row away from its detections; loss = how much the candidate's
    best row away from them rose above that). Scores as logits when they are probabilities."""
    t = float(_logit(np.array(score), logits))
    margins, losses = [], []
    for det in dets:
        same = got_rows[:, 5] == det[5]
        near = box_iou(det[None, :4], got_rows[same, :4])[0] >= iou if same.any() else np.zeros(0, bool)
        s = float(_logit(np.array(det[4]), logits))
        margins.append(max(s - t, 0.0))
        losses.append(s - float(_logit(got_rows[same][near, 4].max(), logits)) if near.any() else _BIG)

    def away(r: np.ndarray) -> np.ndarray:
        if not len(dets) or not len(r):
            return r
        return r[~(box_iou(r[:, :4], dets[:, :4]) >= iou).any(axis=1)]

    ref_bg, got_bg = away(rows), away(got_rows)
    if len(ref_bg):
        b = float(_logit(ref_bg[:, 4].max(), logits))
        margins.append(max(t - b, 0.0))
        losses.append(float(_logit(got_bg[:, 4].max(), logits)) - b if len(got_bg) else 0.0)
    return np.array(margins, np.float64), np.array(losses, np.float64)


def detection_parts(
    reference: np.ndarray, candidate: np.ndarray, score: float = 0.25, iou: float = 0.5, nms: float = 0.7
) -> DetectionParts:
    """What ``detection`` scores, per sample, and what decides it beyond these samples: the
    score threshold. Each reference detection is a decision (stay above it) and so is the
    background (stay below it); a decision's margin is its distance to the threshold, its loss
    how much of that the candidate gave up (past the margin: a detection lost or one gained),
    so ``unseen``'s margin-and-loss estimate reads detections like top-1 decisions (a detection
    at 0.30 with a threshold of 0.25 is a near-tie); a flip costs what it costs the sample's
    score. Raises NothingToCompare as ``detection``."""
    refs, gots, rows, got_rows, _ = _sets(reference, candidate, score, nms)
    if not any(len(r) for r in refs):
        raise NothingToCompare(f"no detection with score >= {score:g} in the reference")
    values, _ = _compare(refs, gots, iou)
    logits = _scale(np.concatenate([r[:, 4] for r in rows]))
    parts = [_decisions(d, r, g, score, iou, logits) for d, r, g in zip(refs, rows, got_rows)]
    # A lost detection of k costs 1/k of its sample's score; a gained one beside k, 1/(k + 1).
    costs = [
        np.where(np.arange(len(m)) < len(d), 1.0 / max(len(d), 1), 1.0 / (len(d) + 1)) for (m, _), d in zip(parts, refs)
    ]
    return DetectionParts(np.array(values), tuple(p[0] for p in parts), tuple(p[1] for p in parts), tuple(costs))
