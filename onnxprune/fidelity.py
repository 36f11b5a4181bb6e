"""Fidelity: how closely a pruned model gives the original's answers. The one place that
computes it, for the report, the sensitivity analysis, the ``--min-fidelity`` search and the
int8 reports.

Per output: max and mean abs error, cosine similarity (per sample, mean over samples), top-1
agreement for outputs that look like class scores, and the score under the output's task
metric (``onnxprune.fidelity_metrics``: top1, ctc, dense, detection or cosine), detected from
the reference's shape and values with a reason, or chosen per output. The run's fidelity is
the worst output's score. How the ``--min-fidelity`` search judges a plan from it (bounds,
batch rules, cross-fitting) is ``search_judgement``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from .errors import UsageError
from .fidelity_metrics import (
    FIDELITY_METRICS,
    Choice,
    MetricResult,
    NothingToCompare,
    apply_metric,
    cosine,
    cosine_samples,
    detect_metrics,
    parse_metric,
    prepare_metric,
    sample_norms,
    top1_agreement,
)
from .fidelity_metrics.batch_mean import BATCH_MEAN_METRICS
from .fidelity_metrics.unseen_bound import DEFAULT_CONFIDENCE
from .fidelity_metrics.unseen_bound import unseen as unseen_agreement

if TYPE_CHECKING:
    import onnx

__all__ = [
    "FIDELITY_METRICS",
    "OutputFidelity",
    "OutputMetric",
    "OutputScore",
    "Reference",
    "cosine",
    "default_metric",
    "fidelity",
    "fidelity_from_outputs",
    "join_outputs",
    "output_batch_axes",
    "parse_metric_choices",
    "prepare_reference",
    "run_score",
    "score_outputs",
    "top1_agreement",
]


@dataclass(frozen=True)
class OutputScore:
    name: str
    metric: str
    value: float
    reason: str = ""  # why this metric: detected from the shape and values, or chosen


@dataclass(frozen=True)
class OutputMetric:
    """An output's metric and why, before any candidate is scored (sensitivity tables)."""

    name: str
    metric: str
    reason: str


@dataclass(frozen=True)
class OutputFidelity:
    """How close the pruned model's output is to the original's (not a pass/fail check)."""

    name: str
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    top1_agreement: float | None  # for outputs that look like class scores, or scored by top-1
    metric: str = "cosine"  # what the output's score is
    metric_value: float | None = None  # the score under ``metric`` (None: from the fields above)
    reason: str = ""  # why this metric
    details: Mapping[str, float | int | str] = field(default_factory=lambda: MappingProxyType({}))
    # Estimated agreement on unseen inputs from these samples' margins (top1, ctc, detection, and
    # only when asked for: fidelity_metrics.unseen says what it assumes); None otherwise.
    estimate: float | None = None
    # Its lower bound at ``confidence`` (with the agreement on these samples: the lower of
    # both; fidelity_metrics.unseen_bound), what the search judges; None with ``estimate``.
    bound: float | None = None
    confidence: float | None = None
    # A continuous metric's (cosine, dense) score per sample, whose mean the score is (what the
    # search's batch-mean bound reads: fidelity_metrics.batch_mean); None otherwise.
    per_sample: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def score(self) -> float:
        """The output's fidelity under its metric."""
        if self.metric_value is not None:
            return self.metric_value
        return self.top1_agreement if self.metric == "top1" and self.top1_agreement is not None else self.cosine

    def to_dict(self) -> dict:
        estimate = (
            {}
            if self.estimate is None
            else {"estimate": self.estimate, "bound": self.bound, "confidence": self.confidence}
        )
        return {
            "name": self.name,
            "max_abs_error": self.max_abs_error,
            "mean_abs_error": self.mean_abs_error,
            "cosine": self.cosine,
            "top1_agreement": self.top1_agreement,
            "metric": self.metric,
            "metric_reason": self.reason,
            "score": self.score,
            "details": dict(self.details),
            **estimate,
        }


def default_metric(shape: Sequence[int]) -> str:
    """From the shape alone: top1 for class scores ([N, K] or [N, T, K] with K >= 2), cosine
    otherwise. The scores use the fuller detection from shape and values
    (``fidelity_metrics.detect_metrics``)."""
    return "top1" if len(shape) in (2, 3) and shape[-1] >= 2 else "cosine"


_CHOICE = re.compile(rf"^(.+)=((?:{'|'.join(FIDELITY_METRICS)})(?::.*)?)$", re.S)


def parse_metric_choices(items: Sequence[str]) -> dict[str, str]:
    """CLI --fidelity-metric OUTPUT=METRIC[:key=value,...] (repeatable); OUTPUT '*' sets every
    output. UsageError naming the choices otherwise."""
    out = {}
    for item in items:
        m = _CHOICE.match(item)
        if not m:
            raise UsageError(
                f"--fidelity-metric {item!r}: expected OUTPUT=METRIC with METRIC one of {', '.join(FIDELITY_METRICS)} "
                "(OUTPUT '*' for every output)"
            )
        parse_metric(m.group(2))
        out[m.group(1)] = m.group(2)
    return out


def join_outputs(
    names: Sequence[str], batch_axes: Mapping[str, int], parts: Sequence[Sequence[np.ndarray]]
) -> list[np.ndarray]:
    """Per output (``names``), the parts' arrays (runs over some of the samples each) joined
    on that output's batch axis."""
    return [np.concatenate([p[i] for p in parts], axis=batch_axes.get(n, 0)) for i, n in enumerate(names)]


def output_batch_axes(model: onnx.ModelProto) -> dict[str, int]:
    """Per graph output, the axis that holds the samples when it is not the first: the one
    named like the first input's batch dimension (sequence-first [T, batch, C] exports), or,
    for a batch fixed to 1, the only axis of size 1 of an output whose first axis is not 1."""
    init = {t.name for t in model.graph.initializer}
    first = next(
        (
            i.type.tensor_type.shape.dim[0]
            for i in model.graph.input
            if i.name not in init and i.type.tensor_type.shape.dim
        ),
        None,
    )
    out = {}
    for o in model.graph.output:
        dims = o.type.tensor_type.shape.dim
        if first is not None and first.dim_param:
            axes = [ax for ax, d in enumerate(dims) if d.dim_param == first.dim_param]
        elif first is not None and first.dim_value == 1 and dims and dims[0].dim_value not in (0, 1):
            axes = [ax for ax, d in enumerate(dims) if d.dim_value == 1 and not d.dim_param]
        else:
            axes = []
        if len(axes) == 1 and axes[0] != 0:
            out[o.name] = axes[0]
    return out


def _samples(arrays: Sequence[np.ndarray], batch_axis: int | None = None) -> np.ndarray:
    """Arrays with the samples first (one per feed), as one float64 array; a scalar output is
    one sample. ``batch_axis``: where the model puts the samples, moved first. Otherwise an
    output whose batch is not its first axis (sequence-first [T, N, C], as recurrent exports
    give) shows it by the one axis whose size differs between feeds: that axis is moved first.
    Outputs that differ in more axes count each feed as one sample."""
    parts = [np.asarray(a, np.float64).reshape((1,) if np.ndim(a) == 0 else np.shape(a)) for a in arrays]
    if batch_axis and all(p.ndim > batch_axis for p in parts):
        parts = [np.moveaxis(p, batch_axis, 0) for p in parts]
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


def _chosen(name: str, choices: Mapping[str, str]) -> tuple[str, dict, str] | None:
    for key, how in ((name, f"chosen: {name}={{}}"), ("*", "chosen for every output: *={}")):
        if key in choices:
            metric, params = parse_metric(choices[key])
            return metric, params, how.format(choices[key])
    return None


@dataclass(frozen=True, eq=False)
class Reference:
    """What the scores read of a reference that does not depend on the candidate, derived once
    (``prepare_reference``) and reused for every candidate scored against the same samples:
    per output its samples-first float64 array and the metric its values call for. A search
    scores hundreds of candidates against one reference; on a 640x640 probability map the
    conversion and the metric detection cost as much as the score itself."""

    names: tuple[str, ...]
    samples: tuple[np.ndarray, ...]  # per output, samples first, float64 (read-only)
    detected: tuple[Choice, ...]  # per output, the metric detected from the reference's values
    axes: tuple[int, ...]  # per output, the model's batch axis the samples came from
    norms: tuple[np.ndarray, ...]  # per output, each sample's norm (fidelity_metrics.sample_norms)
    # per output, the arrays it was prepared from (one per feed, as given: not copied)
    sources: tuple[tuple[np.ndarray, ...], ...] = field(default=(), repr=False)
    # per (output, metric, parameters): the metric's own reference side (prepare_metric), on first use
    _metrics: dict[tuple, object] = field(default_factory=dict, repr=False)
    # per (output, metric, parameters, reason, estimate, confidence): the output's figures when the
    # candidate's arrays are the reference's bit for bit (``self_score``), on first use
    _same: dict[tuple, OutputFidelity] = field(default_factory=dict, repr=False)

    def metric_side(self, index: int, metric: str, params: Mapping[str, float | int]) -> object | None:
        """Output ``index``'s reference side of ``metric`` with ``params`` (see
        ``fidelity_metrics.prepare_metric``), made on first use."""
        key = (index, metric, tuple(sorted(params.items())))
        if key not in self._metrics:
            self._metrics[key] = prepare_metric(metric, params, self.samples[index])
        return self._metrics[key]

    def unchanged(self, index: int, arrays: Sequence[np.ndarray]) -> bool:
        """Whether ``arrays`` (a candidate's, one per feed) are output ``index``'s reference
        arrays bit for bit: its figures are then the reference's against itself (a sensitivity
        trial leaves every output its unit's part does not reach as the original's)."""
        refs = self.sources[index] if index < len(self.sources) else None
        return refs is not None and len(refs) == len(arrays) and all(map(_identical, refs, arrays))


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (a -0.0 is not a 0.0, a NaN equals the same NaN)."""
    if a is b:
        return True
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape or a.dtype.kind not in "biuf":
        return False
    bits = f"u{a.itemsize}" if a.itemsize in (1, 2, 4, 8) else "u1"
    return bool(np.array_equal(np.ascontiguousarray(a).view(bits), np.ascontiguousarray(b).view(bits)))


def prepare_reference(
    names: Sequence[str], refs: Sequence[Sequence[np.ndarray]], *, batch_axes: Mapping[str, int] | None = None
) -> Reference:
    """The reference's part of ``fidelity_from_outputs`` (per output the reference's arrays for
    every feed; ``batch_axes`` as there), to pass as its ``refs``: the same figures, bit for
    bit, without re-deriving them per candidate."""
    batch_axes = batch_axes or {}
    axes = tuple(batch_axes.get(n, 0) for n in names)
    rs = tuple(_samples(r, a) for r, a in zip(refs, axes))
    for r in rs:
        r.flags.writeable = False  # shared by every candidate's score
    sources = tuple(tuple(r) for r in refs)
    return Reference(
        tuple(names), rs, tuple(detect_metrics(names, rs, axes)), axes, tuple(sample_norms(r) for r in rs), sources
    )


def fidelity_from_outputs(
    names: Sequence[str],
    refs: Sequence[Sequence[np.ndarray]] | Reference,
    gots: Sequence[Sequence[np.ndarray]],
    choices: Mapping[str, str] | None = None,
    *,
    batch_axes: Mapping[str, int] | None = None,
    estimate: bool = False,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[OutputFidelity, ...]:
    """Every output's fidelity figures and metric (``choices``: output name or "*" -> metric,
    see ``fidelity_metrics.parse_metric``), from per output the reference's and the
    candidate's arrays for every feed (``batch_axes``: output -> the axis of its samples, when
    not the first; see ``output_batch_axes``). ``refs`` may be a ``Reference`` prepared from
    them once (``prepare_reference``, with the same names and batch axes). With ``estimate``,
    top1, ctc and detection outputs get the estimated agreement on unseen inputs
    (``fidelity_metrics.unseen``) and its lower bound at ``confidence``
    (``fidelity_metrics.unseen_bound``)."""
    choices, batch_axes = choices or {}, batch_axes or {}
    kept = isinstance(refs, Reference)  # prepared for many candidates: self-scores worth keeping
    if not isinstance(refs, Reference):
        refs = prepare_reference(names, refs, batch_axes=batch_axes)
    elif refs.names != tuple(names) or refs.axes != tuple(batch_axes.get(n, 0) for n in names):
        raise ValueError("the prepared reference was made for other outputs or batch axes")
    out = []
    for i, (name, r, gs_, found) in enumerate(zip(names, refs.samples, gots, refs.detected)):
        metric, params, reason = _chosen(name, choices) or (found.metric, found.params, found.reason)
        # A candidate output that is the reference's bit for bit scores what the reference
        # scores against itself: computed once per metric (a trial's unreached outputs).
        same = (i, metric, tuple(sorted(params.items())), reason, estimate, confidence if estimate else None)
        if not kept or not refs.unchanged(i, gs_):
            same = None
        elif same in refs._same:
            out.append(refs._same[same])
            continue
        g = _samples(gs_, batch_axes.get(name))
        diff = np.abs(r - g)
        cos_samples = cosine_samples(r, g, refs.norms[i])
        cos = float(cos_samples.mean())
        try:
            result = (
                apply_metric(metric, params, r, g, name, prepared=refs.metric_side(i, metric, params), abs_error=diff)
                if metric != "cosine"
                else MetricResult(cos, samples=cos_samples)  # cosine_metric(r, g): the figures just computed
            )
        except NothingToCompare as why:
            reason = f"{reason}; but {metric} has nothing to compare ({why}): cosine instead"
            metric, result = "cosine", MetricResult(cos, samples=cos_samples)
        top1 = result.value if metric == "top1" else (top1_agreement(r, g) if found.metric == "top1" else None)
        unseen = unseen_agreement(metric, params, r, g, confidence) if estimate else None
        figures = OutputFidelity(
            name,
            float(diff.max()) if diff.size else 0.0,
            float(diff.mean()) if diff.size else 0.0,
            cos,
            top1,
            metric,
            result.value,
            reason,
            result.details,
            unseen.estimate if unseen else None,
            unseen.bound if unseen else None,
            unseen.confidence if unseen else None,
            result.samples if metric in BATCH_MEAN_METRICS else None,
        )
        if same is not None:
            refs._same[same] = figures
        out.append(figures)
    return tuple(out)


def run_score(outputs: Sequence[OutputFidelity]) -> tuple[float, tuple[OutputScore, ...]]:
    """(the run's fidelity = the worst output's score, every output's score)."""
    scores = tuple(OutputScore(o.name, o.metric, o.score, o.reason) for o in outputs)
    return (min(s.value for s in scores) if scores else 1.0), scores


def score_outputs(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    choices: Mapping[str, str] | None = None,
    *,
    batch_axes: Mapping[str, int] | None = None,
) -> tuple[float, tuple[OutputScore, ...]]:
    """(fidelity = worst output's score, per-output scores); one array per output, samples
    first (or on the output's axis in ``batch_axes``)."""
    return run_score(
        fidelity_from_outputs(names, [[r] for r in reference], [[g] for g in candidate], choices, batch_axes=batch_axes)
    )


def fidelity(
    original: onnx.ModelProto | str,
    pruned: onnx.ModelProto | str,
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    choices: Mapping[str, str] | None = None,
    *,
    source: str = "<model>",
    estimate: bool = False,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[OutputFidelity, ...]:
    """Run both models (in memory, or the paths of saved ones) on every feed: the fidelity of
    every output (with ``estimate``, top1, ctc and detection outputs' estimated agreement on unseen inputs
    from these feeds' margins, and its lower bound at ``confidence``)."""
    import onnx

    from .runtime import paired_outputs

    proto = original if isinstance(original, onnx.ModelProto) else onnx.load(original, load_external_data=False)
    return fidelity_from_outputs(
        *paired_outputs(original, pruned, feeds_list, source=source),
        choices,
        batch_axes=output_batch_axes(proto),
        estimate=estimate,
        confidence=confidence,
    )
