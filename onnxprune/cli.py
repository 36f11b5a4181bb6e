"""Command line: the entry point, what goes to stdout, dispatching the commands and mapping library
errors to exit codes (the options are in cli_args.py, prune in cli_prune.py, the other commands in
cli_*.py, what they share in cli_common.py). Exit codes: 0 success, 1 verification failed, 2 bad
input or usage, 3 internal error (a bug: please report)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .cli_args import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # outside the run (_run says its own): no traceback either
        print("onnxprune: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from .cli_paths import model_to_stdout
    from .errors import OnnxPruneError

    try:
        model = args.stdout_model = model_to_stdout(args, _is_terminal(sys.stdout))
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc.cli_text}", file=sys.stderr)
        return exc.exit_code
    staged = _json_to_stdout(args)
    try:
        with _stdout_to_stderr(model is not None), _warnings_as_lines(args):  # nothing but the model's bytes on stdout
            code = _run(args)
        if code == 0 and model is not None:  # the model alone on stdout, once the run succeeded
            with open(model, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
        if code == 0 and staged is not None:  # the JSON alone on stdout, once the run succeeded
            with open(staged, encoding="utf-8") as f:
                sys.stdout.write(f.read())
        return code
    finally:
        for path in (staged, model):
            if path is not None:
                shutil.rmtree(os.path.dirname(path), ignore_errors=True)


@contextmanager
def _warnings_as_lines(args: argparse.Namespace) -> Iterator[None]:
    """While on, a warning raised during the run (a library's LeftoverWarning, or another
    package's) is one line on stderr, ``onnxprune: warning: TEXT`` (another package's with its
    category first), not Python's FILE:LINE: Category: TEXT and the source line. The library
    warns as before; the filters decide, as always, which warnings are shown."""
    import warnings

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        text = " ".join(str(message).split())
        if not category.__module__.startswith("onnxprune"):
            text = f"{category.__name__}: {text}"
        print(f"onnxprune: warning: {_shown(args, text)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def _stdout_to_stderr(on: bool) -> Iterator[None]:
    """While on, whatever is written to stdout (file descriptor 1: a library's own prints
    included) goes to stderr, so that stdout carries the model's bytes alone."""
    if not on:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _json_to_stdout(args: argparse.Namespace) -> str | None:
    """``--report -`` / ``--json -``: the command's JSON goes to stdout, alone (the text report
    is not printed, as with -q). It is written to a file in a temporary folder like any output
    and copied to stdout when the run succeeds; returns that file, or None."""
    attr = "report" if args.command in ("prune", "quantize") else "json"
    if getattr(args, attr, None) != "-":
        return None
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="onnxprune-stdout-"), "out.json")
    setattr(args, attr, path)
    args.quiet = True
    return path


def _run(args: argparse.Namespace) -> int:
    """Run the command; library errors become one line on stderr and an exit code."""
    from .errors import OnnxPruneError

    try:
        return _dispatch(args)
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {_shown(args, exc.cli_text)}", file=sys.stderr)  # the flags' names
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from .errors import InterruptedAfterWriting

        if isinstance(exc, InterruptedAfterWriting):  # held while the outputs were moved into place
            print(
                "onnxprune: interrupted; the outputs were written (Ctrl-C came as they were moved into place)",
                file=sys.stderr,
            )
        else:
            print("onnxprune: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine, not the model: a full disk, a folder it may not write
        print(
            _shown(
                args,
                f"onnxprune: error: {exc.filename or getattr(args, 'model', '')}: {exc.strerror or exc}; nothing written",
            ),
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug: one line, no traceback unless asked for
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        where = getattr(args, "model", None) or " ".join(getattr(args, "models", None) or [])
        print(
            _shown(
                args,
                f"onnxprune: internal error on {where}: {type(exc).__name__}: {exc} (set ONNXPRUNE_DEBUG=1 for a traceback)",
            ),
            file=sys.stderr,
        )
        return 3


def _shown(args: argparse.Namespace, text: str) -> str:
    """``text`` with the file where ``-o -`` stages the model shown as ``-``."""
    staged = getattr(args, "stdout_model", None)
    return text.replace(staged, "-") if staged else text


def _dispatch(args: argparse.Namespace) -> int:
    """The checks every command makes of its paths, then the command."""
    from .cli_paths import (
        check_no_empty_paths,
        check_outputs_distinct,
        check_outputs_spare_inputs,
        check_plot_format,
    )

    check_no_empty_paths(args)
    check_plot_format(args)
    check_outputs_spare_inputs(args)
    check_outputs_distinct(args)
    from .cli_paths import recover_outputs

    # A killed run's copies beside the outputs: said here and in prune's report.
    args.leftovers = recover_outputs(args)
    for sentence in args.leftovers:
        print(f"onnxprune: warning: {_shown(args, sentence)}", file=sys.stderr)
    if args.command == "prune":
        from .cli_prune import prune_command

        return prune_command(args)
    if args.command == "convert":
        from .cli_openvino import convert_command

        return convert_command(args)
    if args.command == "bench":
        from .cli_openvino import bench_command

        return bench_command(args)
    if args.command == "latency-table":
        from .cli_latency import latency_table_command

        return latency_table_command(args)
    if args.command == "sensitivity":
        from .cli_sensitivity import sensitivity_command

        return sensitivity_command(args)
    if args.command == "quantize":
        from .cli_common import parse_shapes
        from .cli_quantize import quantize_command

        return quantize_command(args, parse_shapes(args.input_shape))
    from .cli_analysis import analyze_command, explain_command

    if args.command == "explain" or args.layers:
        return explain_command(args)
    return analyze_command(args)
