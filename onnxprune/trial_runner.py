"""The sensitivity analysis' and the search's trials: the original instrumented once with
``x * keep + fill`` before every reader of a channel (masking.instrument_readers), one
onnxruntime session, keep/fill fed per trial, the calibration samples run through it.

Two things make a sensitivity trial (one unit removed alone) cheaper without changing what
it measures: it runs from the unit's first reader on (trial_segments: the activations before
are the original's, carried forward), and with a ``Screen`` a trial that fails on its first
samples by a wide margin ends there (``screened_trial``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

from .analysis import ChannelAnalysis
from .compensation import reader_masks
from .errors import UnsupportedModel
from .fidelity import (
    OutputMetric,
    Reference,
    fidelity_from_outputs,
    join_outputs,
    output_batch_axes,
    prepare_reference,
    run_score,
)
from .fidelity_metrics.unseen_bound import DEFAULT_CONFIDENCE
from .masking import instrument_readers, mask_feeds
from .runtime import session
from .search_judgement import SearchScore, search_score

__all__ = ["SCREEN_MARGIN", "SCREEN_MIN_SAMPLES", "Judging", "Screen", "TrialRunner", "trial_score"]


class Judging(Protocol):
    """What a trial source (TrialRunner, SelectionTrials, ReconstructedTrials) holds that the
    search's judgement of its outputs reads besides them."""

    names: list[str]  # the graph outputs, in order
    batch_axes: dict[str, int]  # output -> the axis of its samples, when not the first
    confidence: float  # of the bound on discrete outputs
    batch: int | None  # --fidelity-batch: the batch the judgement predicts


def trial_score(
    trials: Judging,
    reference: Sequence[np.ndarray] | Reference,
    outs: Sequence[np.ndarray],
    halves: Sequence[tuple[Sequence[np.ndarray] | Reference, Sequence[np.ndarray]]] | None,
    choices: Mapping[str, str] | None,
) -> SearchScore:
    """``search_judgement.search_score`` of a trial's outputs with the trial source's outputs, batch
    axes, confidence and batch: one call for every kind of trial."""
    return search_score(
        trials.names,
        reference,
        outs,
        halves,
        choices,
        batch_axes=trials.batch_axes,
        confidence=trials.confidence,
        batch=trials.batch,
    )


# A sensitivity trial is screened on the first quarter of the samples when there are at least
# this many (a quarter of 32 is 8: few enough to save most of a failing trial, enough that one
# odd sample does not decide); run one by one, or in two batches (the quarter, the rest).
SCREEN_MIN_SAMPLES = 24
# ... and ends there when its fidelity on them is this far below the search's floor.
SCREEN_MARGIN = 0.05


@dataclass(frozen=True)
class Screen:
    """A sensitivity trial whose fidelity on the first ``samples`` samples is below ``below``
    ends there, with that fidelity: it is far below the search's floor, so the masked search
    cannot keep it (and the unit's larger ratios are skipped); with recovery it stays a move,
    ordered by that fidelity (the recovered model may keep it)."""

    samples: int
    below: float

    @staticmethod
    def for_floor(floor: float | None, samples: int) -> Screen | None:
        """The screen for a search with fidelity floor ``floor`` over ``samples`` samples
        (None: no floor, or too few samples to spare a quarter)."""
        if floor is None or samples < SCREEN_MIN_SAMPLES:
            return None
        return Screen(samples // 4, floor - SCREEN_MARGIN)


class TrialRunner:
    """Runs the instrumented model: one session, all calibration samples per trial."""

    def __init__(
        self,
        model: onnx.ModelProto,
        analysis: ChannelAnalysis,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        source: str = "<model>",
        screen: Screen | None = None,
        confidence: float = DEFAULT_CONFIDENCE,
        batch: int | None = None,
    ) -> None:
        if not feeds:
            raise UnsupportedModel("sensitivity needs calibration inputs")
        self.analysis = analysis
        self.confidence = confidence  # of the search's bound on discrete outputs (search_score)
        self.batch = batch  # --fidelity-batch: the batch the search's value predicts (search_score)
        instrumented, self.ports = instrument_readers(model, analysis)
        from .shapes import dynamic_batch_inputs

        self.names = [o.name for o in model.graph.output]
        self.batch_axes = output_batch_axes(model)  # sequence-first outputs keep their samples on axis 1
        names_in = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        # Samples go through in one batch when the batch is dynamic, else one by one (then
        # several at once, each on one thread: runtime.session's per_sample); with a screen,
        # the screened samples are a batch of their own (a sample's outputs do not depend on
        # the batch it runs in).
        self.samples = len(feeds)
        screening = screen is not None and self.samples > screen.samples
        batched = set(dynamic_batch_inputs(model)) >= set(names_in)
        self.session = session(
            instrumented,
            source=source,
            what="the model instrumented for sensitivity trials",
            optimize=True,
            per_sample=not batched,
        )
        if batched:
            cuts = [0, screen.samples, self.samples] if screening and screen is not None else [0, self.samples]
            self.batches = [
                {k: np.concatenate([f[k] for f in feeds[a:b]]) for k in names_in} for a, b in zip(cuts, cuts[1:])
            ]
            screened_batches = 1
        else:
            self.batches = list(feeds)
            screened_batches = screen.samples if screening and screen is not None else 0
        self.segments = None
        self._reference_parts = self._parts({})
        self.reference = self._joined(self._reference_parts)
        self.screen = screen if screening else None
        self._screened_batches = screened_batches  # the batches holding the screened samples
        # The sensitivity analysis runs a trial from its first changed reader on (trial_segments).
        from .trial_segments import Segments

        self.segments = Segments(
            instrumented,
            self.ports,
            self.batches,
            self.names,
            self._reference_parts,
            source=source,
            per_sample=not batched,
        )
        # A plan is never run twice (the search often re-measures a sensitivity trial): by
        # groups, the estimates object (kept alive with its entry) and the metric choices.
        self._cache: dict[tuple, tuple[SearchScore, object]] = {}
        # Sensitivity trials (screened_trial): (judgement without the halves, screened).
        self._alone: dict[tuple, tuple[tuple[SearchScore, bool], object]] = {}
        self.runs = 0
        self.screened = 0  # trials that ended on the screened samples
        # The reference's side of every score (fidelity.prepare_reference), derived once per set
        # of samples it is scored on (see _reference).
        self._prepared: dict[str, Reference] = {}

    def _reference(self, which: str) -> Reference:
        """The prepared reference on "all" the samples, the "screened" ones, or the first ("0")
        or second ("1") half (``_halves``, which must not be None)."""
        if which not in self._prepared:
            if which == "all":
                ref = self.reference
            elif which == "screened":
                ref = self._joined(self._reference_parts[: self._screened_batches])
            else:
                halves = self._halves(self.reference)
                assert halves is not None, "the outputs have no halves"
                ref = halves[int(which)]
            self._prepared[which] = prepare_reference(self.names, [[r] for r in ref], batch_axes=self.batch_axes)
        return self._prepared[which]

    def _parts(
        self, masks: Mapping[tuple[str, int], tuple[np.ndarray, np.ndarray]], which: range | None = None
    ) -> list[list[np.ndarray]]:
        """Per batch (``which``: those batches), the outputs with ``masks``."""
        which = range(len(self.batches)) if which is None else which
        extra = mask_feeds(self.ports, masks)
        # From the frontier once the sensitivity analysis has moved it (at 0 it is the whole model).
        carried = masks and self.segments is not None and self.segments.at > 0
        parts = self.segments.run(masks, extra, which) if carried else None
        if parts is not None:
            return parts
        return self.session.run_each([{**self.batches[k], **extra} for k in which], self.names)

    def _joined(self, parts: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """Per output, the batches' arrays joined on its batch axis."""
        return join_outputs(self.names, self.batch_axes, parts)

    def _run(self, masks: Mapping[tuple[str, int], tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        return self._joined(self._parts(masks))

    def first_change(self, removed_groups: Sequence[int], estimates: Mapping[str, np.ndarray] | None) -> int:
        """Where a trial removing ``removed_groups`` starts to differ from the original (an index
        into the instrumented model's nodes; see trial_segments)."""
        if self.segments is None:
            return 0
        return self.segments.cut(reader_masks(self.analysis, self._removed_ids(removed_groups), estimates))

    def advance(self, cut: int) -> None:
        """Carry the original's activations forward to ``cut``: the trials that change nothing
        before it run from there (trial_segments.Segments.advance)."""
        if self.segments is not None:
            self.segments.advance(cut)

    def focus(self, removed_groups: Sequence[int], estimates: Mapping[str, np.ndarray] | None) -> None:
        """The next trials remove some of ``removed_groups`` (one unit's): they run the nodes
        downstream of its readers only (trial_segments.Segments.focus)."""
        if self.segments is not None:
            self.segments.focus(reader_masks(self.analysis, self._removed_ids(removed_groups), estimates))

    def release(self) -> None:
        """The end of the sensitivity analysis: drop the carried activations; the search's
        trials (several units at once) run the whole model."""
        if self.segments is not None:
            self.segments.release()
            self.segments = None

    def _removed_ids(self, groups: Sequence[int] | set[int] | frozenset[int]) -> np.ndarray:
        return np.isin(self.analysis.root_of, np.asarray(sorted(int(g) for g in groups), dtype=np.int64))

    def _halves(self, outs: Sequence[np.ndarray]) -> list[list[np.ndarray]] | None:
        """The outputs of the first and the second half of the samples, cut on each output's
        batch axis (None when an output does not hold one row per sample there)."""
        n = self.samples
        axes = [self.batch_axes.get(name, 0) for name in self.names]
        if n < 2 or any(np.ndim(o) <= ax or np.shape(o)[ax] != n for o, ax in zip(outs, axes)):
            return None
        cut = [np.split(np.asarray(o), [n // 2], axis=ax) for o, ax in zip(outs, axes)]
        return [[c[0] for c in cut], [c[1] for c in cut]]

    def fidelity(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
        *,
        search: bool = False,
    ) -> float:
        """The fidelity on the calibration samples with ``removed_groups`` masked; with
        ``search`` the search's judgement of it (``search_judgement.search_score``, see ``allocate``)."""
        judged = self.judged(removed_groups, estimates, choices)
        return judged.value if search else judged.pooled

    @staticmethod
    def _key(removed_groups: Sequence[int] | set[int], estimates: object, choices: Mapping[str, str] | None) -> tuple:
        return (frozenset(int(g) for g in removed_groups), id(estimates), tuple(sorted((choices or {}).items())))

    def judged(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
    ) -> SearchScore:
        """The pooled fidelity, the worse half's and the estimate on unseen inputs of a plan."""
        key = self._key(removed_groups, estimates, choices)
        if key not in self._cache:
            outs = self._run(reader_masks(self.analysis, self._removed_ids(key[0]), estimates))
            self.runs += 1
            halves = self._halves(outs)
            cut = halves is not None and self._halves(self.reference) is not None
            pairs = list(zip((self._reference("0"), self._reference("1")), halves)) if cut and halves else None
            judged = trial_score(self, self._reference("all"), outs, pairs, choices)
            self._cache[key] = (judged, estimates)
        return self._cache[key][0]

    def screened_trial(
        self,
        removed_groups: Sequence[int] | set[int],
        estimates: Mapping[str, np.ndarray] | None,
        choices: Mapping[str, str] | None = None,
    ) -> tuple[SearchScore, bool]:
        """A sensitivity trial: (its judgement, screened). The sensitivity reads the pooled
        fidelity and the estimate only, so the halves are not scored (``judged`` scores them
        when the search asks for the same plan). Under the runner's ``Screen`` a trial whose
        fidelity on the screened samples is below the screen's bound ends there (True: the
        judgement holds that fidelity, no estimate); otherwise the other samples are run and
        the figures are exactly the unscreened trial's."""
        key = self._key(removed_groups, estimates, choices)
        if key in self._cache:
            return self._cache[key][0], False
        if key not in self._alone:
            masks = reader_masks(self.analysis, self._removed_ids(key[0]), estimates)
            first: list[list[np.ndarray]] = []
            if self.screen is not None:
                first = self._parts(masks, range(self._screened_batches))
                got = self._joined(first)
                value = run_score(
                    fidelity_from_outputs(
                        self.names, self._reference("screened"), [[g] for g in got], choices, batch_axes=self.batch_axes
                    )
                )[0]
                if value < self.screen.below:
                    self.screened += 1
                    self._alone[key] = ((SearchScore(value, value, None, None), True), estimates)
                    return self._alone[key][0]
            outs = self._joined([*first, *self._parts(masks, range(len(first), len(self.batches)))])
            self.runs += 1
            judged = trial_score(self, self._reference("all"), outs, None, choices)
            self._alone[key] = ((judged, False), estimates)
        return self._alone[key][0]

    def metrics(self, choices: Mapping[str, str] | None = None) -> tuple[OutputMetric, ...]:
        """The metric of every output on these samples, and why (the reference decides)."""
        ref = [[r] for r in self.reference]
        figures = fidelity_from_outputs(self.names, self._reference("all"), ref, choices, batch_axes=self.batch_axes)
        return tuple(OutputMetric(f.name, f.metric, f.reason) for f in figures)
