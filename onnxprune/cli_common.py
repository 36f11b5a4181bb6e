"""What the command line's commands share: --input-shape's shapes, the progress bars, the
rules registry of --rules / --config, and a text output written atomically."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["config_file_rules", "parse_shapes", "progress_bars", "rules_registry", "write_text"]


def parse_shapes(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    from .option_checks import parse_input_shape

    return dict(parse_input_shape(s) for s in specs)


def progress_bars(quiet: bool):
    """A tqdm progress bar per stage on stderr; none when quiet or not on a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # the standard progress bar; imported only on a terminal

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=False, file=sys.stderr)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


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
