"""Checks of option values shared by the options objects (PruneConfig, QuantizeConfig) and the
command line: each refuses a wrong value with a UsageError naming the option, before a
comparison deep inside fails with Python's TypeError."""

from __future__ import annotations

import difflib
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from types import MappingProxyType

from .errors import UsageError

__all__ = [
    "check_bools",
    "check_exclusions_apply",
    "check_fraction",
    "check_ints",
    "check_mapping",
    "check_numbers",
    "check_option_names",
    "check_paths",
    "check_plan_options",
    "check_preprocess",
    "check_regex",
    "frozen_shapes",
    "parse_input_shape",
    "patterns",
    "percent_fraction",
    "unknown_criterion",
]


def check_regex(pattern: str, what: str) -> None:
    """Refuse a pattern that is not a regular expression (a usage error naming the option)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{what} {pattern!r} is not a valid regular expression ({exc})") from None


def frozen_shapes(shapes: Mapping[str, tuple[int, ...]] | None) -> Mapping[str, tuple[int, ...]]:
    check_mapping(shapes, "input_shapes", "{'input': (1, 3, 224, 224)}")
    frozen = {}
    for name, dims in (shapes or {}).items():
        # A string of digits would iterate as characters ("1,3" -> 1, ',' ...): only a sequence of ints.
        if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__") or not all(_is_int(d) for d in dims):
            raise UsageError(
                f"input shape of {name!r} must be a sequence of integers, e.g. (1, 3, 224, 224); got {dims!r}"
            )
        if any(d <= 0 for d in dims):  # as the CLI's --input-shape: a static shape has no -1 or 0
            raise UsageError(f"input shape of {name!r}: dimensions must be positive, got {tuple(dims)!r}")
        frozen[name] = tuple(int(d) for d in dims)
    return MappingProxyType(frozen)


def check_mapping(value: object, name: str, example: str) -> None:
    """Refuse a value that is not a mapping (None is no mapping given), naming the option: a
    string would fail deep inside as "'str' object has no attribute 'items'"."""
    if value is not None and not isinstance(value, Mapping):
        raise UsageError(f"{name} must be a mapping, e.g. {example}; got {type(value).__name__} {value!r}")


def patterns(value: object, name: str, kind: str = "a regular expression") -> tuple[str, ...]:
    """One regular expression or a sequence of them, as a tuple: a string is one pattern (not its
    characters), anything else that is not a sequence of strings is a UsageError naming ``name``."""
    if isinstance(value, str):
        return (value,)
    items = tuple(value) if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)) else None
    bad = value if items is None else next((v for v in items if not isinstance(v, str)), None)
    if items is None or bad is not None:
        raise UsageError(f"{name} must be {kind} or a list of them, got {type(bad).__name__} {bad!r}")
    return items


def check_bools(config: object, names: tuple[str, ...]) -> None:
    """Refuse anything but True or False for a switch: verify="no" is a non-empty string, so
    it was true (verification ran)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise UsageError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_paths(config: object, names: tuple[str, ...]) -> None:
    """Refuse a value that is not a path (str or os.PathLike) for a file option, naming it."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__} {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_ints(config: object, names: tuple[str, ...], *, optional: tuple[str, ...] = ()) -> None:
    """Refuse a non-integer for an integer option, naming it (see check_numbers); the options in
    ``optional`` may also be None."""
    for name in (*names, *optional):
        value = getattr(config, name)
        if value is None and name in optional:
            continue
        if not _is_int(value):
            raise UsageError(f"{name} must be an integer, got {type(value).__name__} {value!r}")


def check_numbers(config: object, names: tuple[str, ...]) -> None:
    """Refuse a non-number for a numeric option ("0.5" from a YAML file or a form) with a
    UsageError naming it, before a comparison deep inside fails with a TypeError; a percentage
    ("50%") gets the fraction to give."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            share = percent_fraction(value)
            hint = f" (a fraction, not a percentage: did you mean {share:g}?)" if share is not None else ""
            raise UsageError(f"{name} must be a number, got {type(value).__name__} {value!r}{hint}")


def percent_fraction(value: object) -> float | None:
    """The fraction a percentage written as text stands for ('50%' -> 0.5), else None."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else None
    except ValueError:
        return None


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _inside(value: float, low: float, high: float, low_in: bool, high_in: bool) -> bool:
    return (low <= value if low_in else low < value) and (value <= high if high_in else value < high)


def check_fraction(
    value: float | None,
    flag: str,
    what: str,
    bounds: tuple[float, float] = (0.0, 1.0),
    closed: tuple[bool, bool] = (False, False),
) -> None:
    """Refuse ``value`` outside ``bounds`` (``closed``: whether each end is allowed) with a
    UsageError naming ``flag`` (rendered as the API's name for library callers) and saying what
    the fraction is of; a percentage given as a number (--ratio 50) gets the fraction to give
    (did you mean 0.5?). Every fraction option is checked by this one function, so all speak
    the same way."""
    if value is None:
        return
    if _inside(value, *bounds, *closed):
        return
    interval = _interval(*bounds, *closed)
    hint = ""
    # 2 may mean "twice as fast" as well as 2%: only a value of 10 or more is likely a percentage
    if value >= 10 and _inside(value / 100, *bounds, *closed):
        hint = f": did you mean {value / 100:g} ({value:g}%)?"
    raise UsageError(f"{flag} {value:g}: {what}, a fraction in {interval}{hint}")


# A criterion as people write it elsewhere: "L2", "l2-norm", "L1Norm", "bn_gamma".
_CRITERION_NOISE = re.compile(r"[\s_\-]+|norm$")


def unknown_criterion(name: object, names: Iterable[str]) -> UsageError:
    """The error for a criterion that is not registered, with the registered name it most
    likely means (did you mean 'l2'?). Names are matched exactly, never case-folded: one
    spelling in plans, reports and config files, and a user's registry may hold names that
    differ only in case."""
    known = list(names)
    hint = ""
    if isinstance(name, str):

        def key(n: str) -> str:
            return _CRITERION_NOISE.sub("", n.lower())

        same = [n for n in known if key(n) == key(name)]
        close = same or difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.7)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    return UsageError(f"unknown criterion {name!r}{hint}; choose from {', '.join(known)}")


def check_option_names(config_type: type, options: Mapping[str, object]) -> None:
    """Refuse keyword options that are not fields of ``config_type`` (a typo would otherwise be
    Python's TypeError from the dataclass, naming no valid option)."""
    known = {f.name for f in fields(config_type) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        close = [m for name in unknown for m in difflib.get_close_matches(name, known, n=1)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise UsageError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{hint}: "
            f"the options are the fields of {config_type.__name__}"
        )


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME:d0,d1,...`` (the CLI's --input-shape) into (name, dims)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise UsageError(f"--input-shape {text!r}: expected NAME:d0,d1,... e.g. input:1,3,224,224")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: dimensions must be integers") from None
    if any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape {text!r}: dimensions must be positive")
    return name, shape


def check_preprocess(calibration: object, preprocess: str | None) -> None:
    """UsageError for a preprocessing that cannot apply, or a folder of images without one: a
    folder was read with x/255, RGB, no mean or std without a word (wrong for a model trained on
    ImageNet-normalised or BGR 0..255 inputs, and the plan built on those inputs), and
    --preprocess beside an .npz (arrays used as they are), or without --calibration, was dropped."""
    if preprocess is not None and not isinstance(preprocess, str):
        return  # the config's type check names it
    given = bool(preprocess and preprocess.strip())
    if calibration is None:
        if given:
            raise UsageError(
                f"--preprocess {preprocess} given without --calibration: it says how a folder of calibration images "
                "becomes the model's input; give --calibration FOLDER or drop it"
            )
        return
    path = os.fspath(calibration)  # type: ignore[call-overload]
    if given and not os.path.isdir(path) and path.lower().endswith(".npz"):
        raise UsageError(
            f"--preprocess {preprocess}: {path} is an .npz of input arrays, used as they are; a preprocessing "
            "applies only to a folder of images: drop it"
        )
    if not given and os.path.isdir(path):
        raise UsageError(
            f"{path}: a folder of images needs --preprocess, how an image becomes the model's input (as in its "
            "training): e.g. imagenet (x/255, then ImageNet mean/std, RGB, NCHW), scale=1/255 (x/255 alone), raw "
            "(0..255), or keys size=HxW,scale=S,mean=a/b/c,std=a/b/c,order=RGB|BGR,layout=NCHW|NHWC"
        )


def check_plan_options(config: object, plan_criterion: str) -> None:
    """UsageError when a given plan (--plan, ``pruning_plan=``) comes with options only planning
    reads: the plan says which channels go, and a --ratio, --criterion of another name, --exclude
    ... beside it was dropped without a word (the header even said 'criterion: l2 (default: a
    budget (--ratio) without --criterion means l2)' of a run that applied the plan)."""
    given = [b for b in config.budget_options if b != "--validate"]  # type: ignore[attr-defined]
    if config.criterion_reason == "given" and config.criterion != plan_criterion:  # type: ignore[attr-defined]
        given.insert(0, f"--criterion {config.criterion}")  # type: ignore[attr-defined]
    given += [
        flag
        for flag, on in (
            ("--global", config.global_ranking),  # type: ignore[attr-defined]
            ("--round-to", config.round_to != 1),  # type: ignore[attr-defined]
            ("--exclude", bool(config.exclude)),  # type: ignore[attr-defined]
            # its exclusions (a sparsity is a budget, named above) were dropped the same way
            ("--config", bool(config.layer_rules) and not config.explicit_budget),  # type: ignore[attr-defined]
        )
        if on
    ]
    if given:
        made = f" (it was made with --criterion {plan_criterion})" if given[0].startswith("--criterion") else ""
        raise UsageError(
            f"{', '.join(given)} cannot go with --plan: a given plan is applied as it is{made}; "
            f"drop {'them' if len(given) > 1 else 'it'}, or plan anew without --plan"
        )


def check_exclusions_apply(config: object) -> None:
    """UsageError when exclusions come with the zero criterion: exact removal takes every
    provably constant channel and never read them (prune --exclude Conv_4 removed Conv_4's zero
    filters, exit 0, not a word). The same for a --config file's entries (``exclude: true``, or
    a sparsity of 0, the entries a run without a budget can have): ignored the same way, they
    are refused the same way, by the API (``exclude=``, ``layer_rules=``) and the CLI."""
    if config.lossy:  # type: ignore[attr-defined]
        return
    given = [f"--exclude {p!r}" for p in config.exclude]  # type: ignore[attr-defined]
    given += [
        f"{rule.named(i)} ({'exclude: true' if rule.exclude else f'sparsity {rule.sparsity:g}'})"
        for i, rule in enumerate(config.layer_rules)  # type: ignore[attr-defined]
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)}: exclusions protect layers from a budget's cut, and criterion 'zero' has none: it "
            "removes only provably constant channels (exact, the outputs unchanged) and would ignore them; give a "
            "budget (e.g. --ratio) or drop the exclusions"
        )
