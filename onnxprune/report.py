"""The report of a pruning run, as data (``to_dict`` is the JSON the CLI writes), and how it is
built from the analysis, the plan and the two models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import Message, in_words
from .fidelity import OutputFidelity
from .verification import VerificationResult

if TYPE_CHECKING:
    import onnx

    from .analysis import ChannelAnalysis
    from .config import PruneConfig
    from .fidelity import OutputScore
    from .fidelity_metrics.batch_mean import BatchMean
    from .fidelity_metrics.batch_prediction import BatchPrediction, BatchRule
    from .metrics import ModelCost
    from .planning import PruningPlan
    from .recalibration import RecalibratedLayer
    from .reconstruction import ReconstructedLayer
    from .rules import RuleRegistry
    from .search_judgement import CrossFitted
    from .sensitivity_analysis import SensitivityResult
    from .stages.latency import LatencyOutcome
    from .user_validation import ValidationResult

__all__ = [
    "REPORT_FORMAT",
    "CalibrationFidelity",
    "Generalisation",
    "HeldOutFidelity",
    "KeptGroup",
    "LayerChange",
    "PruneBudget",
    "PruneReport",
    "UnseenEstimate",
    "build_report",
]

# The first key of every report as JSON: what it is and the version of its layout (a pipeline
# checks it; the number goes up when a key changes meaning or goes away).
REPORT_FORMAT = "onnxprune-report/1"


@dataclass(frozen=True)
class LayerChange:
    node: str
    op: str
    channels_before: int
    channels_after: int


@dataclass(frozen=True)
class KeptGroup:
    id: int
    channels: int
    members: tuple[tuple[str, int], ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "channels": self.channels,
            "members": [{"node": n, "channel": c} for n, c in self.members[:8]],
            "more_members": max(0, len(self.members) - 8),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PruneBudget:
    """What a lossy run was asked to prune to (``report["budget"]``; an exact removal has none):
    the ratio (with ``global_ranking``: of all the channels), the MACs or latency target, the
    rounding of kept counts, the excluded node patterns and how many ``--config`` layer rules."""

    ratio: float | None
    global_ranking: bool
    macs_target: float | None
    latency_target: float | None
    round_to: int
    exclude: tuple[str, ...]
    config_entries: int

    @classmethod
    def from_config(cls, config: PruneConfig) -> PruneBudget:
        return cls(
            ratio=config.ratio,
            global_ranking=config.global_ranking,
            macs_target=config.macs_target,
            latency_target=config.latency_target,
            round_to=config.round_to,
            exclude=tuple(config.exclude),
            config_entries=len(config.layer_rules),
        )

    def to_dict(self) -> dict:
        return {
            "ratio": self.ratio,
            "global": self.global_ranking,
            "macs_target": self.macs_target,
            "latency_target": self.latency_target,
            "round_to": self.round_to,
            "exclude": list(self.exclude),
            "config_entries": self.config_entries,
        }


@dataclass(frozen=True)
class CalibrationFidelity:
    """The pruned model's fidelity (the run's score) on the calibration samples its plan was chosen on."""

    samples: int
    fidelity: float

    def to_dict(self) -> dict:
        return {"samples": self.samples, "fidelity": self.fidelity}


@dataclass(frozen=True)
class HeldOutFidelity:
    """The pruned model's fidelity on the held-out evaluation samples, and how many of them are
    also calibration samples (the same arrays)."""

    samples: int
    fidelity: float
    also_calibration: int

    def to_dict(self) -> dict:
        return {"samples": self.samples, "fidelity": self.fidelity, "also_calibration": self.also_calibration}


@dataclass(frozen=True)
class UnseenEstimate:
    """The estimated agreement of the top-1 / CTC / detection outputs on unseen inputs, from the
    calibration samples' margins (the worst output's), its bound at ``confidence``, whether the
    search judged the plan by it, what it means, and what a batch of as many inputs as the
    evaluation samples is expected to score."""

    samples: int
    fidelity: float
    bound: float
    confidence: float
    what: str
    judged_by_search: bool
    batch: BatchPrediction

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "fidelity": self.fidelity,
            "bound": self.bound,
            "confidence": self.confidence,
            "what": self.what,
            "judged_by_search": self.judged_by_search,
            "batch": self.batch.to_dict(),
        }


@dataclass(frozen=True)
class Generalisation:
    """A run with held-out evaluation samples: its fidelity on the calibration samples beside
    the held-out ones (``gap``: what choosing on them cost elsewhere); with discrete outputs the
    estimate on unseen inputs; with ``--reconstruct`` / ``--recalibrate`` and a floor the
    search's cross-fitted judgement; with ``--fidelity-batch`` what its rule judged; with
    continuous outputs and a floor, what the batch-mean rule judged."""

    calibration: CalibrationFidelity
    held_out: HeldOutFidelity
    estimate: UnseenEstimate | None = None
    cross_fitted: CrossFitted | None = None
    batch_rule: BatchRule | None = None
    batch_mean: BatchMean | None = None

    @property
    def gap(self) -> float:
        return self.calibration.fidelity - self.held_out.fidelity

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "calibration": self.calibration.to_dict(),
            "held_out": self.held_out.to_dict(),
            "gap": self.gap,
        }
        if self.estimate is not None:
            d["estimate"] = self.estimate.to_dict()
        if self.cross_fitted is not None:
            d["cross_fitted"] = self.cross_fitted.to_dict()
        if self.batch_rule is not None:
            d["batch_rule"] = self.batch_rule.to_dict()
        if self.batch_mean is not None:
            d["batch_mean"] = self.batch_mean.to_dict()
        return d


# PruneReport's own texts, written in the command line's words (see its __post_init__).
_TEXTS = ("criterion_reason", "data_note", "macs_unknown", "notes")


@dataclass(frozen=True)
class PruneReport:
    model: str
    criterion: str
    channels_total: int
    channels_removed: int
    groups_total: int
    groups_removed: int
    params_before: int
    params_after: int
    macs_before: int | None  # None when some layer's shapes are unknown (see macs_unknown)
    macs_after: int | None
    macs_complete: bool
    size_before: int
    size_after: int
    layers: tuple[LayerChange, ...]
    kept_groups: tuple[KeptGroup, ...]
    verification: VerificationResult | None
    notes: tuple[str, ...] = field(default=())
    fidelity: tuple[OutputFidelity, ...] | None = None
    compensation: str = "exact constants"
    reference: str = "original"
    budget: PruneBudget | None = None  # None: an exact removal
    criterion_reason: str = ""
    fidelity_on_random_inputs: bool = False
    fidelity_score: float | None = None  # the run's score under its fidelity metrics (lossy runs)
    fidelity_metrics: tuple[OutputScore, ...] | None = None  # per output: the metric and its value
    evaluation: str = "none"  # which inputs verification and fidelity ran on
    data_note: str = ""  # how calibration and evaluation samples were chosen
    reconstructed_layers: tuple[ReconstructedLayer, ...] = ()
    recalibrated_layers: tuple[RecalibratedLayer, ...] = ()
    sensitivity: SensitivityResult | None = None  # with a fidelity budget: what allocation measured
    macs_unknown: str = ""  # why the MACs are unknown ("" when they are known)
    validation: ValidationResult | None = None  # the user's validation function: baseline, final, calls
    generalisation: Generalisation | None = None  # fidelity on the calibration samples beside the held-out one
    latency: LatencyOutcome | None = None  # with a latency budget: predicted and measured

    def __post_init__(self) -> None:
        # Its texts are written in the command line's words; as Messages they read in the
        # API's (report.notes[0] said "give --inputs or --calibration" to prune(...)'s caller),
        # and the CLI shows their cli_text (to_dict(words="cli")).
        for name in _TEXTS[:-1]:
            object.__setattr__(self, name, Message(getattr(self, name)))
        object.__setattr__(self, "notes", tuple(Message(n) for n in self.notes))

    def to_json(self, words: str = "api", **options: Any) -> str:
        """``to_dict(words)`` as strict JSON text, as the CLI writes it: a NaN or infinite number
        (a model whose outputs are NaN) is null (``json.dumps`` would write a bare NaN, which
        is not JSON). ``options`` go to ``json.dumps`` (e.g. ``indent=2``)."""
        from .render import json_text

        return json_text(self.to_dict(words), **options)

    def to_dict(self, words: str = "api") -> dict:
        """The report as plain data; its own texts (notes, criterion_reason, data_note,
        macs_unknown) name the Python API's options (``words="api"``: calibration,
        verification_inputs) or the command line's flags (``"cli"``: --calibration, --inputs),
        as the CLI writes them. Its parts' entries are their own ``to_dict()``'s."""
        data = self._data()
        for key in _TEXTS:
            data[key] = in_words(data[key], words)
        return data

    def _data(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "model": self.model,
            "criterion": self.criterion,
            "criterion_reason": self.criterion_reason,
            "channels_total": self.channels_total,
            "channels_removed": self.channels_removed,
            "groups_total": self.groups_total,
            "groups_removed": self.groups_removed,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_complete": self.macs_complete,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "layers": [
                {"node": c.node, "op": c.op, "channels_before": c.channels_before, "channels_after": c.channels_after}
                for c in self.layers
            ],
            "kept_groups": [g.to_dict() for g in self.kept_groups],
            "verification": None if self.verification is None else self.verification.to_dict(),
            "notes": list(self.notes),
            "fidelity": None if self.fidelity is None else [f.to_dict() for f in self.fidelity],
            "fidelity_on_random_inputs": self.fidelity_on_random_inputs,
            "compensation": self.compensation,
            "verified_against": self.reference,
            "budget": None if self.budget is None else self.budget.to_dict(),
            "fidelity_score": self.fidelity_score,
            "fidelity_metrics": None
            if self.fidelity_metrics is None
            else {o.name: {"metric": o.metric, "value": o.value} for o in self.fidelity_metrics},
            "evaluation": self.evaluation,
            "data_note": self.data_note,
            "reconstructed_layers": [
                {"node": r.node, "positions": r.positions, "error_before": r.error_before, "error_after": r.error_after}
                for r in self.reconstructed_layers
            ],
            "sensitivity": None if self.sensitivity is None else self.sensitivity.to_dict(),
            "macs_unknown": self.macs_unknown or None,  # why macs_before/after are null
            "validation": None if self.validation is None else self.validation.to_dict(),
            "generalisation": None if self.generalisation is None else self.generalisation.to_dict(),
            "recalibrated_layers": [  # added last, as the keys before it
                {
                    "node": r.node,
                    "channels": r.channels,
                    "folded_into": r.folded_into,
                    "mean_shift_before": r.mean_shift_before,
                    "mean_shift_after": r.mean_shift_after,
                    "std_change_before": r.std_change_before,
                    "std_change_after": r.std_change_after,
                }
                for r in self.recalibrated_layers
            ],
            "latency": None if self.latency is None else self.latency.to_dict(),
        }


def build_report(
    source: str,
    before: ModelCost,
    sizes: tuple[int, int],
    pruned: onnx.ModelProto,
    analysis: ChannelAnalysis,
    pruning_plan: PruningPlan,
    config: PruneConfig,
    verification: VerificationResult | None,
    fid: tuple[OutputFidelity, ...] | None,
    compensation: str,
    reference_kind: str,
    *,
    fidelity_on_random_inputs: bool = False,
    fidelity_score: float | None = None,
    fidelity_metrics: tuple[OutputScore, ...] | None = None,
    evaluation: str = "none",
    data_note: str = "",
    reconstructed_layers: tuple[ReconstructedLayer, ...] = (),
    recalibrated_layers: tuple[RecalibratedLayer, ...] = (),
    sensitivity: SensitivityResult | None = None,
    registry: RuleRegistry | None = None,
    validation: ValidationResult | None = None,
    generalisation: Generalisation | None = None,
    latency: LatencyOutcome | None = None,
) -> PruneReport:
    """The report of a pruning run: channels, parameters, MACs and size before and after, each
    changed layer, every kept group with its reasons, verification and fidelity (the keywords
    are given as they are; ``fidelity_on_random_inputs`` also adds a note when there is a
    fidelity)."""
    from .analysis import static_shapes
    from .compensation import removed_id_mask
    from .metrics import model_cost, node_macs, pruned_shapes, unknown_macs_reason
    from .rules import default_registry
    from .shapes import concrete_input_shapes

    removed = removed_id_mask(analysis, pruning_plan)
    layers = []
    total = cut = 0
    for src in analysis.sources:
        n, gone = len(src.ids), int(removed[src.ids].sum())
        total += n
        cut += gone
        if gone:
            layers.append(LayerChange(src.node, src.op, n, n - gone))
    shapes = pruned_shapes(analysis, removed, pruned, registry)
    if shapes is None:
        shapes = static_shapes(pruned, concrete_input_shapes(pruned, config.input_shapes, source))
    after = model_cost(pruned, shapes, registry)
    removed_set = set(pruning_plan.removed_groups)
    kept = tuple(
        KeptGroup(g.id, len(g.members), g.members, pruning_plan.kept_reasons.get(g.id, ()))
        for g in analysis.groups
        if g.id not in removed_set and pruning_plan.kept_reasons.get(g.id)
    )
    notes = list(pruning_plan.notes) + list(analysis.not_analysed)
    macs_unknown = ""
    if not (before.macs_complete and after.macs_complete):
        # Never a number from the layers whose shapes happen to be known: the MACs are unknown.
        in_shapes = concrete_input_shapes(pruned, config.input_shapes, source)
        macs_unknown = unknown_macs_reason(
            pruned, node_macs(pruned, shapes, registry or default_registry()), in_shapes
        ) or ("the shapes of some layers of the original model are unknown")
        notes.append(f"MACs unknown: {macs_unknown}")
    on_random_inputs = fidelity_on_random_inputs and fid is not None
    if on_random_inputs:
        notes.append(
            "fidelity was measured on seeded random inputs, not real data: give --inputs or --calibration for meaningful numbers"
        )
    return PruneReport(
        model=source,
        criterion=pruning_plan.criterion,
        criterion_reason=config.criterion_reason
        if pruning_plan.criterion == config.criterion
        else "from the given plan",
        channels_total=total,
        channels_removed=cut,
        groups_total=len(analysis.groups),
        groups_removed=len(pruning_plan.removed_groups),
        params_before=before.params,
        params_after=after.params,
        macs_before=before.macs if not macs_unknown else None,
        macs_after=after.macs if not macs_unknown else None,
        macs_complete=not macs_unknown,
        macs_unknown=macs_unknown,
        size_before=sizes[0],
        size_after=sizes[1],
        layers=tuple(layers),
        kept_groups=kept,
        verification=verification,
        notes=tuple(notes),
        fidelity=fid,
        compensation=compensation if not pruning_plan.exact else "exact constants",
        reference=reference_kind,
        budget=PruneBudget.from_config(config) if not pruning_plan.exact else None,
        fidelity_on_random_inputs=on_random_inputs,
        fidelity_score=fidelity_score,
        fidelity_metrics=fidelity_metrics,
        evaluation=evaluation,
        data_note=data_note,
        reconstructed_layers=tuple(reconstructed_layers),
        recalibrated_layers=tuple(recalibrated_layers),
        sensitivity=sensitivity,
        validation=validation,
        generalisation=generalisation,
        latency=latency,
    )
