"""Sequences read by CTC: the decoded strings, not the per-step scores."""

from __future__ import annotations

import numpy as np

from .result import MetricResult

__all__ = ["ctc", "ctc_decode", "edit_distance"]


def ctc_decode(scores: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [N, T, classes] scores: the top class per step, repeats collapsed,
    blanks dropped; one tuple of class indices per sample."""
    best = np.argmax(scores, axis=-1)
    keep = np.ones(best.shape, bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(row[k].tolist()) for row, k in zip(best, keep)]


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def ctc(reference: np.ndarray, candidate: np.ndarray, blank: int = 0) -> MetricResult:
    """Sequences / CTC ([N, T, classes], samples first): each sample's string is decoded
    greedily (top class per step, repeats collapsed, the ``blank`` class dropped); the score is
    the fraction of samples whose string is identical to the original's. Beside it: the mean
    edit distance normalised by the longer string (0 = identical), and the per-step top-1."""
    if reference.ndim != 3:
        raise ValueError("ctc reads [N, steps, classes] (samples first)")
    ref, got = ctc_decode(reference, blank), ctc_decode(candidate, blank)
    same = [r == g for r, g in zip(ref, got)]
    dist = [0.0 if s else edit_distance(r, g) / max(len(r), len(g), 1) for s, r, g in zip(same, ref, got)]
    return MetricResult(
        float(np.mean(same)) if same else 1.0,
        {
            "blank": blank,
            "strings_identical": float(np.mean(same)) if same else 1.0,
            "mean_edit_distance": float(np.mean(dist)) if dist else 0.0,
            "step_top1": float(np.mean(np.argmax(reference, -1) == np.argmax(candidate, -1))),
            "mean_length": float(np.mean([len(r) for r in ref])) if ref else 0.0,
        },
    )
