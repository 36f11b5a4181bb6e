"""The held-out measures of tools/bench_latency.py beside prune's own fidelity: the digits CNN's
top-1 accuracy on its labelled test split, and for the random-weight zoo the centered cosine
(the input-dependent part of the outputs) and the constant-mean predictor's cosine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["centered_cosine", "constant_cosine", "digits_accuracy"]

ROOT = Path(__file__).resolve().parent.parent


def digits_accuracy(model: str) -> float:
    """Top-1 accuracy of ``model`` on the digits test split (fixtures/digits_test.npz)."""
    from onnxprune.runtime import session

    test = np.load(ROOT / "fixtures" / "digits_test.npz")
    logits = session(model, source=model, optimize=True)({"input": test["input"]})[0]
    return float((logits.argmax(axis=1) == test["labels"]).mean())


def centered_cosine(original: str, candidate: str, evaluation: str) -> float:
    """Mean cosine over the held-out samples of the candidate's and the original's outputs, both
    minus the original's mean output: the input-dependent part. The random-weight zoo's outputs
    are mostly one input-independent vector (90-99.9% of their norm), which plain cosine rewards
    keeping; this is what is left of the answers."""
    from onnxprune.runtime import session

    feeds = dict(np.load(evaluation))
    ref = session(original, source=original, optimize=True)(feeds)[0].reshape(len(next(iter(feeds.values()))), -1)
    out = session(candidate, source=candidate, optimize=True)(feeds)[0].reshape(ref.shape)
    mean = ref.mean(axis=0)
    a, b = ref - mean, out - mean
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return float(cos.mean())


def constant_cosine(original: str, calibration: str, evaluation: str) -> float:
    """The held-out cosine of a model that ignores its input and outputs the original's mean
    output over the calibration samples: what a plan scores that keeps none of the
    input-dependent part (a random-weight export's plain cosine is mostly this)."""
    from onnxprune.runtime import session

    run = session(original, source=original, optimize=True)
    cal, ev = dict(np.load(calibration)), dict(np.load(evaluation))
    mean = run(cal)[0].reshape(len(next(iter(cal.values()))), -1).mean(axis=0)
    ref = run(ev)[0].reshape(len(next(iter(ev.values()))), -1)
    return float((ref @ mean / (np.linalg.norm(ref, axis=1) * np.linalg.norm(mean) + 1e-30)).mean())
