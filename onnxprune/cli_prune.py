"""``onnxprune prune``: its options as a PruneConfig, every destination checked before any work,
the run (with --quantize, --ir, --bench, --compare-openvino beside it), and all its outputs moved
into place together."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from .cli_common import config_file_rules, parse_shapes, progress_bars

__all__ = ["prune_command"]


def prune_command(args: argparse.Namespace) -> int:
    from .api import check_output_path, prune
    from .config import PruneConfig
    from .errors import UsageError
    from .fidelity import parse_metric_choices
    from .planning import PruningPlan
    from .saving import Outputs, check_writable

    # Every destination is checked before any work, and every output is staged beside its
    # destination and moved into place only when all of them are ready: all or none.
    check_output_path(args.output, args.model)
    for path, what in ((args.plan, "--plan"), (args.config, "--config")):
        if path and not os.path.isfile(path):
            raise UsageError(f"{path}: {what} file not found")
    from .verification_inputs import CALIBRATION_INPUTS, check_inputs_file

    check_inputs_file(args.inputs)  # the library's own error, printed as it is
    check_inputs_file(args.calibration, CALIBRATION_INPUTS)
    if args.output.lower().endswith(".xml") and not args.quantize:  # quantize -o q.xml writes an IR: prune does not
        raise UsageError(
            f"{args.output}: prune writes an ONNX model, not an OpenVINO IR; give -o OUT.onnx, and --ir OUT.xml for the IR"
        )
    if args.ir and not args.ir.endswith(".xml"):
        raise UsageError(f"{args.ir}: --ir must end in .xml (the .bin is written beside it)")
    # Two outputs naming one file were refused before this (cli_paths.check_outputs_distinct).
    for path, what in (
        (args.report, "--report"),
        (args.markdown, "--markdown"),
        (args.plot, "--plot"),
        (args.ir, "--ir"),
        (args.save_plan, "--save-plan"),
    ):
        if path:
            check_writable(path, what)
    latency = _latency_settings(args)
    layer_rules, rules = config_file_rules(args)
    config = PruneConfig(
        criterion=args.criterion,
        ratio=args.ratio,
        global_ranking=args.global_ranking,
        macs_target=args.macs_target,
        round_to=args.round_to,
        exclude=tuple(args.exclude),
        layer_rules=layer_rules,
        rules=rules,
        calibration=args.calibration,
        compensation=args.compensation,
        input_shapes=parse_shapes(args.input_shape),
        verify=not args.no_verify,
        verification_inputs=args.inputs,
        seed=args.seed,
        tolerance=args.tolerance,
        min_fidelity=args.min_fidelity,
        fidelity_confidence=args.fidelity_confidence,
        fidelity_batch=args.fidelity_batch,
        reconstruct=args.reconstruct,
        reconstruct_from=args.reconstruct_from,
        recalibrate=args.recalibrate,
        fidelity_metrics=parse_metric_choices(args.fidelity_metric),
        preprocess=args.preprocess,
        validate=args.validate,
        calibration_limit=args.calibration_limit,
        latency_target=args.latency_target,
        latency=latency,
        latency_evaluations=args.latency_evaluations,
        latency_evaluation_seconds=args.latency_evaluation_seconds,
    )
    if args.max_drop is not None and not (args.quantize and config.explicit_budget):
        # The pruning search's budget; with another budget and --quantize, int8's alone.
        config = config.with_options(max_drop=args.max_drop)
    given_plan = PruningPlan.load(args.plan) if args.plan else None  # errors name the file
    ov_shapes: dict = {}
    wants_openvino = [
        f for f, on in (("--ir", args.ir), ("--bench", args.bench), ("--compare-openvino", args.compare_openvino)) if on
    ]
    if wants_openvino:  # OpenVINO needs static shapes: find them now, not after the pruning
        ov_shapes = _static_shapes(
            args.model, config.input_shapes, args.inputs, args.calibration, " and ".join(wants_openvino)
        )
    from .cli_quantize import check_prune_quantize

    check_prune_quantize(args)
    progress = progress_bars(args.quiet, args.progress)
    from .cli_paths import one_file

    with Outputs(one_file(args)) as outputs:
        # With --quantize, -o is the int8 model: the pruned float model stays in memory.
        joint = None
        if args.quantize and config.fidelity_floor is not None and given_plan is None:
            from .cli_quantize import joint_prune  # the budget is met by the int8 model

            result, joint = joint_prune(args, config, progress)
        else:
            from .cli_latency import _timer

            result = prune(
                args.model,
                args.criterion,
                config=config,
                timer=_timer(args.timer, latency),
                pruning_plan=given_plan,
                progress=progress,
                output=None if args.quantize else args.output,
                external_data=True if args.external_data else None,
                outputs=None if args.quantize else outputs,
            )
        data: dict = {"output": args.output}  # after the report's own fields, once it is shown or written
        if getattr(args, "leftovers", None):
            data["leftovers"] = args.leftovers
        if joint is not None:
            data["joint"] = joint
        int8_path = None
        if args.quantize:
            from .cli_quantize import quantize_pruned

            quantized, int8_path = quantize_pruned(args, result.model, config, outputs)
            data.update(quantized)
        elif args.ir:
            from .openvino_ir import convert_to_ir
            from .verification_inputs import make_inputs

            feeds = [make_inputs(result.model, ov_shapes, 1, config.seed, args.model)]
            check = convert_to_ir(
                result.model,
                args.ir,
                input_shapes=ov_shapes,
                static=args.static,
                fp16=args.fp16,
                check_feeds=feeds,
                source=args.output,
                outputs=outputs,
            )
            data["ir"] = {"path": args.ir, "check": check.to_dict() if check else None}
        if args.save_plan:
            outputs.add_text(args.save_plan, result.plan.to_json())
        if args.compare_openvino:
            from .openvino_pass import run_openvino_pruning

            data["openvino_pass"] = run_openvino_pruning(args.model, seed=args.seed, input_shapes=ov_shapes)
            data["openvino_pass"].pop("layers_changed", None)
        if args.bench and args.quantize:
            from .cli_quantize import bench_chain

            data["benchmark"] = bench_chain(
                args, result.model, int8_path, ov_shapes, progress and (lambda d, t: progress("benchmark", d, t))
            )
        elif args.bench:
            from .bench import benchmark, spread_warning

            timings = benchmark(
                [args.model, outputs.model_path(args.output)],
                input_shapes=ov_shapes,
                progress=progress and (lambda d, t: progress("benchmark", d, t)),
            )
            data["benchmark"] = [{**t.to_dict(), "warning": spread_warning(timings[0], t)} for t in timings]
            data["benchmark"][1]["path"] = args.output  # timed where it was staged
        if not (args.quiet and not args.markdown and not args.plot and not args.report):
            data = {**result.report.to_dict(words="cli"), **data}
        from .cli_paths import shown_paths

        data = shown_paths(data, getattr(args, "stdout_model", None))  # -o -: the model's path shown as '-'
        if args.markdown:
            from .render import to_markdown

            outputs.add_text(args.markdown, to_markdown(data))
        if args.plot:
            from .render import plot_report

            outputs.add_written(args.plot, lambda staged: plot_report(data, staged))
        if args.report:
            from .render import json_text

            outputs.add_text(args.report, json_text(data, indent=2))
        outputs.commit()
    from .cli_paths import say_unused_data_file

    say_unused_data_file(args)
    if not args.quiet:
        from .cli_text import format_report

        print(format_report(data))
    return 0


def _latency_settings(args: argparse.Namespace):
    """The deployment the latency is measured in; its options only mean something with a
    latency target, and the target cannot go with a given plan or int8 quantization."""
    from .cli_latency import settings_from_args
    from .errors import UsageError
    from .latency import LatencySettings

    settings = settings_from_args(args)
    if args.latency_target is None:
        default = LatencySettings()
        given = [
            k
            for k in ("backend", "batch", "threads", "hint", "precision")
            if getattr(settings, k) != getattr(default, k)
        ]
        if given:
            flags = ", ".join(f"--{k}" for k in given)
            raise UsageError(f"{flags}: how the latency is measured, only with --latency-target F")
        return settings
    for flag, on in (("--plan", args.plan), ("--quantize", args.quantize)):
        if on:
            why = (
                "a given plan is applied as it is"
                if flag == "--plan"
                else "the latency measured is the float model's, not the int8 one's"
            )
            raise UsageError(f"--latency-target cannot go with {flag}: {why}")
    return settings


def _static_shapes(
    model: str, given: Mapping[str, tuple[int, ...]], inputs: str | None, calibration: str | None, what: str
) -> dict:
    """Static shapes for OpenVINO: --input-shape, else one sample of --inputs or a calibration
    .npz; a dynamic batch alone becomes 1. Any other dynamic dimension left is a usage error
    naming the input, before anything runs."""
    import onnx

    from .errors import UsageError

    try:
        proto = onnx.load(model, load_external_data=False)
    except Exception:
        return dict(given)  # not readable: prune's loader says why, in its words
    from .shapes import batch_filled, data_input_shapes, input_dims, input_shape_hint, shape_text

    shapes = data_input_shapes(proto, (inputs, calibration), given)
    inits = {i.name for i in proto.graph.initializer}
    missing = []  # every input still dynamic: all said at once, not one per run
    for vi in proto.graph.input:
        if vi.name in inits or vi.name in shapes:
            continue
        shape = batch_filled(vi.name, input_dims(vi), {}, model)
        if None in shape:
            missing.append((vi.name, shape))
    if len(missing) == 1:
        name, shape = missing[0]
        raise UsageError(
            f"{model}: input {name!r} dimension {shape.index(None)} is dynamic and {what} needs a static "
            f"shape; give --input-shape {input_shape_hint(name, shape, 'to use')}"
        )
    if missing:
        names = ", ".join(repr(n) for n, _ in missing)
        flags = " ".join(f"--input-shape {n}:{shape_text(s, 'd{}')}" for n, s in missing)
        raise UsageError(
            f"{model}: inputs {names} have dynamic dimensions and {what} needs static shapes; give {flags} "
            "with each d<i> the size of that input's dimension i to use"
        )
    return shapes
