"""The ``sensitivity`` command: running it and printing its table (its options are in cli_args.py)."""

from __future__ import annotations

import argparse

from .cli_common import parse_shapes, progress_bars

__all__ = ["sensitivity_command"]


def sensitivity_command(args: argparse.Namespace) -> int:
    """``onnxprune sensitivity``: the per-unit fidelity table, printed and written as JSON / a plot."""
    from .api import sensitivity
    from .errors import UsageError
    from .fidelity import parse_metric_choices
    from .option_checks import percent_fraction

    shares = [percent_fraction(r) for r in args.ratios.split(",")]
    if all(s is not None for s in shares):  # 10%,25%: the fractions to give
        raise UsageError(
            f"--ratios {args.ratios}: fractions, not percentages: did you mean {','.join(f'{s:g}' for s in shares)}?"
        )
    try:
        ratios = tuple(float(r) for r in args.ratios.split(","))
    except ValueError:
        raise UsageError(f"--ratios {args.ratios!r}: expected numbers like 0.1,0.25,0.5") from None
    from .verification_inputs import CALIBRATION_INPUTS, check_inputs_file

    check_inputs_file(args.calibration, CALIBRATION_INPUTS)
    from .saving import Outputs, check_writable

    for path, what in ((args.json, "--json"), (args.plot, "--plot")):
        if path:
            check_writable(path, what)
    progress = progress_bars(args.quiet, args.progress)
    result = sensitivity(
        args.model,
        args.calibration,
        args.criterion,
        sensitivity_ratios=ratios,
        compensation=args.compensation,
        fidelity_metrics=parse_metric_choices(args.fidelity_metric),
        input_shapes=parse_shapes(args.input_shape),
        exclude=tuple(args.exclude),
        preprocess=args.preprocess,
        rules=args.rules,
        progress=progress,
    )
    table = result.to_dict()
    data = {"format": table.pop("format"), "model": args.model, **table}
    with Outputs() as outputs:  # both files or neither
        if args.json:
            from .render import json_text

            outputs.add_text(args.json, json_text(data, indent=2))
        if args.plot:
            from .render import plot_sensitivity

            outputs.add_written(args.plot, lambda staged: plot_sensitivity(data, staged))
        outputs.commit()
    if not args.quiet:
        head = "".join(f"{f'{r:.0%}':>16s}" for r in result.ratios)
        print(
            f"{args.model}: {len(result.units)} units, {result.samples} calibration samples, {result.trials} trials in {result.seconds:.1f} s"
        )
        for m in result.metrics:  # what "fidelity" is: the worst output's score under its metric
            print(f"  fidelity of {m.name!r}: {m.metric} ({m.reason})")
        print(f"{'unit (first layer)':44s}{'channels':>9s}{head}   (fidelity / MACs saved)")
        for u in sorted(result.units, key=lambda u: -u.macs_saved[result.ratios[-1]]):
            cells = "".join(f"{u.fidelity[r]:>9.4f}/{u.macs_saved[r] * 100:5.1f}%" for r in result.ratios)
            print(f"{u.unit.name[:44]:44s}{u.unit.channels:9d}{cells}")
        if not result.units:
            print(
                f"note: no unit to prune: every channel is pinned (or its layers are inside subgraphs, which are not "
                f"analysed); 'onnxprune explain {args.model}' says why per layer"
            )
    return 0
