"""The allocation search's trials judged after recovery (reconstruction and/or re-calibration):
each trial's model is recovered on one half of the calibration samples and judged on the other
(two-fold cross-fitting). Split from reconstruction, which does the refit itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .analysis import ChannelAnalysis
from .planning import PruningPlan
from .rules import RuleRegistry
from .runtime import session

if TYPE_CHECKING:
    from .fidelity import Reference
    from .search_judgement import SearchScore

__all__ = ["ReconstructedTrials"]


class ReconstructedTrials:
    """The fidelity of a removal *after* recovery (reconstruction and/or re-calibration, see
    recovery), for the allocation search (a drop-in for sensitivity_analysis.TrialRunner). Each
    trial removes the groups (surgery) and is judged by two-fold cross-fitting: the model
    recovered on one half of the calibration samples is judged on the other half, and the other
    way round, so every sample is judged by a fit that never saw it (fitted and judged on the
    same few samples, a fit looks better than it is). Re-calibration inside the search corrects
    the ``RECALIBRATION_PASSES`` shallowest depth levels exactly (a pass each) and leaves the
    deeper ones (recalibration's ``shallow_only``): a trial then judges a model no better
    corrected than the delivered one, at a bounded cost. The sequential refit
    (``reconstruct_from="pruned"``) likewise refits the ``sequential_levels`` shallowest depth
    levels in sequence and the deeper readers independently (one run of the pruned model per
    level: a detector's plan has dozens); ``final_judged`` judges the chosen plan with every
    level in sequence, as the run delivers it."""

    RECALIBRATION_PASSES = 8
    SEQUENTIAL_LEVELS = 8

    def __init__(
        self,
        model: onnx.ModelProto,
        analysis: ChannelAnalysis,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        registry: RuleRegistry | None = None,
        seed: int = 0,
        source: str = "<model>",
        reconstruct: bool = True,
        recalibrate: bool = False,
        reconstruct_from: str = "original",
        confidence: float = 0.95,
        batch: int | None = None,
        sequential_levels: int | None = SEQUENTIAL_LEVELS,
    ) -> None:
        self.reconstruct, self.recalibrate, self.reconstruct_from = reconstruct, recalibrate, reconstruct_from
        # the trials' cap on the sequential refit's levels (None: every level, or not sequential)
        self.sequential_levels = sequential_levels if reconstruct and reconstruct_from == "pruned" else None
        self.confidence = confidence  # of the search's bound on discrete outputs (search_score)
        self.batch = batch  # --fidelity-batch: the batch the search's value predicts (search_score)
        if len(feeds) < 2:
            raise ValueError("reconstruction inside the search needs at least 2 calibration samples")
        half = len(feeds) // 2
        self.model, self.analysis, self.registry, self.seed, self.source = model, analysis, registry, seed, source
        self.folds = [(list(feeds[:half]), list(feeds[half:])), (list(feeds[half:]), list(feeds[:half]))]
        from .recovery import RecoveryCache

        self.caches = [RecoveryCache() for _ in self.folds]  # the readers' rows, kept across trials
        from .fidelity import output_batch_axes

        self.names = [o.name for o in model.graph.output]
        self.batch_axes = output_batch_axes(model)  # sequence-first outputs keep their samples on axis 1
        # The original's outputs on each fold's judged half, made by the first trial (inside the
        # search's progress, not before it: a detector's are a whole run of the model).
        self._references: tuple[list[list[np.ndarray]], list[np.ndarray]] | None = None
        # The references' side of every score, derived once (fidelity.prepare_reference): all
        # the samples, and each fold's judged half.
        self._prepared: tuple[Reference, ...] | None = None
        # Each plan's judgement, kept (as TrialRunner's: by groups, the estimates object kept
        # alive with its entry, the metric choices): the delivered plan is the search's last
        # kept one, and its score goes into the report (decide.Planned.cross_fitted) without a re-run.
        self._judged: dict[tuple, tuple[SearchScore, object]] = {}

    @property
    def references(self) -> list[list[np.ndarray]]:
        """Per fold, the original's outputs on its judged half."""
        return self._reference_outputs()[0]

    @property
    def reference(self) -> list[np.ndarray]:
        """The original's outputs on every sample, the folds' judged halves joined."""
        return self._reference_outputs()[1]

    def _reference_outputs(self) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
        if self._references is None:
            from .fidelity import join_outputs

            run = session(self.model, source=self.source, per_sample=True)
            refs = [run.outputs(judge, self.batch_axes) for _, judge in self.folds]
            self._references = (refs, join_outputs(self.names, self.batch_axes, refs))
        return self._references

    def fidelity(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
        *,
        search: bool = False,
    ) -> float:
        """The cross-fitted fidelity; with ``search`` the search's judgement of it
        (``search_judgement.search_score`` on the two judged halves, as sensitivity_analysis.TrialRunner's).
        Both come from the plan's kept judgement: a plan the latency planner's order judged and
        its floor then asks about (or the other way round) is recovered once, not twice."""
        judged = self.judged(removed_groups, estimates, choices)
        return judged.value if search else judged.pooled

    def judged(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
        *,
        full: bool = False,
    ) -> SearchScore:
        """The search's judgement of the cross-fitted outputs (``search_judgement.search_score``: its value,
        the pooled fidelity, the estimate on unseen inputs, the outputs' cosine), as
        ``TrialRunner.judged``: the latency planner orders recovered plans by it. ``full``: with
        every level of a sequential refit in sequence (the delivered refit), not the trials' cap."""
        from .fidelity import prepare_reference
        from .trial_runner import trial_score

        levels = None if full else self.sequential_levels
        groups = frozenset(int(g) for g in removed_groups)
        key = (groups, id(estimates), tuple(sorted((choices or {}).items())), levels)
        if key not in self._judged:
            outs, parts = self._cross_fitted(removed_groups, estimates, levels)
            if self._prepared is None:
                self._prepared = tuple(
                    prepare_reference(self.names, [[r] for r in ref], batch_axes=self.batch_axes)
                    for ref in (self.reference, *self.references)
                )
            pairs = list(zip(self._prepared[1:], parts))
            judged = trial_score(self, self._prepared[0], outs, pairs, choices)
            self._judged[key] = (judged, estimates)
        return self._judged[key][0]

    def final_judged(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
    ) -> SearchScore | None:
        """The chosen plan judged as the run delivers it, when the trials refit it otherwise (a
        sequential refit capped at ``sequential_levels``): cross-fitted with every level in
        sequence; None when the trials' refit is the delivered one."""
        if self.sequential_levels is None:
            return None
        return self.judged(removed_groups, estimates, choices, full=True)

    def _cross_fitted(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        levels: int | None = None,
    ) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """The recovered outputs of every sample, each from the fold that did not fit on it:
        joined, and per fold (its judged half); ``levels``: the sequential refit's (None: all)."""
        from .fidelity import join_outputs
        from .recovery import recover_model
        from .surgery import apply_pruning

        plan = PruningPlan("trial", tuple(removed_groups))
        pruned = apply_pruning(self.model, self.analysis, plan, registry=self.registry, estimates=estimates)
        parts = []
        for (fit, judge), cache in zip(self.folds, self.caches):
            rebuilt, _, _ = recover_model(
                self.model,
                pruned,
                self.analysis,
                plan,
                fit,
                reconstruct=self.reconstruct,
                recalibrate=self.recalibrate,
                reconstruct_from=self.reconstruct_from,
                reconstruct_levels=levels,
                registry=self.registry,
                seed=self.seed,
                recalibration_passes=self.RECALIBRATION_PASSES,
                shallow_recalibration=True,
                source=self.source,
                cache=cache,
                measure=False,
                carry_forward=False,  # every trial's passes from the input: judged alike, bit for bit
            )
            run = session(rebuilt, source=self.source, pruned=True, per_sample=True)
            parts.append(run.outputs(judge, self.batch_axes))
        return join_outputs(self.names, self.batch_axes, parts), parts
