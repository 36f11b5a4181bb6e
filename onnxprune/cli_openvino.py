"""The command line's OpenVINO commands: ``convert`` (ONNX -> IR, checked) and ``bench``."""

from __future__ import annotations

import argparse
import os

from .cli_common import parse_shapes, progress_bars, write_text
from .cli_text import ir_check_text
from .render import json_text

__all__ = ["BENCH_FORMAT", "bench_command", "convert_command"]

# The first key of bench --json ({"format", "models": one entry per model, in order}).
BENCH_FORMAT = "onnxprune-bench/1"


def convert_command(args: argparse.Namespace) -> int:
    from .api import load
    from .errors import UsageError
    from .openvino_ir import convert_to_ir
    from .saving import Outputs, check_writable
    from .shapes import concrete_input_shapes, dynamic_batch_inputs
    from .verification_inputs import make_inputs

    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise UsageError(f"{args.output}: output must differ from the input model")
    if not args.output.endswith(".xml"):
        raise UsageError(f"{args.output}: the IR path must end in .xml (the .bin is written beside it)")
    check_writable(args.output, "IR")
    model = load(args.model)
    shapes = parse_shapes(args.input_shape)
    concrete_input_shapes(model, shapes, args.model)  # each names an input, of its rank and fixed sizes
    feeds = []
    if not args.no_verify:
        # Checked at the given shapes, batch included; a dynamic batch nobody gave is 1.
        batch = 1 if any(n not in shapes for n in dynamic_batch_inputs(model)) else None
        feeds = [make_inputs(model, shapes, batch, 0, args.model)]
    with Outputs() as outputs:
        check = convert_to_ir(
            model,
            args.output,
            input_shapes=shapes,
            static=args.static,
            fp16=args.fp16,
            check_feeds=feeds,
            source=args.model,
            tolerance=args.tolerance,
            outputs=outputs,
        )
        outputs.commit()
    if not args.quiet:
        bin_path = args.output[: -len(".xml")] + ".bin"
        print(
            f"{args.model} -> {args.output} + {os.path.basename(bin_path)} ({'FP16' if args.fp16 else 'FP32'} weights, {os.path.getsize(bin_path):,} bytes)"
        )
        if check is None:
            print("check against onnxruntime: skipped (--no-verify)")
        else:
            shown = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds[0].items())
            print(
                f"check against onnxruntime: PASSED at {shown}, worst output {check.worst_output!r}: {ir_check_text(check.to_dict())}"
            )
        if check is not None and check.ir_inputs:
            print(
                "IR inputs: "
                + ", ".join(f"{k} {v}" for k, v in check.ir_inputs.items())
                + ("" if args.static else "  (dynamic dimensions kept; --static bakes the shapes checked)")
            )
    return 0


def bench_command(args: argparse.Namespace) -> int:
    from .bench import benchmark, spread_warning, spread_warnings
    from .errors import UsageError

    inputs = None
    if args.inputs:
        import numpy as np

        try:
            with np.load(args.inputs) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # numpy and zipfile raise their own types
            raise UsageError(f"{args.inputs}: cannot read inputs ({' '.join(str(exc).split())[:200]})") from None
        for name, array in arrays.items():  # no sample: OpenVINO said 'Batch size is zero', not which file
            if array.ndim and not array.shape[0]:
                raise UsageError(
                    f"{args.inputs}: array {name!r} has no samples (shape {array.shape}); "
                    "give at least one along its first axis"
                )
        inputs = {k: np.asarray(a[:1]) if a.ndim else a for k, a in arrays.items()}
    if args.json:
        from .saving import check_writable

        check_writable(args.json, "--json")
    progress = progress_bars(args.quiet, args.progress)
    timings = benchmark(
        args.models,
        backend=args.backend,
        rounds=args.rounds,
        runs_per_round=args.runs,
        warmup=args.warmup,
        throughput_seconds=args.throughput_seconds,
        input_shapes=parse_shapes(args.input_shape),
        progress=progress and (lambda d, t: progress("benchmark", d, t)),
        seconds=args.time,
        precision=args.precision,
        inputs=inputs,
    )
    warnings = spread_warnings(timings)
    if args.json:
        rows = [{**t.to_dict(), "warning": spread_warning(timings[0], t)} for t in timings]
        write_text(args.json, json_text({"format": BENCH_FORMAT, "models": rows}, indent=2))
    if not args.quiet:
        print(
            f"{'model':36s} {'prec':>11s} {'runs':>5s} {'median ms':>10s} {'p10-p90 ms':>17s} {'per s':>9s} {'latency':>8s} {'thrpt':>7s}   ({args.backend}, CPU)"
        )
        for t in timings:
            spread = f"{t.latency_p10_ms:.3f}-{t.latency_p90_ms:.3f}"
            print(
                f"{os.path.basename(t.path)[:36]:36s} {t.precision:>11s} {t.runs:5d} {t.latency_median_ms:10.3f} {spread:>17s} "
                f"{t.throughput_fps:9.1f} {t.latency_ratio:8.3f} {t.throughput_ratio:7.3f}"
            )
        for w in warnings:
            print(f"warning: {w}")
    return 0
