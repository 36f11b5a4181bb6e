"""The command line's read-only commands: ``analyze`` (channel groups and pins) and ``explain``
(``analyze --layers``: per layer, what each criterion family may remove and why the rest stay)."""

from __future__ import annotations

import argparse

from .cli_common import parse_shapes, rules_registry, write_text
from .cli_text import reason_counts
from .render import json_text

__all__ = ["ANALYSIS_FORMAT", "EXPLAIN_FORMAT", "analyze_command", "explain_command"]

# The first key of each command's --json: what it is and its layout's version.
ANALYSIS_FORMAT = "onnxprune-analysis/1"
EXPLAIN_FORMAT = "onnxprune-explain/1"


def analyze_command(args: argparse.Namespace) -> int:
    from .api import analyze

    if args.json:
        from .saving import check_writable

        check_writable(args.json, "--json")
    analysis = analyze(args.model, input_shapes=parse_shapes(args.input_shape), registry=rules_registry(args))
    data = {
        "format": ANALYSIS_FORMAT,
        "model": args.model,
        **analysis.summary(),
        "groups": [g.to_dict() for g in analysis.groups],
    }
    if args.json:
        write_text(args.json, json_text(data, indent=2))
    if not args.quiet:
        s = analysis.summary()
        print(f"{args.model}: {s['channels']} output channels in {s['groups']} channel groups")
        print(f"pinned: {s['pinned_groups']} groups ({s['pinned_channels']} channels)")
        for reason, (groups, channels) in reason_counts(
            [(g.pinned_by, len(g.members)) for g in analysis.groups if g.pinned]
        ).most_common():
            print(f"  {groups:5d} groups {channels:6d} ch  {reason}")
        for line in analysis.not_analysed:
            print(f"note: {line}")
    return 0


def explain_command(args: argparse.Namespace) -> int:
    from .api import analyze
    from .errors import UsageError
    from .explain import explain_layers

    json_path = getattr(args, "json", None)
    if json_path:
        from .saving import check_writable

        check_writable(json_path, "--json")
    analysis = analyze(args.model, input_shapes=parse_shapes(args.input_shape), registry=rules_registry(args))
    nodes = getattr(args, "node", None) or None
    if nodes:
        known = {s.node for s in analysis.sources}
        for name in nodes:
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
                hint = (
                    f"; did you mean {', '.join(repr(c) for c in close)}?"
                    if close
                    else f" ({len(known)} weight-bearing layers: see 'onnxprune explain {args.model}')"
                )
                raise UsageError(f"{args.model}: no weight-bearing layer named {name!r}{hint}")
    layers = explain_layers(analysis, nodes)
    if json_path:
        write_text(
            json_path,
            json_text(
                {
                    "format": EXPLAIN_FORMAT,
                    "model": args.model,
                    "layers": [x.to_dict() for x in layers],
                    "not_analysed": list(analysis.not_analysed),
                },
                separators=(",", ":"),
            ),
        )
    if args.quiet:
        return 0
    if nodes:
        for x in layers:
            print(f"{x.node} ({x.op}): {x.channels} output channels")
            for family, label in (("zero", "zero (exact, no budget)"), ("lossy", "lossy criteria (any budget)")):
                n = x.removable[family]
                print(f"  {label}: {n} removable, {x.channels - n} stay")
                for reason, count in x.kept[family]:
                    print(f"    {count:6d} ch  {reason}")
        return 0
    total = sum(x.channels for x in layers)
    print(
        f"{args.model}: {len(layers)} weight-bearing layers, {total} output channels; removable: "
        f"zero {sum(x.removable['zero'] for x in layers)}, lossy {sum(x.removable['lossy'] for x in layers)} (at most, all at once)"
    )
    print(f"{'layer':40s} {'op':14s} {'channels':>8s} {'zero':>6s} {'lossy':>6s}   why the rest stay (lossy)")
    for x in layers:
        why = x.kept["lossy"][0][0] if x.kept["lossy"] else ""
        more = f" (+{len(x.kept['lossy']) - 1} more)" if len(x.kept["lossy"]) > 1 else ""
        print(
            f"{x.node[:40]:40s} {x.op[:14]:14s} {x.channels:8d} {x.removable['zero']:6d} {x.removable['lossy']:6d}   {why[:90]}{more}"
        )
    for line in analysis.not_analysed:
        print(f"note: {line}")
    return 0
