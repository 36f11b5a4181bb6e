"""The least-squares refit behind reconstruction, on compact factors of a layer's input rows.

A reader's input rows R [positions, columns] (one group of its columns) enter every refit
only through R_aug = [R, 1] (a column of ones for the bias): its outputs are R_aug @ [W | b]^T,
and any refit is judged by ||R_aug (v)||^2 = v^T R_aug^T R_aug v. So R_aug can be replaced by
any F with F^T F = R_aug^T R_aug: R_aug itself when there are fewer rows than columns, else its
Cholesky factor. F has min(positions, columns + 1) rows, is computed once per reader and
sample set (reconstruction caches it across the search's trials), and every removal plan's
problem is a column selection of it.

The ridge solve works in the smaller of two spaces: over the columns (A^T A + lam I) or over
the rows (A A^T + lam I, the same solution through the push-through identity), by Cholesky
(an eigendecomposition per fold costs ~10 such solves at 2000 columns).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from scipy.linalg import cho_factor, cho_solve

__all__ = ["RIDGES", "Problem", "factor", "fit", "one_blas_thread"]

# Ridge strengths tried (relative to the mean diagonal of A^T A), beside "keep the weights": a
# factor of 100 apart; each costs one Cholesky solve per fold (the 7 tried before, a factor 10
# apart, made 15 factorizations per layer, these 9).
RIDGES = (1e-5, 1e-3, 1e-1, 10.0)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's and scipy's BLAS/LAPACK on one thread while in the block (restored after).
    Reconstruction's solves are many small to medium dense problems (tens to ~2300 columns):
    OpenBLAS's second thread saves little there, and on a loaded machine its threads wait for
    each other far longer than they compute (a 2304-column Cholesky: 0.15 s on one thread,
    0.4-4.8 s on two at load 8; 317 s of a 1240 s YOLO26n search went to such factorizations).
    The results are the same up to float rounding (~1e-15 relative: the blocks are summed in
    another order)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def factor(rows: np.ndarray) -> np.ndarray:
    """F with F^T F = R_aug^T R_aug for input ``rows`` R (R_aug = [R, 1]): R_aug when it has
    no more rows than columns, else the Cholesky factor of R_aug^T R_aug (plus 1e-10 of its
    mean diagonal, so that a column that is a combination of others, a dead channel, still
    factors: a ridge far below the ones cross-validation tries)."""
    aug = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    if len(aug) <= aug.shape[1]:
        return aug
    gram = aug.T @ aug
    jitter = 1e-10 * max(float(np.mean(np.diag(gram))), 1e-300)
    try:
        return np.linalg.cholesky(gram + jitter * np.eye(len(gram))).T
    except np.linalg.LinAlgError:  # numerically indefinite: the square root of its eigen-decomposition
        vals, vecs = np.linalg.eigh(gram)
        return np.sqrt(np.maximum(vals, 0.0))[:, None] * vecs.T


class Problem:
    """One refit on one sample set: ``a`` = F's selected columns (the kept inputs, and the
    ones column with a bias), ``y`` = F @ [W | b]^T (the original layer's outputs)."""

    def __init__(self, f: np.ndarray, select: np.ndarray, w_aug: np.ndarray) -> None:
        self.a = f[:, select]
        self.y = f @ w_aug.T

    @classmethod
    def of_rows(cls, a: np.ndarray, y: np.ndarray) -> Problem:
        """The refit of inputs ``a`` [positions, columns] to targets ``y`` [positions, outputs]
        given as rows (inputs that are not the original's, so not a column selection of its
        factor: sequential reconstruction), kept compact as for ``factor``: [a | y] itself when
        it has no more rows than columns, else the Cholesky factor R of its Gram matrix, whose
        columns give every ``error`` exactly (||a theta - y||^2 = ||R [theta; -I]||^2) up to
        the 1e-10 jitter."""
        m = np.concatenate([a, y], axis=1)
        if len(m) > m.shape[1]:
            gram = m.T @ m
            jitter = 1e-10 * max(float(np.mean(np.diag(gram))), 1e-300)
            try:
                m = np.linalg.cholesky(gram + jitter * np.eye(len(gram))).T
            except np.linalg.LinAlgError:
                vals, vecs = np.linalg.eigh(gram)
                m = np.sqrt(np.maximum(vals, 0.0))[:, None] * vecs.T
        out = cls.__new__(cls)
        out.a, out.y = m[:, : a.shape[1]], m[:, a.shape[1] :]
        return out

    def error(self, theta: np.ndarray) -> float:
        """The squared error of parameters ``theta`` on this sample set."""
        return float(np.sum((self.a @ theta - self.y) ** 2))

    def energy(self) -> float:
        """The squared norm of the original outputs on this sample set."""
        return float(np.sum(self.y**2))


def _lam(a: np.ndarray, rel: float) -> float:
    """``rel`` relative to the mean diagonal of a^T a."""
    return rel * float(np.sum(a * a)) / a.shape[1] if a.size else 0.0


def _ridge_solve(gram: np.ndarray, rhs: np.ndarray, lam: float) -> np.ndarray:
    """(gram + lam I)^-1 rhs for a symmetric positive semi-definite ``gram``."""
    lhs = gram + lam * np.eye(len(gram))
    try:
        return cho_solve(cho_factor(lhs, overwrite_a=True, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def _solve(a: np.ndarray, y: np.ndarray, theta0: np.ndarray, ridge: float) -> np.ndarray:
    """argmin ||a @ theta - y||^2 + lam ||theta - theta0||^2, lam relative to a's scale; over
    a's rows when it has fewer rows than columns (theta0 + a^T (a a^T + lam I)^-1 (y - a theta0))."""
    lam = _lam(a, ridge)
    m, n = a.shape
    if m < n:
        return theta0 + a.T @ _ridge_solve(a @ a.T, y - a @ theta0, lam)
    return _ridge_solve(a.T @ a, a.T @ y + lam * theta0, lam)


def _path_errors(fit: Problem, judge: Problem, theta0: np.ndarray, ridges: Sequence[float]) -> np.ndarray | None:
    """The judged set's squared error of the ridge solution fitted on ``fit``, per ridge (one
    Cholesky solve each, over the smaller of fit's rows and columns); None when ``fit`` has no
    signal."""
    a, y = fit.a, fit.y
    m, n = a.shape
    scale = float(np.sum(a * a)) / n if a.size else 0.0
    if scale <= 0:
        return None
    errors = np.zeros(len(ridges))
    if m < n:  # theta(lam) = theta0 + a^T (a a^T + lam I)^-1 (y - a theta0)
        gram, residual = a @ a.T, y - a @ theta0
        base, reach = judge.a @ theta0 - judge.y, judge.a @ a.T
        for k, rel in enumerate(ridges):
            errors[k] = float(np.sum((base + reach @ _ridge_solve(gram, residual, rel * scale)) ** 2))
        return errors
    gram, aty = a.T @ a, a.T @ y
    for k, rel in enumerate(ridges):
        lam = rel * scale
        errors[k] = judge.error(_ridge_solve(gram, aty + lam * theta0, lam))
    return errors


def fit(
    problems: Sequence[Problem], theta0: np.ndarray, ridge: float, ridges: Sequence[float] = RIDGES
) -> np.ndarray | None:
    """The refitted parameters, with the ridge chosen by two-fold cross-validation over
    different calibration samples (one sample set fitted, judged on the other, and the other
    way round): a layer read at few positions is underdetermined, and a fit that looks exact
    on its samples can be worse than the weights it started from. None when keeping
    ``theta0`` predicts the held-out sets at least as well as every ridge. One set: the fixed
    ``ridge``."""
    a_all = np.concatenate([p.a for p in problems])
    y_all = np.concatenate([p.y for p in problems])
    if len(problems) < 2 or not ridges:
        return _solve(a_all, y_all, theta0, ridge)
    errors = np.zeros(len(ridges))
    keep_error = 0.0
    for i, p in enumerate(problems[:2]):
        judge = problems[1 - i]
        keep_error += judge.error(theta0)
        e = _path_errors(p, judge, theta0, ridges)
        if e is None:
            return None
        errors += e
    best = int(np.argmin(errors))
    if errors[best] >= keep_error:
        return None
    return _solve(a_all, y_all, theta0, ridges[best])
