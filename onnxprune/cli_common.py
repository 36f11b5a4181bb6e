"""What the command line's commands share: --input-shape's shapes, the progress bars, the
rules registry of --rules / --config, and a text output written atomically."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = [
    "PROGRESS_MODES",
    "config_file_rules",
    "parse_shapes",
    "progress_bars",
    "progress_option",
    "rules_registry",
    "write_text",
]


def parse_shapes(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    from .option_checks import parse_input_shape

    return dict(parse_input_shape(s) for s in specs)


PROGRESS_MODES = ("auto", "bar", "lines", "none")
# --progress lines: between a phase's first and last step, at most one line this often (a
# search of several minutes gives a few lines a minute, not one per trial).
LINE_SECONDS = 10.0


def progress_bars(
    quiet: bool,
    mode: str = "auto",
    *,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    every: float = LINE_SECONDS,
) -> Callable[[str, int, int], None] | None:
    """How the library's progress (stage, done, total) is shown on stderr (``--progress``):
    'auto' a tqdm bar per stage on a terminal, else nothing (logs stay clean), nothing with -q;
    'bar' the bars even off a terminal; 'lines' one plain line at each stage's first and last
    step and at most one per ``every`` seconds between (CI logs, nohup: a run of minutes said
    nothing); 'none' nothing. An explicit 'bar' or 'lines' is shown with -q too."""
    stream = sys.stderr if stream is None else stream
    if mode == "auto":
        mode = "none" if quiet or not stream.isatty() else "bar"
    if mode == "lines":
        return _progress_lines(stream, clock, every)
    if mode != "bar":
        return None
    from tqdm import tqdm  # the standard progress bar; imported only when shown

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=False, file=stream)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            del bars[stage]  # the stage run again (another step of a search) gets a new bar

    return update


def progress_option(p: argparse.ArgumentParser) -> None:
    """--progress, on every command that reports progress."""
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="progress on stderr: auto (default: a bar per phase on a terminal, nothing otherwise or with -q, so "
        "logs stay clean), bar (also off a terminal), lines (a plain line at each phase's start and end and at "
        f"most one per {LINE_SECONDS:g} s between: for CI logs, nohup), none",
    )


def _progress_lines(stream: TextIO, clock: Callable[[], float], every: float) -> Callable[[str, int, int], None]:
    started: dict[str, float] = {}  # stage -> when its first step was reported
    shown: dict[str, float] = {}  # stage -> when its last line was written

    def update(stage: str, done: int, total: int) -> None:
        now = clock()
        first = stage not in started
        if first:
            started[stage] = now
        last = done >= total
        if not (first or last or now - shown[stage] >= every):
            return
        shown[stage] = now
        share = f" ({100 * done // total}%)" if total > 0 else ""
        stream.write(f"onnxprune: {stage} {done}/{total}{share} after {_duration(now - started[stage])}\n")
        stream.flush()
        if last:  # the stage run again starts anew
            del started[stage], shown[stage]

    return update


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


def config_file_rules(args: argparse.Namespace) -> tuple[tuple, str | None]:
    """``--config``'s layer rules, and the rules for custom ops: ``--rules`` or the config
    mapping's ``rules`` (both: refused)."""
    from .layer_rules import config_file_options

    config = getattr(args, "config", None)
    if not config:
        return (), args.rules
    given = config_file_options(config, args.rules, "--rules")  # PruneConfig.from_file's reading
    return given["layer_rules"], given["rules"]


def rules_registry(args: argparse.Namespace):
    """The rules registry of ``--rules`` (or ``--config``'s rules; None: the default one)."""
    rules = config_file_rules(args)[1]
    if not rules:
        return None
    from .rules import load_rules

    return load_rules(rules)


def write_text(path: str, text: str) -> None:
    from .saving import write_atomic

    write_atomic(path, text)
