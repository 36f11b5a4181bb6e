"""Your own validation: a function that scores a candidate model on your data (higher is
better) judges the pruning search, NNCF's ``validation_fn`` convention
(``quantize_with_accuracy_control``) with our allocation and recovery around it.

``validate(candidate) -> float``, where ``candidate`` is a ``Candidate``: the model's file and
an onnxruntime session on it. The search keeps the plans whose value stays within ``max_drop``
(a ``MaxDrop``: absolute, or a percentage of the baseline) of the unpruned model's value (the
*baseline*, computed once); a plan's value is computed at most once (cached by the set of
groups it removes), and every call is counted for the report. The candidate files are
temporary: written for the call, removed after it.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .errors import UsageError, ValidationFunctionFailed, first_line

__all__ = [
    "Candidate",
    "FunctionCaller",
    "MaxDrop",
    "ValidationResult",
    "ValidationStep",
    "Validator",
    "check_spec",
    "load_object",
    "parse_max_drop",
    "resolve_function",
]


class Candidate:
    """A model for your validation function to score.

    - ``path``: its ``.onnx`` file (temporary during the search: removed once your function
      returns; copy it if you want to keep it); None for an OpenVINO model (the int8 IR's
      accuracy control), which only has ``run``;
    - ``session()``: an ``onnxruntime.InferenceSession`` of it on the CPU (made on first use);
    - ``run(feeds)``: its outputs for one dict of inputs (name -> array), as a list in the
      model's output order (``outputs=`` picks some by name);
    - ``input_names`` / ``output_names``.
    """

    def __init__(self, path: str | None, openvino: Any = None) -> None:
        self.path = path
        self._session: Any = None
        self._openvino = openvino  # an OpenVINO CompiledModel (the int8 IR's accuracy control)

    def session(self) -> Any:
        if self._openvino is not None:
            raise TypeError("this candidate is an OpenVINO model (the int8 IR): use candidate.run(feeds)")
        if self._session is None:
            from .runtime import session

            # Through runtime.session like every session of the package: its errors come out
            # typed, FakeQuantize models run as their expansion; optimised, as deployed.
            runner = session(self.path, source=str(self.path), what="the candidate model", optimize=True)
            self._session = runner.inference_session
        return self._session

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if self._openvino is not None:
            result = self._openvino(dict(feeds))
            values = [np.asarray(result[o]) for o in self._openvino.outputs]
            names = self.output_names
            return values if outputs is None else [values[names.index(n)] for n in outputs]
        return self.session().run(None if outputs is None else list(outputs), dict(feeds))

    @property
    def input_names(self) -> list[str]:
        if self._openvino is not None:
            return [i.get_any_name() for i in self._openvino.inputs]
        return [i.name for i in self.session().get_inputs()]

    @property
    def output_names(self) -> list[str]:
        if self._openvino is not None:
            return [o.get_any_name() for o in self._openvino.outputs]
        return [o.name for o in self.session().get_outputs()]

    def __repr__(self) -> str:
        return f"Candidate({self.path!r})"


@dataclass(frozen=True)
class MaxDrop:
    """How far the validated metric may fall below its baseline: ``value`` in the metric's own
    units (absolute), or with ``relative`` a percentage of the baseline's magnitude."""

    value: float
    relative: bool = False

    def allowed(self, baseline: float) -> float:
        """The absolute drop allowed from ``baseline``."""
        return self.value / 100.0 * abs(baseline) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


def parse_max_drop(value: object) -> MaxDrop:
    """A MaxDrop from a number (absolute), ``"D"`` (absolute) or ``"D%"`` (relative)."""
    if isinstance(value, MaxDrop):
        return value
    hint = "expected D (absolute, in the metric's units) or D% (relative to the baseline), e.g. 0.01 or 0.5%"
    relative = False
    if isinstance(value, str):
        text = value.strip()
        relative = text.endswith("%")
        try:
            number = float(text[:-1] if relative else text)
        except ValueError:
            raise UsageError(f"--max-drop {value!r}: {hint}") from None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    else:
        raise UsageError(f"max drop {value!r}: {hint}")
    if not math.isfinite(number) or number < 0 or (relative and number >= 100):
        raise UsageError(f"--max-drop {value!r}: must be >= 0 (and below 100%)")
    return MaxDrop(number, relative)


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _parse_spec(
    spec: str, option: str = "--validate", prefix: str | None = None, error: type[Exception] = ValidationFunctionFailed
) -> tuple[str, str, bool]:
    """(where, name, whether `where` is a file) of ``FILE.py:name`` / ``module:name``; a
    malformed spec or a file that does not exist is refused here, for both the early check and
    the import. ``option`` names the option in messages, ``prefix`` starts them (default the spec)."""
    placeholder = "function" if option == "--validate" else "NAME"
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise error(f"{option} {spec!r}: expected FILE.py:{placeholder} or module:{placeholder}")
    is_file = _is_file(where)
    if is_file and not os.path.isfile(where):
        if prefix is None:
            raise error(f"{spec}: {option} file {where} not found")
        raise error(f"{prefix}: file {where} not found")
    return where, attr, is_file


def check_spec(spec: object) -> None:
    """What can be told of a ``--validate`` spec without running your code, checked before any
    work (a typo would otherwise surface after the calibration and sensitivity runs): its form,
    the file (exists, parses, mentions the function) or the module (can be found)."""
    if not isinstance(spec, str):
        return  # a callable, or a type PruneConfig refuses
    import ast
    import re

    where, attr, is_file = _parse_spec(spec)
    if is_file:
        try:
            with open(where, encoding="utf-8") as f:
                text = f.read()
            ast.parse(text, where)
        except SyntaxError as exc:
            raise ValidationFunctionFailed(
                f"{spec}: importing {where} raised SyntaxError: {exc.msg} (line {exc.lineno})"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationFunctionFailed(f"{spec}: cannot read {where} ({first_line(exc)})") from None
        if not re.search(rf"\b{re.escape(attr.split('.')[0])}\b", text):  # not even mentioned: not defined
            raise ValidationFunctionFailed(f"{spec}: {where} has no function {attr!r}")
        return
    try:
        found = importlib.util.find_spec(where)
    except Exception:  # a parent package that fails to import: resolve_function names the error
        return
    if found is None:
        raise ValidationFunctionFailed(f"{spec}: no module named {where!r} (give FILE.py:function for a file)")


def load_object(
    spec: str,
    option: str = "--validate",
    noun: str = "function",
    error: type[Exception] = ValidationFunctionFailed,
    prefix: str | None = None,
) -> object:
    """What a spec ``FILE.py:name`` (a file, imported on its own) or ``module:name`` (importable)
    names, for the options that load your code (``--validate``, ``--rules``); ``name`` may be
    dotted. Every failure is one ``error`` starting with ``prefix`` (default: the spec) that
    names ``option`` or the file: a malformed spec, a missing file or module, an import that
    raises, a missing name (a ``noun``)."""
    prefix = spec if prefix is None else prefix
    placeholder = "function" if option == "--validate" else "NAME"
    where, attr, is_file = _parse_spec(spec, option, None if prefix == spec else prefix, error)
    if is_file:
        kind = option.lstrip("-").replace("-", "_")
        found = importlib.util.spec_from_file_location(f"_onnxprune_{kind}_{abs(hash(where))}", where)
        if found is None or found.loader is None:  # pragma: no cover - a .py file always has a loader
            raise error(f"{prefix}: cannot import {where}")
        module = importlib.util.module_from_spec(found)
        try:
            found.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            raise error(f"{prefix}: importing {where} raised {type(exc).__name__}: {first_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                raise error(f"{prefix}: no module named {where!r} (give FILE.py:{placeholder} for a file)") from None
            raise error(f"{prefix}: importing {where} raised {type(exc).__name__}: {first_line(exc)}") from None
        except (Exception, SystemExit) as exc:
            raise error(f"{prefix}: importing {where} raised {type(exc).__name__}: {first_line(exc)}") from None
    found_object: Any = module
    for part in attr.split("."):
        found_object = getattr(found_object, part, None)
        if found_object is None:
            raise error(f"{prefix}: {where} has no {noun} {attr!r}")
    return found_object


def resolve_function(spec: Callable[[Candidate], float] | str) -> tuple[Callable[[Candidate], float], str]:
    """The validation function and its name for messages: a callable as it is, or a spec
    ``FILE.py:function`` (a file, imported on its own) or ``module:function`` (importable)."""
    if callable(spec):
        module = getattr(spec, "__module__", None) or "?"
        return spec, f"{module}:{getattr(spec, '__qualname__', type(spec).__name__)}"
    if not isinstance(spec, str):
        raise UsageError(
            f"validate must be a function or 'FILE.py:function' / 'module:function', got {type(spec).__name__}"
        )
    fn = load_object(spec)
    if not callable(fn):
        where, attr, _ = _parse_spec(spec)
        raise ValidationFunctionFailed(f"{spec}: {attr!r} in {where} is not a function ({type(fn).__name__})")
    return fn, spec


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu":
        return float(value.reshape(()).item())
    return None


@dataclass(frozen=True)
class ValidationStep:
    """One plan the search had judged: its groups removed, MACs (x the original's, None when
    unknown), the function's value and whether it stayed within the allowed drop."""

    groups: int
    macs_ratio: float | None
    value: float
    within: bool

    def to_dict(self) -> dict:
        return {"groups": self.groups, "macs_ratio": self.macs_ratio, "value": self.value, "within": self.within}


@dataclass(frozen=True)
class ValidationResult:
    """What the user's function said: its value on the original (baseline) and on the
    delivered model (final), the drop allowed, how many times it ran, and the search's steps
    (empty when another budget chose the plan and the function only measured it)."""

    function: str
    max_drop: str | None
    baseline: float
    threshold: float | None
    final: float
    calls: int
    searched: bool
    steps: tuple[ValidationStep, ...] = ()

    @property
    def drop(self) -> float:
        return self.baseline - self.final

    def to_dict(self) -> dict:
        return {
            "function": self.function,
            "max_drop": self.max_drop,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "final": self.final,
            "drop": self.drop,
            "calls": self.calls,
            "searched": self.searched,
            "steps": [s.to_dict() for s in self.steps],
        }


class FunctionCaller:
    """The user's function called safely: on a model file, a ModelProto (written to a temporary
    file, removed after the call) or an OpenVINO compiled model; every call counted; whatever
    goes wrong is a ValidationFunctionFailed naming the function."""

    def __init__(self, fn: Callable[[Candidate], float], name: str) -> None:
        self.fn, self.name = fn, name
        self.calls = 0

    def model(self, model: onnx.ModelProto | str, what: str) -> float:
        """The function's value on a model (a ModelProto, or the path of a model file)."""
        if isinstance(model, str):
            return self.call(Candidate(model), what)
        from .saving import save_model

        with tempfile.TemporaryDirectory(prefix="onnxprune-validate-") as tmp:
            path = os.path.join(tmp, "candidate.onnx")
            save_model(model, path)
            return self.call(Candidate(path), what)

    def any_model(self, model: Any, what: str) -> float:
        """A ModelProto, a path, or an OpenVINO CompiledModel (what NNCF validates)."""
        if isinstance(model, (onnx.ModelProto, str)):
            return self.model(model, what)
        return self.call(Candidate(None, openvino=model), what)

    def call(self, candidate: Candidate, what: str) -> float:
        self.calls += 1
        try:
            value = self.fn(candidate)
        except KeyboardInterrupt:
            raise
        except (Exception, SystemExit) as exc:
            raise ValidationFunctionFailed(
                f"{self.name}: raised {type(exc).__name__}: {first_line(exc)} (validating {what})"
            ) from None
        number = _as_number(value)
        if number is None:
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ValidationFunctionFailed(
                f"{self.name}: returned {type(value).__name__} {shown}, not a number (validating {what}; "
                "it must return a float, higher is better)"
            )
        if not math.isfinite(number):
            raise ValidationFunctionFailed(f"{self.name}: returned {number}, not a finite number (validating {what})")
        return number


class Validator:
    """The user's function as the judge of plans: each plan (a set of removed groups) is built
    by ``build``, written to a temporary file and scored at most once; ``calls`` counts the
    function's runs (the baseline included)."""

    def __init__(
        self,
        fn: Callable[[Candidate], float],
        name: str,
        original: onnx.ModelProto | str,
        build: Callable[[frozenset[int]], onnx.ModelProto],
        max_drop: MaxDrop | None = None,
    ) -> None:
        self.name, self.max_drop = name, max_drop
        self._caller = FunctionCaller(fn, name)
        self._original, self._build = original, build
        self._cache: dict[frozenset[int], float] = {}
        self.judged: list[tuple[frozenset[int], float]] = []  # the search's plans, in order
        self.macs_ratio: Callable[[frozenset[int]], float | None] = lambda _groups: None  # set by the search

    @property
    def baseline(self) -> float:
        """The function's value on the unpruned model (computed once)."""
        if frozenset() not in self._cache:
            self._cache[frozenset()] = self._caller.model(self._original, "the original model")
        return self._cache[frozenset()]

    @property
    def calls(self) -> int:
        """How many times the function ran."""
        return self._caller.calls

    @property
    def threshold(self) -> float | None:
        """The lowest value a kept plan may have (None without a max drop)."""
        if self.max_drop is None:
            return None
        return self.baseline - self.max_drop.allowed(self.baseline)

    def value(self, groups: Iterable[int], model: Callable[[], onnx.ModelProto] | None = None) -> float:
        """The function's value for the plan removing ``groups`` (``model``: gives that plan's
        model when it is already built); cached."""
        key = frozenset(int(g) for g in groups)
        if not key:
            return self.baseline
        if key not in self._cache:
            built = model() if model is not None else self._build(key)
            self._cache[key] = self._caller.model(built, f"a candidate removing {len(key)} channel groups")
        return self._cache[key]

    def within(self, groups: Iterable[int]) -> bool:
        """The plan keeps the function's value within the allowed drop (the search's judge)."""
        threshold = self.threshold  # the baseline first: a broken function fails on the original
        groups = frozenset(int(g) for g in groups)
        value = self.value(groups)
        self.judged.append((groups, value))
        return threshold is None or value >= threshold

    def result(self, final: float) -> ValidationResult:
        """The report's entry: baseline, the delivered model's value, calls and the search's steps."""
        threshold = self.threshold
        steps = tuple(
            ValidationStep(len(g), self.macs_ratio(g), v, threshold is None or v >= threshold) for g, v in self.judged
        )
        return ValidationResult(
            self.name,
            None if self.max_drop is None else str(self.max_drop),
            self.baseline,
            threshold,
            final,
            self.calls,
            bool(self.judged),
            steps,
        )
