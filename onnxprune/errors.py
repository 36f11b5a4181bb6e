"""Typed errors. The library raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BackendMissing",
    "InputsNotFound",
    "InterruptedAfterWriting",
    "LeftoverWarning",
    "LoadError",
    "Message",
    "OnnxPruneError",
    "UnsupportedModel",
    "UsageError",
    "ValidationFunctionFailed",
    "VerificationFailed",
    "WriteError",
    "api_words",
    "backend_import_error",
    "cli_text",
    "first_line",
    "in_words",
    "openvino_message",
]


# The option each command-line flag in a message stands for, as the Python API names it. A
# message is written once, in the command line's words; ``str(error)`` (what a library caller
# sees) names the API's options instead, and the CLI prints ``error.cli_text``: prune(...,
# input_shapes=...) said "--input-shape names 'x'", a flag the caller never gave.
API_NAMES = {
    "--calibration": "calibration",
    "--calibration-limit": "calibration_limit",
    "--compensation": "compensation",
    "--config": "layer_rules",
    "--criterion": "criterion",
    "--exclude": "exclude",
    "--external-data": "external_data",
    "--fidelity-batch": "fidelity_batch",
    "--fidelity-confidence": "fidelity_confidence",
    "--fidelity-metric": "fidelity_metrics",
    "--global": "global_ranking",
    "--ignored-scope": "ignored_scope",
    "--input-shape": "input_shapes",
    "--inputs": "verification_inputs",
    "--latency-evaluation-seconds": "latency_evaluation_seconds",
    "--latency-evaluations": "latency_evaluations",
    "--latency-target": "latency_target",
    "--macs-target": "macs_target",
    "--max-drop": "max_drop",
    "--min-fidelity": "min_fidelity",
    "--no-fast-bias-correction": "fast_bias_correction=False",
    "--no-verify": "verify=False",
    "--plan": "pruning_plan",
    "--preprocess": "preprocess",
    "--preset": "preset",
    "--ratio": "ratio",
    "--ratios": "sensitivity_ratios",
    "--recalibrate": "recalibrate",
    "--reconstruct": "reconstruct",
    "--reconstruct-from": "reconstruct_from",
    "--round-to": "round_to",
    "--rules": "rules",
    "--seed": "seed",
    "--subset-size": "subset_size",
    "--tolerance": "tolerance",
    "--validate": "validate",
    # the latency budget's deployment (latency=LatencySettings(...))
    "--backend": "latency.backend",
    "--batch": "latency.batch",
    "--hint": "latency.hint",
    "--precision": "latency.precision",
    "--threads": "latency.threads",
}
# Where QuantizeConfig names a flag otherwise than PruneConfig (its --inputs are held-out
# samples for the int8 model's fidelity, not verification's).
QUANTIZE_NAMES = {"--inputs": "evaluation_inputs"}
# A flag as a word of its own: not inside a path ('/tmp/--x') or a longer word.
_FLAG = re.compile(r"(?<![\w/.\\-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w-])")


# "--input-shape x:1,3,d2,d3" (a shape to give) in the API's form: input_shapes={'x': (1, 3, d2, d3)}
_SHAPE = re.compile(r"(?<![\w/.\\-])--input-shape ([^\s:'\"]+(?::[^\s:'\"]+)*):([0-9a-z?]+(?:,[0-9a-z?]+)*)(?![\w:])")


def _api_shape(m: re.Match[str]) -> str:
    dims = m.group(2).split(",")
    return f"input_shapes={{{m.group(1)!r}: ({', '.join(dims)}{',' if len(dims) == 1 else ''})}}"


def api_words(text: str, names: Mapping[str, str] | None = None) -> str:
    """``text`` (a message in the command line's words) with each flag that is an option of
    the Python API named as the API names it; flags of the command line alone stay. ``names``:
    flags another options object names otherwise (quantize's --inputs is evaluation_inputs)."""
    table = API_NAMES if names is None else {**API_NAMES, **names}
    text = _SHAPE.sub(_api_shape, text)
    return _FLAG.sub(lambda m: table.get(m.group(0), m.group(0)), text)


def cli_text(exc: BaseException | str) -> str:
    """An error's or a Message's text as the command line shows it: its flags (their
    ``cli_text``), else its own text."""
    return exc.cli_text if isinstance(exc, (OnnxPruneError, Message)) else str(exc)


class Message(str):
    """A text of a result (a report's note, the reason for its criterion, ...) written once, in
    the command line's words, and rendered for its reader as errors are: its value (what
    ``print``, ``==`` and ``json`` see) names the Python API's options, ``cli_text`` holds the
    command line's flags, as the CLI shows it. A note said "give --inputs or --calibration" to
    a caller of prune(...), who has neither flag."""

    cli_text: str
    names: Mapping[str, str] | None

    def __new__(cls, text: str, names: Mapping[str, str] | None = None) -> Message:
        source = cli_text(text)  # a Message given again keeps its command-line words
        self = super().__new__(cls, api_words(source, names))
        self.cli_text, self.names = source, names
        return self

    def __reduce__(self) -> tuple[type[Message], tuple[str, Mapping[str, str] | None]]:
        return type(self), (self.cli_text, self.names)


WORDS = ("api", "cli")


def in_words(data: Any, words: str, names: Mapping[str, str] | None = None) -> Any:
    """``data`` (a result's ``to_dict()``: dicts, lists, strings, numbers) with every text in
    ``words``: 'api' names the Python API's options (``names`` as in api_words), 'cli' the
    command line's flags; plain ``str`` throughout."""
    if words not in WORDS:
        raise UsageError(f"words must be 'api' (the Python API's option names) or 'cli' (its flags), got {words!r}")

    def render(x: Any) -> Any:
        if isinstance(x, str):
            source = cli_text(x)
            return source if words == "cli" else api_words(source, names)
        if isinstance(x, Mapping):
            return {k: render(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [render(v) for v in x]
        return x

    return render(data)


class OnnxPruneError(Exception):
    """Base class of every error onnxprune raises on purpose. Its text names the Python API's
    options (``input_shapes``); ``cli_text`` is the same message with the command line's flags
    (``--input-shape``), as the CLI prints it."""

    exit_code = 2

    @property
    def cli_text(self) -> str:
        text = getattr(self, "text", None)  # the errors that keep their own text (WriteError, ...)
        return text if isinstance(text, str) else Exception.__str__(self)

    def __str__(self) -> str:
        return api_words(self.cli_text)


class LoadError(OnnxPruneError):
    """The model file could not be read or is not a valid ONNX model."""


class UsageError(OnnxPruneError):
    """An option or argument is invalid (bad --input-shape, output equal to input, ...)."""


class UnsupportedModel(OnnxPruneError):
    """The model is valid ONNX but something it needs cannot be handled (e.g. unknown shapes)."""


class VerificationFailed(OnnxPruneError):
    """The pruned model does not compute what it must; nothing was written."""

    exit_code = 1


class ValidationFunctionFailed(OnnxPruneError):
    """The user's validation function (``validate=`` / ``--validate``) could not be found, raised,
    or returned something that is not a finite number; the message names it."""


class BackendMissing(OnnxPruneError):
    """An optional backend (onnxruntime, openvino) is not installed."""


class WriteError(OnnxPruneError, OSError):
    """An output could not be written (a full disk, a folder it may not write); nothing is left
    at its destination. Also an ``OSError`` whose ``filename`` is the destination."""

    def __init__(self, destination: str, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        OSError.__init__(self, exc.errno, reason, destination)
        self.text = f"{destination}: {reason}; nothing written"

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[WriteError], tuple[str, OSError]]:
        # OSError's own passes (errno, reason, filename) to __init__, which takes (destination,
        # exc): copy.copy and pickle (an error crossing a process pool) raised TypeError
        return type(self), (self.filename, OSError(self.errno, self.strerror))


_INPUT_FILES = {
    "verification": "an .npz file of arrays keyed by input name",
    "calibration": "an .npz file or a folder of images",
}


class InputsNotFound(UsageError, FileNotFoundError):
    """A file of inputs (verification inputs, calibration data) does not exist: one message for
    the library and the CLI. Also a ``FileNotFoundError`` whose ``filename`` is the path."""

    def __init__(self, path: str, kind: str) -> None:
        FileNotFoundError.__init__(self, errno.ENOENT, "No such file or directory", path)
        self.kind = kind  # "verification" (--inputs, verification_inputs) or "calibration"
        self.text = f"{path}: {kind} inputs not found ({_INPUT_FILES[kind]})"

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[InputsNotFound], tuple[str, str]]:
        return type(self), (self.filename, self.kind)


class InterruptedAfterWriting(KeyboardInterrupt):
    """Ctrl-C (SIGINT) came while files were being moved into place: it was held until every
    file was in place (a replacement is never left half done), then raised. The files were
    written."""


class LeftoverWarning(UserWarning):
    """A write found the hidden copies a killed run left beside its destination and dealt with
    them (put the previous files back, or removed copies no longer needed); the message says
    which. The library warns; the CLI prints it as ``onnxprune: warning: ...``."""


def backend_import_error(name: str, exc: ImportError, missing: str) -> BaseException:
    """What to raise for the ImportError ``exc`` of backend ``name``: a KeyboardInterrupt when
    Ctrl-C came during the import (a C extension's import turns it into an ImportError: Ctrl-C
    while onnxruntime loaded said 'onnxruntime is not installed'); ``BackendMissing(missing)``
    when it is not installed; else a BackendMissing saying it is installed but cannot be imported."""
    import importlib.util

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return KeyboardInterrupt()
        cause = cause.__cause__ or cause.__context__
    try:
        installed = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a half-imported module in sys.modules
        installed = True
    if not installed:
        return BackendMissing(missing)
    return BackendMissing(f"{name} is installed but cannot be imported: {first_line(exc)}")


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's text, for one-line error messages."""
    text = cli_text(exc).strip()  # ours in the command line's words: a wrapping error's str() renames them
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # onnx's checker puts the useful sentence first, then a context dump.
    return lines[0] if lines else type(exc).__name__


# OpenVINO's exception text is a stack of source locations ("Exception from src/...cpp:84:",
# "Check '...' failed at ...:299:", "While validating node ...:") around the sentence that says
# what is wrong: the first of these lines alone tells a user nothing.
_OPENVINO_FRAMING = (
    "Exception from src/",
    "Check '",
    "FrontEnd API failed with",
    "While validating",
    "Summary:",
    "-- ",
)


def openvino_message(exc: BaseException, limit: int = 300) -> str:
    """OpenVINO's error as one line: its reason without the source locations around it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not ln.startswith(_OPENVINO_FRAMING) and not ln.endswith(":")]
    text = "; ".join(kept) or (lines[0] if lines else type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."
