"""PruneConfig's checks: every option's value refused with a UsageError naming it, the options
that cannot go together, and the default criterion's rule, run once as the config is made
(``PruneConfig.__post_init__``; value checks shared with QuantizeConfig are in option_checks)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from .errors import UsageError
from .latency.table import LatencySettings
from .layer_rules import LayerRule
from .option_checks import (
    check_bools,
    check_fraction,
    check_ints,
    check_mapping,
    check_numbers,
    check_option_names,
    check_paths,
    check_preprocess,
    check_regex,
    frozen_shapes,
    patterns,
)

if TYPE_CHECKING:
    from .config import PruneConfig

__all__ = ["BUDGET_DEFAULT_CRITERION", "COMPENSATION_MODES", "DATA_DEFAULT_CRITERION", "check_config"]

COMPENSATION_MODES = ("auto", "none", "data-free", "calibration")
# One rule for an unnamed criterion: a budget means lossy pruning by filter norm, no budget
# means exact removal of provably constant channels.
BUDGET_DEFAULT_CRITERION = "l2"
# With calibration data the fidelity-budgeted search ranks channels by the error each leaves at
# its readers when replaced by its calibration mean (what the default compensation leaves):
# measured on the corpus models (benchmarks/fidelity_real.md, see PruneConfig.data_default).
DATA_DEFAULT_CRITERION = "contribution"


def check_config(config: PruneConfig) -> None:
    """Check ``config``'s options and normalise them in place (frozen: by object.__setattr__):
    shapes, patterns, layer rules, latency settings, metrics, ratios and max_drop in their
    types, the criterion and its reason by the default rule."""
    object.__setattr__(config, "input_shapes", frozen_shapes(config.input_shapes))
    # One pattern given as a string is that pattern, not its characters (as ignored_scope).
    object.__setattr__(config, "exclude", patterns(config.exclude, "exclude"))
    check_numbers(
        config, ("ratio", "macs_target", "tolerance", "min_fidelity", "fidelity_confidence", "latency_target")
    )
    check_ints(config, ("seed", "round_to"), optional=("latency_evaluations",))
    check_bools(config, ("global_ranking", "verify", "reconstruct", "recalibrate"))
    if config.reconstruct_from not in ("original", "pruned"):
        raise UsageError(f"reconstruct from must be 'original' or 'pruned', got {config.reconstruct_from!r}")
    if config.reconstruct_from != "original" and not config.reconstruct:
        raise UsageError(f"--reconstruct-from {config.reconstruct_from} given without --reconstruct")
    check_paths(config, ("calibration", "verification_inputs"))
    if config.preprocess is not None and not isinstance(config.preprocess, str):
        raise UsageError(f"preprocess must be a string such as 'imagenet', got {type(config.preprocess).__name__}")
    check_preprocess(config.calibration, config.preprocess)
    object.__setattr__(config, "layer_rules", _layer_rules(config.layer_rules))
    if isinstance(config.latency, Mapping):  # LatencySettings' fields as a mapping: {"threads": 1}
        check_option_names(LatencySettings, config.latency)
        object.__setattr__(config, "latency", LatencySettings(**config.latency))
    elif not isinstance(config.latency, LatencySettings):
        raise UsageError(f"latency must be a latency.LatencySettings, got {type(config.latency).__name__}")
    check_mapping(config.fidelity_metrics, "fidelity_metrics", "{'*': 'cosine'}")
    for pattern in config.exclude:
        check_regex(pattern, "--exclude")
    if config.max_drop is not None:
        from .user_validation import parse_max_drop

        object.__setattr__(config, "max_drop", parse_max_drop(config.max_drop))
        explicit = config.explicit_budget
        if explicit:
            raise UsageError(
                f"--max-drop is a budget of the pruning search itself: give it or {', '.join(explicit)}, not both"
            )
    if config.validate is not None and not (callable(config.validate) or isinstance(config.validate, str)):
        raise UsageError(
            f"validate must be a function or 'FILE.py:function' / 'module:function', got {type(config.validate).__name__}"
        )
    if config.rules is not None and isinstance(config.rules, (bytes, int, float, Mapping)):
        raise UsageError(
            "rules must be a RuleRegistry, a rule, a list of rules, a function that extends a registry or "
            f"'FILE.py:NAME' / 'module:NAME', got {type(config.rules).__name__}"
        )
    budget = config.budget_options
    if config.criterion is None:
        if budget and config.data_default:
            object.__setattr__(config, "criterion", DATA_DEFAULT_CRITERION)
            object.__setattr__(
                config,
                "criterion_reason",
                f"default: a search judged on calibration data ({', '.join(budget)}) without --criterion and "
                f"without recovery means {DATA_DEFAULT_CRITERION} (at held-out fidelity 0.99 it cut more than "
                f"{BUDGET_DEFAULT_CRITERION} on 6 of 10 real models, less on 1: benchmarks/fidelity_real.md)",
            )
        elif budget:
            object.__setattr__(config, "criterion", BUDGET_DEFAULT_CRITERION)
            object.__setattr__(
                config,
                "criterion_reason",
                f"default: a budget ({', '.join(budget)}) without --criterion means {BUDGET_DEFAULT_CRITERION}",
            )
        else:
            object.__setattr__(config, "criterion", "zero")
            object.__setattr__(config, "criterion_reason", "default: no budget, so only provably constant channels go")
    elif not config.criterion_reason:
        object.__setattr__(config, "criterion_reason", "given")
    if config.criterion == "zero" and budget:
        raise UsageError(
            f"criterion 'zero' removes only provably constant channels and takes no budget ({', '.join(budget)}); "
            f"name a lossy criterion (e.g. --criterion {BUDGET_DEFAULT_CRITERION}) or drop the budget"
        )
    shaping = [
        f
        for f, on in (("--global", config.global_ranking), (f"--round-to {config.round_to}", config.round_to > 1))
        if on
    ]
    if shaping and not budget:  # they shape a budget's cut; without one they were silently ignored
        raise UsageError(
            f"{' and '.join(shaping)} shape{'s' if len(shaping) == 1 else ''} a budget's cut, and no budget is given: "
            "give one (--ratio, --macs-target, --min-fidelity, --latency-target, --max-drop/--validate, a --config "
            "sparsity) or drop it"
        )
    if config.tolerance is not None and not (0.0 < config.tolerance < 1.0):
        raise UsageError(f"tolerance must be in (0, 1), got {config.tolerance}")
    check_fraction(config.ratio, "--ratio", "the share of each layer's output channels removed", closed=(True, False))
    check_fraction(
        config.macs_target, "--macs-target", "the MACs kept, as a share of the original's", closed=(False, True)
    )
    if config.ratio is not None and config.min_fidelity is not None:
        # The fidelity floor allocates per-layer ratios itself; the ratio was silently ignored.
        raise UsageError(
            f"--ratio {config.ratio:g} and --min-fidelity {config.min_fidelity:g} are two budgets for the same cut: give one"
        )
    if config.ratio is not None and config.macs_target is not None:
        # Both decide how much goes; the MACs target would win and the ratio be ignored.
        raise UsageError(
            f"--ratio {config.ratio:g} and --macs-target {config.macs_target:g} are two budgets for the same cut: give one"
        )
    if (
        isinstance(config.calibration_limit, bool)
        or not isinstance(config.calibration_limit, int)
        or config.calibration_limit < 1
    ):
        raise UsageError(f"calibration limit must be a positive integer, got {config.calibration_limit!r}")
    if config.round_to < 1:
        raise UsageError(f"round-to must be a positive integer, got {config.round_to}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise UsageError(
            f"seed must be a non-negative integer, got {config.seed!r}"
        )  # numpy's generators take no other
    object.__setattr__(config, "fidelity_metrics", MappingProxyType(dict(config.fidelity_metrics)))
    from .fidelity_metrics import check_metrics

    check_metrics(config.fidelity_metrics)
    if config.sensitivity_ratios is not None:
        object.__setattr__(config, "sensitivity_ratios", _ratios(config.sensitivity_ratios))
    check_fraction(config.min_fidelity, "--min-fidelity", "the fidelity kept (1: the original's)", closed=(False, True))
    check_fraction(
        config.fidelity_confidence, "--fidelity-confidence", "a confidence level", (0.5, 1.0), closed=(True, False)
    )
    _check_fidelity_batch(config)
    ratios = config.ratios
    if any(not (0.0 < r < 1.0) for r in ratios) or list(ratios) != sorted(ratios):
        shares = [r / 100 for r in ratios]
        percent = all(0.0 < r < 1.0 for r in shares) and shares == sorted(shares) and any(r >= 1.0 for r in ratios)
        hint = f": did you mean {','.join(f'{r:g}' for r in shares)}?" if percent else ""
        raise UsageError(
            f"--ratios {','.join(f'{r:g}' for r in ratios)}: the shares of each unit removed, increasing fractions "
            f"in (0, 1){hint}"
        )
    if (config.min_fidelity is not None or config.reconstruct or config.recalibrate) and not config.calibration:
        given = [
            flag
            for flag, on in (
                ("--min-fidelity", config.min_fidelity is not None),
                ("--reconstruct", config.reconstruct),
                ("--recalibrate", config.recalibrate),
            )
            if on
        ]
        raise UsageError(
            f"{' and '.join(given)} given without --calibration: --min-fidelity, --reconstruct and --recalibrate "
            "need calibration inputs (--calibration C.npz keyed by input name, or a folder of images)"
        )
    floor = config.fidelity_floor
    if config.min_fidelity is None and floor is not None and floor <= 0.0:
        raise UsageError(
            f"--max-drop {config.max_drop}: fidelity is at most 1.0 (the original against itself), so its drop must be below 1"
        )
    if config.pruning_drop is not None and not config.calibration:
        judge = "your --validate function" if config.validate is not None else "the fidelity"
        raise UsageError(
            f"--max-drop/--validate need calibration inputs (--calibration): the search orders its moves by the "
            f"sensitivity measured on them, and {judge} judges them"
        )
    if config.latency_target is not None:
        _check_latency_target(config)
    if config.compensation not in COMPENSATION_MODES:
        raise UsageError(f"compensation must be one of {', '.join(COMPENSATION_MODES)}, got {config.compensation!r}")
    if config.compensation == "calibration" and not config.calibration:
        raise UsageError("compensation 'calibration' needs calibration data (--calibration FILE.npz)")


def _check_fidelity_batch(config: PruneConfig) -> None:
    """--fidelity-batch N: a whole number of inputs, and a search it can judge (the fidelity
    floor's allocation search, which compares its value with the floor)."""
    n = config.fidelity_batch
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise UsageError(f"--fidelity-batch must be a whole number of inputs >= 1, got {n!r}")
    object.__setattr__(config, "fidelity_batch", int(n))
    others = [
        flag
        for flag, on in (
            ("--macs-target", config.macs_target is not None),
            ("--latency-target", config.latency_target is not None),
            ("--validate", config.validate is not None),
        )
        if on
    ]
    if config.fidelity_floor is None or others:
        raise UsageError(
            "--fidelity-batch judges the plans of the fidelity floor's search: give --min-fidelity F (or --max-drop "
            "without --validate)" + (f", not {', '.join(others)}" if others else "")
        )


def _check_latency_target(config: PruneConfig) -> None:
    """Refuse what cannot go with a latency budget: another budget, a bad fraction."""
    check_fraction(config.latency_target, "--latency-target", "the latency kept, as a share of the original's")
    if config.latency_evaluations is not None and config.latency_evaluations < 0:
        raise UsageError(f"--latency-evaluations must be >= 0, got {config.latency_evaluations}")
    seconds = config.latency_evaluation_seconds
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0):
        raise UsageError(f"--latency-evaluation-seconds must be a positive number of seconds, got {seconds!r}")
    keeps = ("--latency-target", "--min-fidelity", "--max-drop", "--validate")  # the answers it keeps
    others = [b for b in config.budget_options if b not in keeps]
    if others:
        raise UsageError(
            f"--latency-target is a budget of its own: it cannot go with {', '.join(others)} "
            "(use --min-fidelity, --max-drop or --validate to keep the answers, --exclude to protect layers)"
        )
    if config.global_ranking:
        raise UsageError("--latency-target ranks all units together already: drop --global")


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
