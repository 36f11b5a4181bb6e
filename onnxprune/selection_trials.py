"""The allocation search's trials for a data criterion (``contribution``, ``reconstruction``,
``mean-activation``, ``apoz``) without recovery: each candidate judged cross-fitted over the
calibration samples, as reconstruction_trials.ReconstructedTrials judges a refit.

A data criterion chooses *which* channels a unit loses from the calibration activations: the
channels whose removal costs those samples least. Judged on the same samples, the plan looks
better than it is: among channels that cost about the same elsewhere, the ones picked are
those that happened to cost these samples little (a winner's curse). So each half of the
samples judges the plan chosen on the other half: per unit the same number of channels,
ranked by the criterion's scores (and replaced by the compensation means) measured on the
other half only. The search's ratios per unit come from the sensitivity trials as before; only
the channels within each unit, and the values they are replaced by, are cross-fitted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .analysis import ChannelAnalysis
from .compensation import reader_masks
from .fidelity import join_outputs, prepare_reference
from .masking import mask_feeds
from .planning import enforce_constraints
from .trial_runner import TrialRunner, trial_score

if TYPE_CHECKING:
    from .fidelity import Reference
    from .search_judgement import SearchScore
    from .sensitivity_analysis import Unit

__all__ = ["SCORED_BY", "Fold", "SelectionTrials", "fold_plan"]

# What judged each calibration sample (the report's cross-fitted figure, search_judgement.CrossFitted).
SCORED_BY = "the plan the criterion chose on the other half"


@dataclass(frozen=True, eq=False)
class Fold:
    """One half of the calibration samples judged by what the other half chose: the
    criterion's group scores and the compensation values measured on the other half (None:
    the compensation does not come from the samples, the search's own values stand)."""

    judged: tuple[int, ...]  # indices of the calibration samples this fold judges
    scores: Mapping[int, float]  # group id -> score on the other half (higher = keep)
    estimates: Mapping[str, np.ndarray] | None


def fold_plan(
    analysis: ChannelAnalysis, units: Sequence[Unit], groups: Iterable[int], scores: Mapping[int, float]
) -> set[int]:
    """The plan ``groups`` with every unit's removed groups re-chosen by ``scores``: as many of
    the unit's channels removed, lowest score first (a group that does not fit the count any
    more stops the unit, as sensitivity_analysis._take does; a NaN score ranks last), then the
    structural constraints enforced. Groups outside the units stay as they are."""
    removed = {int(g) for g in groups}
    out = set(removed)
    for unit in units:
        mine = [g for g in unit.groups if g in removed]
        if not mine:
            continue
        want = sum(len(analysis.group(g).members) for g in mine)
        out -= set(mine)

        def rank(gid: int) -> tuple[bool, float, int]:
            s = scores.get(gid, np.nan)
            return (not np.isfinite(s), float(s) if np.isfinite(s) else 0.0, gid)

        n = 0
        for gid in sorted(unit.groups, key=rank):
            size = len(analysis.group(gid).members)
            if n + size > want:
                break
            out.add(gid)
            n += size
    return enforce_constraints(analysis, out, {})


class SelectionTrials:
    """The search's judgement of a plan whose channels a data criterion chose, cross-fitted (a
    drop-in for trial_runner.TrialRunner in sensitivity_analysis.allocate; see the module doc).
    It runs ``runner``'s instrumented session (masks fed per trial) on each fold's judged
    samples; ``dynamic``: the model takes a batch of samples at once (else one by one)."""

    def __init__(
        self,
        runner: TrialRunner,
        analysis: ChannelAnalysis,
        units: Sequence[Unit],
        feeds: Sequence[Mapping[str, np.ndarray]],
        folds: Sequence[Fold],
        *,
        dynamic: bool,
        confidence: float,
        batch: int | None = None,
    ) -> None:
        self.runner, self.analysis, self.units, self.folds = runner, analysis, tuple(units), tuple(folds)
        self.confidence, self.batch = confidence, batch
        self.names, self.batch_axes = runner.names, runner.batch_axes
        inputs = list(feeds[0])
        self._batches = []  # per fold, the feeds its judged samples run as
        for fold in self.folds:
            chosen = [feeds[i] for i in fold.judged]
            if dynamic:
                self._batches.append([{k: np.concatenate([f[k] for f in chosen]) for k in inputs}])
            else:
                self._batches.append([dict(f) for f in chosen])
        self.runs = 0
        refs = [self._outputs(k, {}) for k in range(len(self.folds))]
        self._references: tuple[Reference, ...] = tuple(
            prepare_reference(self.names, [[r] for r in ref], batch_axes=self.batch_axes)
            for ref in (join_outputs(self.names, self.batch_axes, refs), *refs)
        )
        self._judged: dict[tuple, tuple[SearchScore, object]] = {}

    def _outputs(self, k: int, masks: Mapping) -> list[np.ndarray]:
        extra = mask_feeds(self.runner.ports, masks)
        parts = [self.runner.session.run({**b, **extra}, self.names) for b in self._batches[k]]
        return join_outputs(self.names, self.batch_axes, parts)

    def plans(self, removed_groups: Iterable[int]) -> list[set[int]]:
        """Each fold's version of the plan (``fold_plan`` with its scores)."""
        return [fold_plan(self.analysis, self.units, removed_groups, f.scores) for f in self.folds]

    def judged(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
    ) -> SearchScore:
        """``search_judgement.search_score`` of the cross-fitted outputs: every sample scored with the
        channels (and compensation values) the other half chose."""
        groups = frozenset(int(g) for g in removed_groups)
        key = (groups, id(estimates), tuple(sorted((choices or {}).items())))
        if key not in self._judged:
            parts = []
            for k, (fold, plan) in enumerate(zip(self.folds, self.plans(groups))):
                ids = np.isin(self.analysis.root_of, np.asarray(sorted(plan), dtype=np.int64))
                values = estimates if fold.estimates is None or estimates is None else fold.estimates
                parts.append(self._outputs(k, reader_masks(self.analysis, ids, values) if plan else {}))
            self.runs += 1
            outs = join_outputs(self.names, self.batch_axes, parts)
            judged = trial_score(self, self._references[0], outs, list(zip(self._references[1:], parts)), choices)
            self._judged[key] = (judged, estimates)
        return self._judged[key][0]

    def fidelity(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
        *,
        search: bool = False,
    ) -> float:
        """The cross-fitted fidelity; with ``search`` the search's judgement of it."""
        judged = self.judged(removed_groups, estimates, choices)
        return judged.value if search else judged.pooled
