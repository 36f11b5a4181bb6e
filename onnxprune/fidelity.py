"""Fidelity: one number per run, how closely a pruned model gives the original's answers.

Per output: top-1 agreement for outputs that look like class scores ([N, classes], or per
position for sequences [N, T, classes]), cosine similarity (mean over samples) for everything
else; the user may choose per output. The run's fidelity is the worst output's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import UsageError

__all__ = ["FIDELITY_METRICS", "OutputScore", "score_outputs", "parse_metric_choices", "default_metric"]

FIDELITY_METRICS = ("top1", "cosine")


@dataclass(frozen=True)
class OutputScore:
    name: str
    metric: str
    value: float


def default_metric(shape: Sequence[int]) -> str:
    """top1 for class scores: [N, K] or [N, T, K] with K >= 2; cosine otherwise."""
    return "top1" if len(shape) in (2, 3) and shape[-1] >= 2 else "cosine"


def parse_metric_choices(items: Sequence[str]) -> dict[str, str]:
    """CLI --fidelity-metric NAME=top1|cosine (repeatable); NAME '*' sets every output."""
    out = {}
    for item in items:
        name, sep, metric = item.rpartition("=")
        if not sep or not name or metric not in FIDELITY_METRICS:
            raise UsageError(f"--fidelity-metric {item!r}: expected OUTPUT=top1 or OUTPUT=cosine")
        out[name] = metric
    return out


def _cosine(ref: np.ndarray, got: np.ndarray) -> float:
    r = ref.reshape(ref.shape[0], -1).astype(np.float64)
    g = got.reshape(got.shape[0], -1).astype(np.float64)
    denom = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    dot = (r * g).sum(axis=1)
    same = np.all(r == g, axis=1)
    cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where(same, 1.0, 0.0))
    return float(cos.mean())


def _top1(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean(np.argmax(ref, axis=-1) == np.argmax(got, axis=-1)))


def score_outputs(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], choices: Mapping[str, str] | None = None
) -> tuple[float, tuple[OutputScore, ...]]:
    """(fidelity = worst output's score, per-output scores); arrays have the samples first."""
    choices = choices or {}
    scores = []
    for name, r, g in zip(names, reference, candidate):
        metric = choices.get(name, choices.get("*", default_metric(r.shape)))
        value = _top1(r, g) if metric == "top1" else _cosine(r, g)
        scores.append(OutputScore(name, metric, value))
    return (min(s.value for s in scores) if scores else 1.0), tuple(scores)
