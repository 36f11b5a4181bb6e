"""One frozen options object shared by the Python API and the CLI (its value checks live in
option_checks, the config file's per-layer rules in layer_rules; both re-exported here)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .latency.table import LatencySettings
from .layer_rules import LayerRule, load_layer_rules
from .option_checks import (
    check_bools,
    check_ints,
    check_mapping,
    check_numbers,
    check_option_names,
    check_paths,
    check_regex,
    frozen_shapes,
    parse_input_shape,
    patterns,
)

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

COMPENSATION_MODES = ("auto", "none", "data-free", "calibration")
# One rule for an unnamed criterion: a budget means lossy pruning by filter norm, no budget
# means exact removal of provably constant channels.
BUDGET_DEFAULT_CRITERION = "l2"
# With calibration data the fidelity-budgeted search ranks channels by the error each leaves at
# its readers when replaced by its calibration mean (what the default compensation leaves):
# measured on the corpus models (benchmarks/fidelity_real.md, see PruneConfig.data_default).
DATA_DEFAULT_CRITERION = "contribution"
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
        with reconstruct / recalibrate (each evaluation refits the model) one more per unit (each
        unit's first move measured on the recovered model) and at most
        latency.interactions.RECOVERED_SECONDS (120 s) of them; a number: that many, no time
        bound; 0: each unit's loss measured alone orders them. With reconstruct / recalibrate the
        fidelity floor's evaluations draw on the same budget (latency.evaluations).
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
    rules: object = None
    criterion_reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shapes", frozen_shapes(self.input_shapes))
        # One pattern given as a string is that pattern, not its characters (as ignored_scope).
        object.__setattr__(self, "exclude", patterns(self.exclude, "exclude"))
        check_numbers(
            self, ("ratio", "macs_target", "tolerance", "min_fidelity", "fidelity_confidence", "latency_target")
        )
        check_ints(self, ("seed", "round_to"), optional=("latency_evaluations",))
        check_bools(self, ("global_ranking", "verify", "reconstruct", "recalibrate"))
        if self.reconstruct_from not in ("original", "pruned"):
            raise UsageError(f"reconstruct from must be 'original' or 'pruned', got {self.reconstruct_from!r}")
        if self.reconstruct_from != "original" and not self.reconstruct:
            raise UsageError(f"--reconstruct-from {self.reconstruct_from} given without --reconstruct")
        check_paths(self, ("calibration", "verification_inputs"))
        if self.preprocess is not None and not isinstance(self.preprocess, str):
            raise UsageError(f"preprocess must be a string such as 'imagenet', got {type(self.preprocess).__name__}")
        object.__setattr__(self, "layer_rules", _layer_rules(self.layer_rules))
        if isinstance(self.latency, Mapping):  # LatencySettings' fields as a mapping: {"threads": 1}
            check_option_names(LatencySettings, self.latency)
            object.__setattr__(self, "latency", LatencySettings(**self.latency))
        elif not isinstance(self.latency, LatencySettings):
            raise UsageError(f"latency must be a latency.LatencySettings, got {type(self.latency).__name__}")
        check_mapping(self.fidelity_metrics, "fidelity_metrics", "{'*': 'cosine'}")
        for pattern in self.exclude:
            check_regex(pattern, "--exclude")
        if self.max_drop is not None:
            from .user_validation import parse_max_drop

            object.__setattr__(self, "max_drop", parse_max_drop(self.max_drop))
            explicit = self.explicit_budget
            if explicit:
                raise UsageError(
                    f"--max-drop is a budget of the pruning search itself: give it or {', '.join(explicit)}, not both"
                )
        if self.validate is not None and not (callable(self.validate) or isinstance(self.validate, str)):
            raise UsageError(
                f"validate must be a function or 'FILE.py:function' / 'module:function', got {type(self.validate).__name__}"
            )
        if self.rules is not None and isinstance(self.rules, (bytes, int, float, Mapping)):
            raise UsageError(
                "rules must be a RuleRegistry, a rule, a list of rules, a function that extends a registry or "
                f"'FILE.py:NAME' / 'module:NAME', got {type(self.rules).__name__}"
            )
        budget = self.budget_options
        if self.criterion is None:
            if budget and self.data_default:
                object.__setattr__(self, "criterion", DATA_DEFAULT_CRITERION)
                object.__setattr__(
                    self,
                    "criterion_reason",
                    f"default: a search judged on calibration data ({', '.join(budget)}) without --criterion and "
                    f"without recovery means {DATA_DEFAULT_CRITERION} (at held-out fidelity 0.99 it cut more than "
                    f"{BUDGET_DEFAULT_CRITERION} on 6 of 10 real models, less on 1: benchmarks/fidelity_real.md)",
                )
            elif budget:
                object.__setattr__(self, "criterion", BUDGET_DEFAULT_CRITERION)
                object.__setattr__(
                    self,
                    "criterion_reason",
                    f"default: a budget ({', '.join(budget)}) without --criterion means {BUDGET_DEFAULT_CRITERION}",
                )
            else:
                object.__setattr__(self, "criterion", "zero")
                object.__setattr__(
                    self, "criterion_reason", "default: no budget, so only provably constant channels go"
                )
        elif not self.criterion_reason:
            object.__setattr__(self, "criterion_reason", "given")
        if self.criterion == "zero" and budget:
            raise UsageError(
                f"criterion 'zero' removes only provably constant channels and takes no budget ({', '.join(budget)}); "
                f"name a lossy criterion (e.g. --criterion {BUDGET_DEFAULT_CRITERION}) or drop the budget"
            )
        shaping = [
            f for f, on in (("--global", self.global_ranking), (f"--round-to {self.round_to}", self.round_to > 1)) if on
        ]
        if shaping and not budget:  # they shape a budget's cut; without one they were silently ignored
            raise UsageError(
                f"{' and '.join(shaping)} shape{'s' if len(shaping) == 1 else ''} a budget's cut, and no budget is given: "
                "give one (--ratio, --macs-target, --min-fidelity, --latency-target, --max-drop/--validate, a --config "
                "sparsity) or drop it"
            )
        if self.tolerance is not None and not (0.0 < self.tolerance < 1.0):
            raise UsageError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.ratio is not None and not (0.0 <= self.ratio < 1.0):
            raise UsageError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.macs_target is not None and not (0.0 < self.macs_target <= 1.0):
            raise UsageError(f"macs target must be in (0, 1], got {self.macs_target}")
        if self.ratio is not None and self.min_fidelity is not None:
            # The fidelity floor allocates per-layer ratios itself; the ratio was silently ignored.
            raise UsageError(
                f"--ratio {self.ratio:g} and --min-fidelity {self.min_fidelity:g} are two budgets for the same cut: give one"
            )
        if self.ratio is not None and self.macs_target is not None:
            # Both decide how much goes; the MACs target would win and the ratio be ignored.
            raise UsageError(
                f"--ratio {self.ratio:g} and --macs-target {self.macs_target:g} are two budgets for the same cut: give one"
            )
        if (
            isinstance(self.calibration_limit, bool)
            or not isinstance(self.calibration_limit, int)
            or self.calibration_limit < 1
        ):
            raise UsageError(f"calibration limit must be a positive integer, got {self.calibration_limit!r}")
        if self.round_to < 1:
            raise UsageError(f"round-to must be a positive integer, got {self.round_to}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(
                f"seed must be a non-negative integer, got {self.seed!r}"
            )  # numpy's generators take no other
        object.__setattr__(self, "fidelity_metrics", MappingProxyType(dict(self.fidelity_metrics)))
        from .fidelity_metrics import check_metrics

        check_metrics(self.fidelity_metrics)
        if self.sensitivity_ratios is not None:
            object.__setattr__(self, "sensitivity_ratios", _ratios(self.sensitivity_ratios))
        if self.min_fidelity is not None and not (0.0 < self.min_fidelity <= 1.0):
            raise UsageError(f"min fidelity must be in (0, 1], got {self.min_fidelity}")
        if not (0.5 <= self.fidelity_confidence < 1.0):
            raise UsageError(f"fidelity confidence must be in [0.5, 1), got {self.fidelity_confidence}")
        self._check_fidelity_batch()
        ratios = self.ratios
        if any(not (0.0 < r < 1.0) for r in ratios) or list(ratios) != sorted(ratios):
            raise UsageError(f"sensitivity ratios must be increasing, in (0, 1): {ratios}")
        if (self.min_fidelity is not None or self.reconstruct or self.recalibrate) and not self.calibration:
            given = [
                flag
                for flag, on in (
                    ("--min-fidelity", self.min_fidelity is not None),
                    ("--reconstruct", self.reconstruct),
                    ("--recalibrate", self.recalibrate),
                )
                if on
            ]
            raise UsageError(
                f"{' and '.join(given)} given without --calibration: --min-fidelity, --reconstruct and --recalibrate "
                "need calibration inputs (--calibration C.npz keyed by input name, or a folder of images)"
            )
        floor = self.fidelity_floor
        if self.min_fidelity is None and floor is not None and floor <= 0.0:
            raise UsageError(
                f"--max-drop {self.max_drop}: fidelity is at most 1.0 (the original against itself), so its drop must be below 1"
            )
        if self.pruning_drop is not None and not self.calibration:
            judge = "your --validate function" if self.validate is not None else "the fidelity"
            raise UsageError(
                f"--max-drop/--validate need calibration inputs (--calibration): the search orders its moves by the "
                f"sensitivity measured on them, and {judge} judges them"
            )
        if self.latency_target is not None:
            self._check_latency_target()
        if self.compensation not in COMPENSATION_MODES:
            raise UsageError(f"compensation must be one of {', '.join(COMPENSATION_MODES)}, got {self.compensation!r}")
        if self.compensation == "calibration" and not self.calibration:
            raise UsageError("compensation 'calibration' needs calibration data (--calibration FILE.npz)")

    def _check_fidelity_batch(self) -> None:
        """--fidelity-batch N: a whole number of inputs, and a search it can judge (the fidelity
        floor's allocation search, which compares its value with the floor)."""
        n = self.fidelity_batch
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise UsageError(f"--fidelity-batch must be a whole number of inputs >= 1, got {n!r}")
        object.__setattr__(self, "fidelity_batch", int(n))
        others = [
            flag
            for flag, on in (
                ("--macs-target", self.macs_target is not None),
                ("--latency-target", self.latency_target is not None),
                ("--validate", self.validate is not None),
            )
            if on
        ]
        if self.fidelity_floor is None or others:
            raise UsageError(
                "--fidelity-batch judges the plans of the fidelity floor's search: give --min-fidelity F (or --max-drop "
                "without --validate)" + (f", not {', '.join(others)}" if others else "")
            )

    def _check_latency_target(self) -> None:
        """Refuse what cannot go with a latency budget: another budget, a bad fraction."""
        if not (0.0 < self.latency_target < 1.0):  # type: ignore[operator]
            raise UsageError(f"latency target must be in (0, 1), got {self.latency_target}")
        if self.latency_evaluations is not None and self.latency_evaluations < 0:
            raise UsageError(f"--latency-evaluations must be >= 0, got {self.latency_evaluations}")
        keeps = ("--latency-target", "--min-fidelity", "--max-drop", "--validate")  # the answers it keeps
        others = [b for b in self.budget_options if b not in keeps]
        if others:
            raise UsageError(
                f"--latency-target is a budget of its own: it cannot go with {', '.join(others)} "
                "(use --min-fidelity, --max-drop or --validate to keep the answers, --exclude to protect layers)"
            )
        if self.global_ranking:
            raise UsageError("--latency-target ranks all units together already: drop --global")

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


def _layer_rules(rules: object) -> tuple[LayerRule, ...]:
    """``layer_rules`` as LayerRules: a config file's entries (mappings) read as the file's are."""
    if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, Iterable):
        raise UsageError(
            f"layer_rules must be a list of LayerRule (or of config entries such as {{'op_types': ['Conv'], "
            f"'sparsity': 0.3}}), got {type(rules).__name__}; a config file: load_layer_rules(path)"
        )
    out = []
    for i, rule in enumerate(rules):
        if isinstance(rule, Mapping):
            rule = LayerRule.from_dict(rule, f"layer_rules entry {i}")
        elif not isinstance(rule, LayerRule):
            raise UsageError(f"layer_rules entry {i} must be a LayerRule or a mapping, got {type(rule).__name__}")
        out.append(rule)
    return tuple(out)


def _ratios(ratios: object) -> tuple[float, ...]:
    """``sensitivity_ratios`` as a tuple of floats; a string ("0.1,0.2") or a non-number is refused."""
    items = tuple(ratios) if isinstance(ratios, Iterable) and not isinstance(ratios, (str, bytes)) else None
    if items is None or any(isinstance(r, bool) or not isinstance(r, numbers.Real) for r in items):
        raise UsageError(f"sensitivity_ratios must be a sequence of numbers such as (0.1, 0.25, 0.5), got {ratios!r}")
    return tuple(float(r) for r in items)
