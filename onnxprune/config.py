"""One frozen options object shared by the Python API and the CLI (its checks and default
criterion rule live in config_checks, the value checks it shares in option_checks, the config
file's per-layer rules in layer_rules; all re-exported here)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .config_checks import BUDGET_DEFAULT_CRITERION, COMPENSATION_MODES, check_config
from .config_checks import DATA_DEFAULT_CRITERION as DATA_DEFAULT_CRITERION  # tests and callers read it here
from .errors import UsageError
from .latency.table import LatencySettings
from .layer_rules import LayerRule, load_layer_rules
from .option_checks import check_option_names, check_regex, parse_input_shape

if TYPE_CHECKING:
    from .user_validation import Candidate, MaxDrop

__all__ = [
    "BUDGET_DEFAULT_CRITERION",
    "COMPENSATION_MODES",
    "DEFAULT_MAX_DROP",
    "SENSITIVITY_RATIOS",
    "VALIDATED_SENSITIVITY_RATIOS",
    "LayerRule",
    "PruneConfig",
    "check_option_names",
    "check_regex",
    "load_layer_rules",
    "parse_input_shape",
]

# The drop a validation function may show when none is given: NNCF's default max_drop.
DEFAULT_MAX_DROP = 0.01
SENSITIVITY_RATIOS = (0.1, 0.25, 0.5)
# A validated search bisects group by group: the ladder only orders groups and caps each unit.
VALIDATED_SENSITIVITY_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True)
class PruneConfig:
    """Every option of a pruning run.

    criterion: zero | l1 | l2 | fpgm | random | kmeans | bn-gamma | apoz | mean-activation |
        reconstruction
        (or a name registered in a CriterionRegistry). None (the default) picks one by a single
        rule: l2 when a budget is given (``ratio``, ``macs_target``, ``min_fidelity``,
        ``latency_target`` or a config entry with a sparsity), else zero; ``criterion_reason`` says which and why.
    ratio: fraction of each layer's output channels to remove (with ``global_ranking``: of all).
    macs_target: remove channels until MACs <= macs_target x the original's.
    round_to: kept channel counts are made multiples of this (fast kernels like 8 or 16).
    exclude: regular expressions of node names never pruned.
    layer_rules: per-layer sparsity / exclusion, applied in order after ``ratio``.
    calibration: .npz with arrays keyed by input name (first axis = samples): activation
        statistics and compensation.
    compensation: auto (calibration means when calibration is given, else data-free), none,
        data-free (the removed channels' value with their filters zeroed, from the biases), or
        calibration.
    input_shapes: static shapes for inputs with dynamic dimensions other than the batch.
    verify: run onnxruntime on original and pruned model and compare every output.
    verification_inputs: .npz of inputs to verify on (default: seeded random inputs).
    seed: seed of random scores and random verification inputs.
    tolerance: None (default) verifies noise-aware: each output within max(1e-5 x its scale,
        a small multiple of the reference's own float-noise floor on the same inputs); a number
        is an explicit override: max abs diff <= tolerance x output scale, no noise floor.
    min_fidelity: remove as much as keeps the fidelity on the calibration inputs >= this,
        allocating per-layer ratios by measured sensitivity (with macs_target: reach it with
        the best fidelity found).
    fidelity_confidence: the confidence of the lower bound the search judges top-1 and CTC
        outputs by (their agreement on unseen inputs: fidelity_metrics.unseen_bound), in
        [0.5, 1); 0.5 judges by the point estimate.
    fidelity_batch: with min_fidelity (or max_drop without validate), keep a plan only if a
        batch of this many other inputs is predicted to read >= the floor on its top-1 / CTC /
        detection outputs in at least fidelity_confidence of such batches, their agreement
        taken at its lower bound (binomial: fidelity_metrics.batch_prediction.batch_reading);
        the size of the batch you will validate on. Continuous outputs (cosine, dense) are
        judged as without it. None: no such rule.
    reconstruct: refit the readers of removed channels by least squares on calibration data.
    reconstruct_from: what each reader is refitted on: "original" (the original's activations,
        each reader independently) or "pruned" (sequential: the pruned model's, the readers
        upstream refitted first), in the search's trials as in the delivered model.
    recalibrate: after pruning (and reconstruction), correct every layer downstream of a removal
        so that its kept channels' mean and variance on the calibration data are the original's
        (folded into the BatchNormalization after it, or its own weights and bias).
    fidelity_metrics: output name (or "*") -> top1, ctc, dense, detection or cosine, with
        parameters as "ctc:blank=K" (default: detected per output from shape and values).
    sensitivity_ratios: the fractions of each unit tried by the sensitivity analysis; None:
        (0.1, 0.25, 0.5), or (0.1, 0.2, ..., 0.7) when a validation function judges the search
        (it bisects channel group by channel group, so the ladder only orders the groups and
        caps each unit: a finer, longer ladder costs sensitivity trials, not calls).
    preprocess: how to turn a folder of calibration images into inputs (see calibration).
    calibration_limit: at most this many calibration samples are used.
    validate: your validation function, ``fn(candidate) -> float`` (higher is better, on your
        own data; see user_validation.Candidate), or its spec "FILE.py:function" /
        "module:function", resolved when the run starts. Without another budget it judges
        the search: the largest cut whose value stays within ``max_drop`` of the original's
        (default 0.01 absolute, NNCF's); with one it only measures the result.
    max_drop: the allowed drop of the validated metric (yours with ``validate``, else the
        fidelity, whose baseline is 1.0): a number (absolute, in the metric's units) or
        "D%" (relative to the baseline). It is a budget itself: not with ratio, macs_target,
        min_fidelity or a config sparsity.
    latency_target: remove channels until the measured latency is <= this x the original's
        (a per-unit latency table measured on this machine plans it, an interleaved A/B run
        confirms it); with min_fidelity the fidelity floor wins.
    latency: how the latency is measured: backend, batch, threads, hint, precision (the
        deployment's; see latency.LatencySettings).
    latency_evaluations: with latency_target and calibration, the fidelity evaluations of
        combined plans the planner may spend ordering its moves by their cost measured on the
        plan they join (interactions; see latency.interactions); None: 2 per unit, 16-160, and
        with reconstruct / recalibrate (each evaluation refits the model) one more per
        unit (each unit's first move measured on the recovered model); a number: that many;
        0: each unit's loss measured alone orders them. With reconstruct / recalibrate the
        fidelity floor's evaluations draw on the same budget (latency.evaluations).
    latency_evaluation_seconds: a time budget on those evaluations besides the count (seconds
        of evaluation; none is started once they took that long); None (default): the count
        alone, so the plan does not depend on the machine's speed or load.
    rules: rules for your own ops, added to the registry the run uses (``registry=``, else the
        default one): a RuleRegistry (used as it is), a rule, a rule class or a list of them, a
        function ``f(registry)`` that extends the registry it is given (returning it or None), or
        the spec "FILE.py:NAME" / "module:NAME" of one of these, resolved when the run starts
        (``rules.load_rules``; the CLI's ``--rules``).
    """

    criterion: str | None = None
    ratio: float | None = None
    global_ranking: bool = False
    macs_target: float | None = None
    round_to: int = 1
    exclude: tuple[str, ...] = ()
    layer_rules: tuple[LayerRule, ...] = ()
    calibration: str | None = None
    compensation: str = "auto"
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    verify: bool = True
    verification_inputs: str | None = None
    seed: int = 0
    tolerance: float | None = None
    min_fidelity: float | None = None
    fidelity_confidence: float = 0.95
    fidelity_batch: int | None = None
    reconstruct: bool = False
    reconstruct_from: str = "original"
    recalibrate: bool = False
    fidelity_metrics: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    sensitivity_ratios: tuple[float, ...] | None = None
    preprocess: str | None = None
    calibration_limit: int = 64
    validate: Callable[[Candidate], float] | str | None = None
    max_drop: MaxDrop | float | str | None = None
    latency_target: float | None = None
    latency: LatencySettings = field(default_factory=LatencySettings)
    latency_evaluations: int | None = None
    latency_evaluation_seconds: float | None = None
    rules: object = None
    criterion_reason: str = ""

    def __post_init__(self) -> None:
        check_config(self)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> PruneConfig:
        """A config with a config file's options (read as ``--config`` reads it: its entries as
        ``layer_rules``, a mapping's ``rules``, a relative FILE.py beside the file; an unknown key
        refused) and ``options``. ``rules`` given here and in the file, or ``layer_rules`` here and
        entries in the file, is refused: give one."""
        from .layer_rules import config_file_options

        check_option_names(cls, options)
        given = config_file_options(path, options.pop("rules", None))
        if given["layer_rules"] and options.get("layer_rules"):
            raise UsageError(f"layer_rules and {os.fspath(path)}'s entries: give one")
        return cls(**{**given, **{k: v for k, v in options.items() if k != "layer_rules" or v}})

    def with_options(self, criterion: str | None = None, **options: object) -> PruneConfig:
        """This config with ``options`` replaced; a ``criterion`` of None keeps a criterion that
        was given and re-applies the default rule to one that was not."""
        if criterion is None and self.criterion_reason == "given":
            criterion = self.criterion
        check_option_names(type(self), options)
        if "criterion_reason" in options:  # the config's own record of the default rule
            raise UsageError("criterion_reason is not an option: the config says why it chose the criterion")
        return replace(self, criterion=criterion, criterion_reason="", **options)  # type: ignore[arg-type]

    @property
    def explicit_budget(self) -> tuple[str, ...]:
        """The budgets that fix the pruning without a drop: ratio, MACs, fidelity, config."""
        given = [
            ("--ratio", self.ratio is not None),
            ("--macs-target", self.macs_target is not None),
            ("--min-fidelity", self.min_fidelity is not None),
            ("--config sparsity", any(r.sparsity for r in self.layer_rules)),
        ]
        return tuple(name for name, on in given if on)

    @property
    def budget_options(self) -> tuple[str, ...]:
        """The budget options that are set, as the CLI spells them (empty: no budget). A
        latency target is one, and goes with a drop (the answers it keeps)."""
        explicit = self.explicit_budget
        if self.latency_target is not None:
            explicit = (*explicit, "--latency-target")
        if self.max_drop is not None:
            return (*explicit, "--max-drop")
        if self.validate is not None and not self.explicit_budget:
            return (*explicit, "--validate")
        return explicit

    @property
    def pruning_drop(self) -> MaxDrop | None:
        """The drop that bounds the pruning search: ``max_drop``, or with a validation function
        and no other budget NNCF's default (0.01 absolute); None when another budget decides."""
        if self.max_drop is not None:
            return self.max_drop  # type: ignore[return-value]  # parsed in __post_init__
        if self.validate is not None and not self.explicit_budget:
            from .user_validation import MaxDrop

            return MaxDrop(DEFAULT_MAX_DROP)
        return None

    @property
    def fidelity_floor(self) -> float | None:
        """The fidelity the search keeps: ``min_fidelity``, or 1 - ``max_drop`` without a
        validation function (fidelity's baseline is 1.0: the original agrees with itself)."""
        if self.min_fidelity is not None:
            return self.min_fidelity
        drop = self.pruning_drop
        if drop is None or self.validate is not None:
            return None
        return 1.0 - drop.allowed(1.0)

    @property
    def validated_search(self) -> bool:
        """The search is judged by the user's validation function."""
        return self.validate is not None and self.pruning_drop is not None

    @property
    def ratios(self) -> tuple[float, ...]:
        """The sensitivity ladder: ``sensitivity_ratios``, or the default for this run."""
        if self.sensitivity_ratios is not None:
            return self.sensitivity_ratios
        return VALIDATED_SENSITIVITY_RATIOS if self.validated_search else SENSITIVITY_RATIOS

    @property
    def lossy(self) -> bool:
        return self.criterion != "zero"

    @property
    def data_default(self) -> bool:
        """An unnamed criterion means ``DATA_DEFAULT_CRITERION``: the sensitivity-allocated
        search (a fidelity floor or the user's validation function, no MACs or latency target)
        on calibration data, without ``reconstruct`` / ``recalibrate`` (with a refit its plans
        missed held-out 0.99 on both corpus models tried, where l2's held), with the compensation
        it scores (a removed channel replaced by its calibration mean: ``auto`` or
        ``calibration``; under ``none`` / ``data-free`` its ranking is not the error left)."""
        return (
            self.allocated
            and self.calibration is not None
            and self.macs_target is None
            and not (self.reconstruct or self.recalibrate)
            and self.compensation in ("auto", "calibration")
        )

    @property
    def allocated(self) -> bool:
        """Per-layer ratios come from the sensitivity analysis (a fidelity budget, or a drop
        judged by the user's validation function); a latency budget plans on its own."""
        return (self.fidelity_floor is not None or self.validated_search) and self.latency_target is None
