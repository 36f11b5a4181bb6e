"""``onnxprune latency-table``: build (or read from the cache) a model's latency table and show it."""

from __future__ import annotations

import argparse
import importlib
import os

from .cli_common import parse_shapes, progress_bars, rules_registry
from .render import json_text

__all__ = ["latency_table_command", "settings_from_args"]


def settings_from_args(args: argparse.Namespace):
    """The ``LatencySettings`` of the deployment options (cli_args.latency_options)."""
    from .latency import LatencySettings

    return LatencySettings(
        backend=args.backend, batch=args.batch, threads=args.threads, hint=args.hint, precision=args.precision
    )


def _timer(spec: str | None, settings):
    """The hidden ``--timer MODULE:FACTORY`` (tests): a factory taking the settings."""
    if not spec:
        return None
    from .errors import UsageError

    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)(settings)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--timer {spec}: {exc}") from None


def latency_table_command(args: argparse.Namespace) -> int:
    from .latency import build_table
    from .saving import Outputs, check_writable

    for path, what in ((args.json, "--json"), (args.plot, "--plot")):
        if path:
            check_writable(path, what)
    registry = rules_registry(args)  # your rules decide the units, as in prune
    settings = settings_from_args(args)
    progress = progress_bars(args.quiet, args.progress)
    table = build_table(
        args.model,
        settings,
        timer=_timer(args.timer, settings),
        input_shapes=parse_shapes(args.input_shape),
        registry=registry,
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
        rounds=args.rounds,
        seconds_per_unit=args.seconds_per_unit,
        progress=progress,
    )
    with Outputs() as outputs:  # both files or neither: a failing plot leaves no JSON behind
        if args.json:
            outputs.add_text(args.json, json_text({"model": args.model, **table.to_dict()}, indent=2))
        if args.plot:
            from .latency import plot

            title = os.path.basename(args.model)
            outputs.add_written(args.plot, lambda staged: plot.plot_latency_table(table, staged, title))
        outputs.commit()
    if not args.quiet:
        for line in table_lines(args.model, table):
            print(line)
    return 0


def _short(name: str, width: int) -> str:
    """The end of a long node name (where torch exports keep the layer's own name)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def table_lines(model: str, table) -> list[str]:
    """The table as text: one line per unit, largest saving at half width first."""
    s = table.settings
    threads = "auto" if s.threads is None else s.threads
    lines = [
        f"{model}: {len(table.units)} units, baseline {table.baseline * 1e3:.3f} ms "
        f"({s.backend} {s.device} {s.precision}, batch {s.batch}, threads {threads}, {s.hint} hint; {table.key['runtime']}; "
        f"{table.key['cpu']}), measured in {table.seconds:.1f} s{' (read from the cache)' if table.cached else ''}",
        f"{'unit (first layer)':40s} {'layers':>6s} {'channels':>8s} {'step':>5s} {'points':>6s} {'unit ms':>8s}"
        f"{'75%':>14s}{'50%':>14s}{'25%':>14s}   (kept: latency / MACs saved, % of the model)",
    ]
    cal = table.calibration
    if cal:
        lines.insert(
            1,
            f"calibrated on the whole model with every unit at half width: measured {cal['measured_ratio']:.3f}x, "
            f"the subgraphs predicted {cal['predicted_ratio']:.3f}x: savings x{table.scale:.2f}",
        )
    for u in sorted(table.units.values(), key=lambda u: -u.saving(u.channels // 2)):
        cells = ""
        for f in (0.75, 0.5, 0.25):
            kept = max(round(f * u.channels), min(k for k, _ in u.points))
            lat = 100 * u.saving(kept) / table.baseline if table.baseline else 0.0
            macs = dict(u.macs_saved)
            m = macs.get(kept)
            cells += f"{lat:6.1f}/{'  -  ' if m is None else f'{100 * m:5.1f}'}  "
        step = "-" if u.step is None else str(u.step)
        lines.append(
            f"{_short(u.unit, 40):40s} {len(u.layers):6d} {u.channels:8d} {step:>5s} {len(u.points):6d} "
            f"{u.predict(u.channels) * 1e3:8.3f}  {cells}"
        )
    lines += [f"note: {n}" for n in table.notes]
    return lines
