"""Fidelity: how closely a pruned model gives the original's answers. The one place that
computes it, for the report, the sensitivity analysis and the ``--min-fidelity`` search.

Per output: max and mean abs error, cosine similarity (per sample, mean over samples) and, for
outputs that look like class scores ([N, classes], or per position for sequences
[N, T, classes]), top-1 agreement. Each output is scored by top-1 agreement for class scores
and cosine for everything else, or as the user chooses per output; the run's fidelity is the
worst output's score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "FIDELITY_METRICS",
    "OutputFidelity",
    "OutputScore",
    "cosine",
    "default_metric",
    "fidelity",
    "fidelity_from_outputs",
    "parse_metric_choices",
    "run_score",
    "score_outputs",
    "top1_agreement",
]

FIDELITY_METRICS = ("top1", "cosine")


@dataclass(frozen=True)
class OutputScore:
    name: str
    metric: str
    value: float


@dataclass(frozen=True)
class OutputFidelity:
    """How close the pruned model's output is to the original's (not a pass/fail check)."""

    name: str
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    top1_agreement: float | None  # for outputs that look like class scores, or scored by top-1
    metric: str = "cosine"  # what the output's score is

    @property
    def score(self) -> float:
        """The output's fidelity under its metric."""
        return self.top1_agreement if self.metric == "top1" and self.top1_agreement is not None else self.cosine

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "max_abs_error": self.max_abs_error,
            "mean_abs_error": self.mean_abs_error,
            "cosine": self.cosine,
            "top1_agreement": self.top1_agreement,
        }


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


def _samples(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Arrays with the samples first (one per feed), as one float64 array; a scalar output is
    one sample. An output whose batch is not its first axis (sequence-first [T, N, C], as
    recurrent exports give) shows it by the one axis whose size differs between feeds: that
    axis is moved first. Outputs that differ in more axes count each feed as one sample."""
    parts = [np.asarray(a, np.float64).reshape((1,) if np.ndim(a) == 0 else np.shape(a)) for a in arrays]
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) > 1 and len({p.ndim for p in parts}) == 1:
        varying = [ax for ax in range(1, parts[0].ndim) if len({p.shape[ax] for p in parts}) > 1]
        if len(varying) == 1:
            parts = [np.moveaxis(p, varying[0], 0) for p in parts]
        else:
            return np.concatenate([p.reshape(1, -1, 1) for p in parts], axis=1)
    if len({p.shape[1:] for p in parts}) > 1:
        return np.concatenate([p.reshape(1, -1, 1) for p in parts], axis=1)
    return np.concatenate(parts)


def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine similarity of each sample (flattened), mean over the samples. An all-zero sample
    is identical to an all-zero one (1) and unlike any other (0): it has no direction."""
    r = reference.reshape(max(len(reference), 1), -1)
    g = candidate.reshape(max(len(candidate), 1), -1)
    norm_r, norm_g = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    denom = norm_r * norm_g
    dot = (r * g).sum(axis=1)
    zero = np.where((norm_r == 0) & (norm_g == 0), 1.0, 0.0)
    cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), zero)
    return float(np.clip(cos, -1.0, 1.0).mean())


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """How often the largest entry along the last axis is at the same index (every sample and
    position)."""
    return float(np.mean(np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)))


def fidelity_from_outputs(
    names: Sequence[str],
    refs: Sequence[Sequence[np.ndarray]],
    gots: Sequence[Sequence[np.ndarray]],
    choices: Mapping[str, str] | None = None,
) -> tuple[OutputFidelity, ...]:
    """Every output's fidelity figures and metric (``choices``: output name or "*" -> metric),
    from per output the reference's and the candidate's arrays for every feed (samples first)."""
    choices = choices or {}
    out = []
    for name, rs, gs_ in zip(names, refs, gots):
        r, g = _samples(rs), _samples(gs_)
        diff = np.abs(r - g)
        looks_like = default_metric(r.shape)
        metric = choices.get(name, choices.get("*", looks_like))
        top1 = top1_agreement(r, g) if "top1" in (metric, looks_like) else None
        out.append(
            OutputFidelity(
                name,
                float(diff.max()) if diff.size else 0.0,
                float(diff.mean()) if diff.size else 0.0,
                cosine(r, g),
                top1,
                metric,
            )
        )
    return tuple(out)


def run_score(outputs: Sequence[OutputFidelity]) -> tuple[float, tuple[OutputScore, ...]]:
    """(the run's fidelity = the worst output's score, every output's score)."""
    scores = tuple(OutputScore(o.name, o.metric, o.score) for o in outputs)
    return (min(s.value for s in scores) if scores else 1.0), scores


def score_outputs(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    choices: Mapping[str, str] | None = None,
) -> tuple[float, tuple[OutputScore, ...]]:
    """(fidelity = worst output's score, per-output scores); one array per output, samples first."""
    return run_score(fidelity_from_outputs(names, [[r] for r in reference], [[g] for g in candidate], choices))


def fidelity(
    original: onnx.ModelProto | str,
    pruned: onnx.ModelProto | str,
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    choices: Mapping[str, str] | None = None,
    *,
    source: str = "<model>",
) -> tuple[OutputFidelity, ...]:
    """Run both models (in memory, or the paths of saved ones) on every feed: the fidelity of
    every output."""
    from .runtime import paired_outputs

    return fidelity_from_outputs(*paired_outputs(original, pruned, feeds_list, source=source), choices)
