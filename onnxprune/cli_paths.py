"""The command line's files: no output of a run may name one of its inputs (the model, its
external data, the data, a plan, a config, a validation script), or the run would replace a file
it reads: the input is never modified."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from .errors import UsageError

__all__ = [
    "PLOT_FORMATS",
    "STDOUT",
    "check_outputs_distinct",
    "check_outputs_spare_inputs",
    "check_plot_format",
    "model_to_stdout",
    "one_file",
    "recover_outputs",
    "shown_paths",
]

# (attribute, flag) of every option that names a file a command writes.
_OUTPUTS = (
    ("output", "-o"),
    ("report", "--report"),
    ("markdown", "--markdown"),
    ("plot", "--plot"),
    ("ir", "--ir"),
    ("save_plan", "--save-plan"),
    ("json", "--json"),
)
# (attribute, what) of every option that names a file a command reads.
_INPUTS = (
    ("calibration", "--calibration data"),
    ("inputs", "--inputs data"),
    ("plan", "--plan"),
    ("config", "--config"),
)


def _outputs(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(path, flag) of every file the command will write, companions included: the .bin beside
    an .xml, the .data beside an .onnx with --external-data."""
    for attr, flag in _OUTPUTS:
        path = getattr(args, attr, None)
        if not isinstance(path, str) or not path:
            continue
        yield path, flag
        if path.endswith(".xml"):
            yield path[: -len(".xml")] + ".bin", f"{flag} (its .bin)"
        elif path.endswith(".onnx") and getattr(args, "external_data", False):
            yield path + ".data", f"{flag} (its external data)"


def _external_data(model: str) -> Iterator[str]:
    """The files the model's tensors keep their data in (read from the file, its weights not
    loaded); nothing when the file cannot be parsed (loading names that error)."""
    import onnx

    try:
        proto = onnx.load(model, load_external_data=False)
    except Exception:  # not a model: its loading refuses it with a one-line error
        return
    folder = os.path.dirname(os.path.abspath(model))
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if onnx.external_data_helper.uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if isinstance(location, str) and location:
                yield os.path.join(folder, location)


def _inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(path, what) of every file the command reads."""
    models = list(getattr(args, "models", None) or [])
    if isinstance(getattr(args, "model", None), str):
        models.insert(0, args.model)
    found = [(m, "the input model") for m in models]
    found += [(getattr(args, a), w) for a, w in _INPUTS if isinstance(getattr(args, a, None), str)]
    for option in ("validate", "rules"):  # FILE.py:NAME specs name a script the command runs
        spec = getattr(args, option, None)
        if isinstance(spec, str) and ".py:" in spec:
            found.append((spec.rsplit(":", 1)[0], f"the --{option} script"))
    return found


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:  # either is missing: nothing to overwrite
        return False


PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def check_plot_format(args: argparse.Namespace) -> None:
    """UsageError when ``--plot`` (prune, sensitivity, latency-table) names no image format
    matplotlib writes here; checked before any work, not after it (an internal error then)."""
    plot = getattr(args, "plot", None)
    if isinstance(plot, str) and plot and os.path.splitext(plot)[1].lower() not in PLOT_FORMATS:
        raise UsageError(f"{plot}: --plot must end in .png, .pdf, .svg or .jpg (the image format)")


def check_outputs_spare_inputs(args: argparse.Namespace) -> None:
    """UsageError when an output of the command names a file it reads; checked before any work.
    A model's external data is read from the file only when an output already exists beside it
    (the only way to name one of its data files)."""
    outputs = list(_outputs(args))
    if not outputs:
        return
    for path, flag in outputs:
        if flag.endswith(")") and os.path.isdir(path):  # a companion file; the named ones are checked as given
            raise UsageError(f"{path}: {flag} would be written there, but it is a folder; give another file name")
        if flag.endswith(")"):  # a link through /proc, a dangling link, a device
            from .file_writes import check_data_file, check_output_folder

            check_output_folder(path, flag)
            if flag.endswith("(its external data)"):
                check_data_file(path, flag)
    inputs = _inputs(args)
    for model, what in list(inputs):
        if what != "the input model" or not os.path.isfile(model):
            continue
        folder = os.path.realpath(os.path.dirname(os.path.abspath(model)))
        if any(
            os.path.exists(p) and os.path.realpath(os.path.dirname(os.path.abspath(p))) == folder for p, _ in outputs
        ):
            inputs += [(data, f"external data of {model}") for data in _external_data(model)]
    for path, flag in outputs:
        for source, what in inputs:
            if _same(path, source):
                named = what if source == path else f"{what} ({source})"
                raise UsageError(
                    f"{path}: {flag} names {named}, which it would overwrite (output must differ from every input); "
                    "give another file name"
                )


def say_unused_data_file(args: argparse.Namespace) -> None:
    """After the outputs are in place: one warning line when ``-o OUT.onnx``'s ``OUT.onnx.data``
    is not read by the model written (an earlier model's weights, left: another may read them)."""
    import sys

    from .data_files import unused_data_file

    if getattr(args, "stdout_model", None) is None and args.output.lower().endswith(".onnx"):
        unused = unused_data_file(args.output)
        if unused:
            print(f"onnxprune: warning: {unused}", file=sys.stderr)


def check_no_empty_paths(args: argparse.Namespace) -> None:
    """UsageError for a file option given an empty name (``--report "$R"`` with R unset): it
    was taken for the option not given (no report, no calibration) or failed after the work."""
    for attr, flag in (*_OUTPUTS, *_INPUTS):
        if getattr(args, attr, None) == "":
            raise UsageError(f"{flag.split()[0]}: an empty file name; give a file name")


def check_outputs_distinct(args: argparse.Namespace) -> None:
    """UsageError when two outputs of the command are one file, companions included: a --report
    named like the IR's .bin would replace its weights (an IR that no longer loads, exit 0)."""
    seen: dict[str, str] = {}
    for path, flag in _outputs(args):
        key = os.path.realpath(path)  # links written through (file_writes.output_target): the file they lead to
        if key in seen:
            raise UsageError(f"{path}: {seen[key]} and {flag} name the same file; give another file name")
        seen[key] = flag


STDOUT = "-"


def model_to_stdout(args: argparse.Namespace, stdout_is_terminal: bool) -> str | None:
    """``-o -``: the model goes to stdout, alone (no text report, as with ``--report -``). It is
    staged in a temporary folder like any output (``args.output`` becomes that file, its name
    shown as ``-``: shown_paths) and copied to stdout when the run succeeds; returns that file,
    or None. Refused before any work, one line: an IR (two files), ``--external-data`` (two
    files), a terminal (binary bytes), another output to stdout."""
    if getattr(args, "output", None) != STDOUT:
        return None
    if args.command == "convert":
        raise UsageError("-o -: an OpenVINO IR is two files (the .xml and its .bin); stdout takes one: give -o OUT.xml")
    if getattr(args, "external_data", False):
        raise UsageError(
            "-o -: --external-data writes two files (the model and its .data); stdout takes one: give -o OUT.onnx"
        )
    if getattr(args, "report", None) == STDOUT:
        raise UsageError("-o - and --report -: both would go to stdout; give one of them a file name")
    if stdout_is_terminal:
        raise UsageError(
            "-o -: stdout is a terminal, and a model is binary; redirect it (> OUT.onnx), pipe it, or give -o OUT.onnx"
        )
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="onnxprune-stdout-"), "stdout.onnx")
    args.output = path
    args.quiet = True
    return path


def shown_paths(value: object, staged: str | None) -> object:
    """``value`` (a report: dicts, lists, strings) with every string equal to ``staged`` (where
    ``-o -`` stages the model) shown as ``-``."""
    if staged is None:
        return value
    if isinstance(value, str):
        return STDOUT if value == staged else value
    if isinstance(value, dict):
        return {k: shown_paths(v, staged) for k, v in value.items()}
    if isinstance(value, list):
        return [shown_paths(v, staged) for v in value]
    return value


def one_file(args: argparse.Namespace) -> dict[str, str]:
    """For saving.Outputs: the model that must be written as one file (``-o -``), shown as ``-o -``."""
    staged = getattr(args, "stdout_model", None)
    return {staged: "-o -"} if staged else {}


def recover_outputs(args: argparse.Namespace) -> list[str]:
    """What was done with the hidden copies a killed run left beside this command's outputs
    (file_writes.recover_leftovers), one sentence each; called before any work."""
    from .file_writes import recover_leftovers

    return recover_leftovers([path for path, _ in _outputs(args)])
