"""Agreement on unseen inputs, estimated from the calibration samples' margins (top-1, CTC).

A discrete metric counts flips: on n samples it moves in steps of 1/n, so 16 or 32 samples
cannot tell 0.99 from 0.95 ("no flip" either way), and a plan with no flip on them still flips
the near-ties of other inputs. What decides a flip is continuous: a decision flips when the
candidate's *margin loss* ``d`` (how much closer the runner-up came) reaches the original's
*margin* ``m`` (top score minus the best competitor). The calibration samples give both
distributions; the estimate pairs them.

Assumptions (what makes it an estimate, not a bound):

- a new input's margin ``M`` and the candidate's margin loss ``D`` on it are independent, each
  distributed as on the calibration samples (samples, positions or CTC steps pooled); when the
  loss grows with the margin (larger logits, larger changes) this overestimates flips, the safe
  side;
- margins have a positive density down to 0 (real inputs come arbitrarily close to a decision
  boundary), so the margins' distribution function is interpolated linearly through the origin
  and the sorted margins at their expected positions k / (n + 1): a loss ``d`` below the
  smallest margin m_(1) flips new inputs at the rate d / m_(1) / (n + 1), not 0 (the near-ties
  that n samples may not contain);
- class probabilities (rows in [0, 1] summing to 1) are compared as log-probabilities, their
  logits up to a constant per row;
- a CTC string's margin is that of its closest step: the smallest margin, along its greedy
  path, to a class that would change the decoded string if it took that one step (a
  character's edge turning blank, or a blank turning the neighbouring character, does not);
  a candidate that decodes the same string lost the difference of the two strings' margins
  (a character moved by one step, as alignments do, costs nothing), one that decodes another
  string lost the margin and what the original's path lost to it in its scores.

The estimated flip rate is ``mean_i F(d_i)`` over the losses, with ``F`` the margins'
interpolated distribution function: with n calibration samples every pair (loss i, margin j)
counts, n * n pairs instead of n samples. Top-1 pairs samples (and positions); CTC pairs
strings.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["ESTIMATED_METRICS", "ctc_margins", "ctc_parts", "estimate_agreement", "flip_rate", "top1_margins"]

ESTIMATED_METRICS = ("top1", "ctc")
_TINY = 1e-30


def _logits(scores: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Probabilities as log-probabilities (decided by the reference ``like``), else as given."""
    if like.shape[-1] >= 2 and like.size and float(like.min()) >= 0.0 and float(like.max()) <= 1.0:
        if bool(np.all(np.abs(like.sum(axis=-1) - 1.0) <= 1e-3)):
            return np.log(np.clip(scores, _TINY, None))
    return scores


def _margin_of(scores: np.ndarray, cls: np.ndarray, rivals: np.ndarray | None = None) -> np.ndarray:
    """``scores[..., cls]`` minus the best other class (only the ``rivals`` mask's, if given)."""
    top = np.take_along_axis(scores, cls[..., None], axis=-1)[..., 0]
    others = scores.astype(np.float64, copy=True)
    np.put_along_axis(others, cls[..., None], -np.inf, axis=-1)
    if rivals is not None:
        others = np.where(rivals, others, -np.inf)
    return top - others.max(axis=-1)


def top1_margins(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(margins, losses), flattened over samples and positions: the reference's top class minus
    its runner-up, and how much of that the candidate lost (> margin: the top class changed)."""
    r = _logits(np.asarray(reference, np.float64), reference)
    g = _logits(np.asarray(candidate, np.float64), reference)
    cls = np.argmax(r, axis=-1)
    m = _margin_of(r, cls)
    return m.ravel(), (m - _margin_of(g, cls)).ravel()


def _collapse(path: np.ndarray, blank: int) -> tuple[int, ...]:
    keep = np.ones(len(path), bool)
    keep[1:] = path[1:] != path[:-1]
    return tuple(path[keep & (path != blank)].tolist())


def _string_slack(scores: np.ndarray, blank: int) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """Per sample of [N, T, C] (log-)scores: how far its greedy string is from changing, the
    smallest step margin of its own path to a class that would change the decoded string if
    it took that step (every class but the blank and the neighbouring steps' classes always
    does; those are checked by decoding; inf when no step can change it), the string, the
    path [N, T] and the string-changing classes [N, T, C]."""
    n, t, c = scores.shape
    path = np.argmax(scores, axis=-1)
    rivals = np.ones((n, t, c), bool)
    rivals[np.arange(n)[:, None], np.arange(t)[None, :], path] = False
    strings = []
    for i in range(n):
        decoded = _collapse(path[i], blank)
        strings.append(decoded)
        for s in range(t):
            for k in {blank, path[i, s - 1] if s else blank, path[i, s + 1] if s + 1 < t else blank}:
                if k != path[i, s]:
                    changed = path[i].copy()
                    changed[s] = k
                    rivals[i, s, k] = _collapse(changed, blank) != decoded
    return _margin_of(scores, path, rivals).min(axis=1), strings, path, rivals


def ctc_margins(reference: np.ndarray, candidate: np.ndarray, blank: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(margins, losses) per string of [N, T, C] CTC scores. A string's margin is how far the
    original's string is from changing (``_string_slack``: its closest step); its loss is that
    margin minus the candidate's own slack when the candidate decodes the same string (a
    character moved by a step, as alignments do, is no loss), else the margin minus the
    original path's slack in the candidate's scores (negative where the candidate left it:
    past the margin, a flip)."""
    m, d, _ = ctc_parts(reference, candidate, blank)
    return m, d


def ctc_parts(
    reference: np.ndarray, candidate: np.ndarray, blank: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ctc_margins`` and, per string, whether the candidate decodes the same string."""
    r = _logits(np.asarray(reference, np.float64), reference)
    g = _logits(np.asarray(candidate, np.float64), reference)
    m, ref_strings, path, rivals = _string_slack(r, blank)
    slack, got_strings, _, _ = _string_slack(g, blank)
    same = np.array([a == b for a, b in zip(ref_strings, got_strings)], bool)
    on_path = _margin_of(g, path, rivals).min(axis=1)  # the original's path in the candidate's scores
    with np.errstate(invalid="ignore"):
        d = np.where(same, m - slack, m - on_path)
    return m, np.where(np.isnan(d), 0.0, d), same


def _interpolated_cdf(margins: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(M <= x) from the finite margins m_(1) <= ... <= m_(n): linear between the points
    (0, 0) and (m_(k), k / (n + 1)) (the k-th smallest of n draws sits on average at
    k / (n + 1) of the distribution), 0 for x <= 0, 1 beyond the largest margin (a loss larger
    than every margin seen flips everything)."""
    m = np.sort(np.maximum(margins[np.isfinite(margins)], 0.0))
    n = len(m)
    x = np.asarray(x, np.float64)
    if not n:
        return np.zeros_like(x)
    k = np.searchsorted(m, x, side="left")  # margins strictly below x
    lo = np.where(k > 0, m[np.maximum(k - 1, 0)], 0.0)
    hi = m[np.minimum(k, n - 1)]
    width = np.where(hi > lo, hi - lo, 1.0)
    inside = (k + np.clip((x - lo) / width, 0.0, 1.0)) / (n + 1)
    return np.where(x <= 0, 0.0, np.where(k >= n, 1.0, inside))


def flip_rate(margins: np.ndarray, losses: np.ndarray) -> float:
    """The estimated share of new decisions that flip: ``mean_i P(M <= d_i)`` over the losses,
    with M's distribution interpolated through the origin (see the module's assumptions)."""
    margins, losses = np.asarray(margins, np.float64).ravel(), np.asarray(losses, np.float64).ravel()
    if not losses.size:
        return 0.0
    return float(np.mean(_interpolated_cdf(margins, np.where(np.isfinite(losses), losses, 0.0))))


def estimate_agreement(
    metric: str, params: Mapping[str, float | int], reference: np.ndarray, candidate: np.ndarray
) -> float | None:
    """The estimated agreement on unseen inputs under ``metric`` (samples-first arrays), or
    None for a metric it does not estimate (continuous ones: cosine, dense, detection)."""
    if metric == "top1":
        return 1.0 - flip_rate(*top1_margins(reference, candidate))
    if metric == "ctc":
        return 1.0 - flip_rate(*ctc_margins(reference, candidate, int(params.get("blank", 0))))
    return None
