"""Command line of int8 quantization: ``onnxprune quantize`` and ``prune --quantize int8``.
Parsing and printing only; the work is quantization.quantize."""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

from .render import json_text

__all__ = [
    "add_prune_quantize_options",
    "add_quantize_command",
    "bench_chain",
    "check_prune_quantize",
    "joint_prune",
    "quantize_command",
    "quantize_pruned",
]


def _common_options(p: argparse.ArgumentParser, max_drop: bool = True) -> None:
    p.add_argument(
        "--preset",
        default="performance",
        choices=("performance", "mixed"),
        help="performance: symmetric activations (fastest); mixed: asymmetric activations (default performance)",
    )
    p.add_argument(
        "--ignored-scope",
        action="append",
        default=[],
        metavar="NAME|REGEX",
        help="ONNX node name or regular expression of nodes kept in float (repeatable)",
    )
    p.add_argument(
        "--no-fast-bias-correction", action="store_true", help="skip NNCF's fast bias correction (on by default)"
    )
    p.add_argument(
        "--subset-size",
        type=int,
        default=300,
        metavar="N",
        help="calibration samples used at most (NNCF's default 300)",
    )
    if not max_drop:  # prune has its own --max-drop: the drop of the pruning search and of int8 (cli_args)
        return
    p.add_argument(
        "--max-drop",
        metavar="D|D%",
        help="keep the most sensitive layers in float until the fidelity vs the float model (on the calibration samples), "
        "or your --validate function, drops by at most D (absolute) or D%% (relative) (NNCF's quantize_with_accuracy_control)",
    )
    p.add_argument(
        "--validate",
        metavar="FILE.py:function|module:function",
        help="your validation function, fn(candidate) -> float on your own data: it judges the accuracy control "
        "(NNCF's validation_fn; --max-drop default 0.01)",
    )


def add_quantize_command(sub: Any) -> None:
    """The ``quantize`` subcommand."""
    q = sub.add_parser("quantize", help="post-training int8 quantization with NNCF, checked on held-out samples")
    q.add_argument("model", help="input float .onnx file (never modified)")
    q.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.onnx|OUT.xml",
        help="QDQ ONNX (.onnx) or OpenVINO IR (.xml, .bin beside it)",
    )
    q.add_argument(
        "--calibration",
        required=True,
        metavar="C.npz|FOLDER",
        help="calibration inputs (.npz keyed by input name, or a folder of images)",
    )
    q.add_argument("--preprocess", metavar="SPEC", help="for a folder of images (see prune --preprocess)")
    q.add_argument(
        "--inputs",
        metavar="X.npz",
        help="held-out samples to evaluate on (default: every 4th calibration sample, held out)",
    )
    _common_options(q)
    q.add_argument(
        "--fidelity-metric",
        action="append",
        default=[],
        metavar="OUTPUT=METRIC",
        help="fidelity metric of an output ('*' for all): top1, ctc, dense, detection or cosine (see prune)",
    )
    q.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME:d0,d1,...", help="static input shape (repeatable)"
    )
    q.add_argument("--seed", type=int, default=0, help="picks the images of a folder larger than the subset")
    q.add_argument("--report", metavar="R.json", help="write the report as JSON")
    q.add_argument("--markdown", metavar="R.md", help="write the report as Markdown")
    q.add_argument("-q", "--quiet", action="store_true", help="print only errors")


def add_prune_quantize_options(p: argparse.ArgumentParser) -> None:
    """``prune --quantize int8`` and its options."""
    g = p.add_argument_group("int8 quantization of the pruned model (NNCF; needs --calibration)")
    g.add_argument("--quantize", choices=("int8",), help="quantize the pruned model: -o is QDQ ONNX, --ir an int8 IR")
    _common_options(g, max_drop=False)


def _config(args: argparse.Namespace, calibration: str | None, evaluation: str | None, shapes: dict, metrics: dict):
    from .quantize_config import QuantizeConfig

    return QuantizeConfig(
        calibration=calibration,
        preprocess=args.preprocess,
        evaluation_inputs=evaluation,
        preset=args.preset,
        ignored_scope=tuple(args.ignored_scope),
        fast_bias_correction=not args.no_fast_bias_correction,
        subset_size=args.subset_size,
        # With your function the drop is in its units (or %), else fidelity's (baseline 1.0).
        max_drop=args.max_drop if getattr(args, "validate", None) else _fidelity_drop(args.max_drop),
        validate=getattr(args, "validate", None),
        input_shapes=shapes,
        fidelity_metrics=metrics,
        seed=args.seed,
    )


def _fidelity_drop(value: float | str | None) -> float | None:
    """An absolute drop of fidelity (baseline 1.0) from ``D`` or ``D%``."""
    if value is None or isinstance(value, float):
        return value
    from .user_validation import parse_max_drop

    return parse_max_drop(value).allowed(1.0)


def _check_paths(args: argparse.Namespace) -> None:
    from .verification_inputs import CALIBRATION_INPUTS, check_inputs_file

    check_inputs_file(args.calibration, CALIBRATION_INPUTS)  # the library's own error
    check_inputs_file(args.inputs)
    from .saving import check_writable

    for path, what in ((args.report, "--report"), (getattr(args, "markdown", None), "--markdown")):
        if path:
            check_writable(path, what)


def quantize_command(args: argparse.Namespace, shapes: dict) -> int:
    from .fidelity import parse_metric_choices
    from .quant_report import format_quantize, quantize_markdown
    from .quantization import quantize

    _check_paths(args)
    from .saving import Outputs, check_writable

    check_writable(args.output, "-o")
    config = _config(args, args.calibration, args.inputs, shapes, parse_metric_choices(args.fidelity_metric))
    from .cli_paths import one_file, shown_paths

    with Outputs(one_file(args)) as outputs:  # the model and the reports are moved into place together
        data = quantize(args.model, args.output, config=config, outputs=outputs).report.to_dict(words="cli")
        data = shown_paths(data, getattr(args, "stdout_model", None))  # -o -: shown as '-'
        if args.report:
            outputs.add_text(args.report, json_text(data, indent=2))
        if args.markdown:
            outputs.add_text(
                args.markdown,
                "\n".join([f"# onnxprune int8 report: `{os.path.basename(args.model)}`", "", *quantize_markdown(data)])
                + "\n",
            )
        outputs.commit()
    from .cli_paths import say_unused_data_file

    say_unused_data_file(args)  # an earlier model's OUT.onnx.data beside the int8 model
    if not args.quiet:
        print(format_quantize(data))
    return 0


def check_prune_quantize(args: argparse.Namespace) -> None:
    """Usage errors of ``prune --quantize`` before any work."""
    from .errors import UsageError

    if not args.quantize:
        for flag, given in (
            ("--preset", args.preset != "performance"),
            ("--ignored-scope", args.ignored_scope),
            ("--no-fast-bias-correction", args.no_fast_bias_correction),
        ):
            if given:
                raise UsageError(f"{flag} is an option of int8 quantization: add --quantize int8")
        return
    if not args.calibration:
        raise UsageError("--quantize int8 needs calibration inputs (--calibration C.npz or a folder of images)")

    if not args.output.endswith(".onnx"):
        raise UsageError(
            f"{args.output}: with --quantize int8, -o is the int8 model in QDQ ONNX (.onnx); give --ir OUT.xml for an int8 IR"
        )
    if args.fp16:
        raise UsageError(
            "--fp16 and --quantize int8 exclude each other: the int8 IR keeps its quantized weights in 8 bits"
        )


def quantize_pruned(args: argparse.Namespace, pruned: Any, prune_config: Any, outputs: Any) -> tuple[dict, str]:
    """Quantize the pruned model (in memory) to -o (QDQ ONNX) and, with --ir, to an int8 IR,
    staged in ``outputs``; both measured against the pruned float model and the original on
    held-out samples. Returns the report entries and where the int8 model to time is staged."""
    from .quantization import quantize

    config = _config(
        args,
        prune_config.calibration,
        prune_config.verification_inputs,
        dict(prune_config.input_shapes),
        dict(prune_config.fidelity_metrics),
    )
    qdq = quantize(pruned, args.output, config=config, reference=args.model, source=args.model, outputs=outputs)
    data = {"quantization": qdq.report.to_dict(words="cli")}
    timed = qdq.path
    if args.ir:
        ir = quantize(pruned, args.ir, config=config, reference=args.model, source=args.model, outputs=outputs)
        data["quantization_ir"] = ir.report.to_dict(words="cli")
        timed = ir.path
    return data, timed


def bench_chain(args: argparse.Namespace, pruned: Any, int8_path: str, shapes: dict, progress: Any) -> list[dict]:
    """Original fp32, pruned fp32 and pruned int8 (the IR if written, else the QDQ ONNX, where
    it is staged) timed side by side with OpenVINO; the pruned float model is written to a
    temporary folder for it."""
    from .bench import benchmark, spread_warning
    from .saving import save_model

    with tempfile.TemporaryDirectory() as tmp:
        float_path = os.path.join(tmp, "pruned_fp32.onnx")
        save_model(pruned, float_path)
        timings = benchmark([args.model, float_path, int8_path], input_shapes=shapes, progress=progress)
    from dataclasses import replace

    # Named as the user knows them (the int8 model was timed where it is staged).
    named = [
        replace(t, path=path)
        for t, path in zip(timings, (args.model, "pruned fp32 (not written)", args.ir or args.output))
    ]
    return [
        {**t.to_dict(), "label": label, "warning": spread_warning(named[0], t)}
        for label, t in zip(("original fp32", "pruned fp32", "pruned int8"), named)
    ]


def joint_prune(args: argparse.Namespace, prune_config: Any, progress: Any) -> tuple[Any, dict]:
    """``prune --min-fidelity F --quantize int8``: prune so that the int8 model keeps F (see joint)."""
    from .joint import prune_for_int8

    config = _config(
        args,
        prune_config.calibration,
        prune_config.verification_inputs,
        dict(prune_config.input_shapes),
        dict(prune_config.fidelity_metrics),
    )
    joint = prune_for_int8(args.model, prune_config, config, progress=progress)
    return joint.pruned, joint.to_dict()
