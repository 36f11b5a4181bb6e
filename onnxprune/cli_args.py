"""The command line's arguments: one parser, every sub-command's options (cli.py runs them)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .cli_common import progress_option

__all__ = ["EXIT_CODES", "build_parser", "latency_options"]


def latency_options(p: argparse.ArgumentParser) -> None:
    """How the user deploys, for latency measurement (onnxprune.latency.LatencySettings)."""
    g = p.add_argument_group("deployment (latency is measured as deployed)")
    g.add_argument("--backend", choices=("openvino", "onnxruntime"), default="openvino", help="runtime (CPU)")
    g.add_argument(
        "--batch", type=int, default=1, help="batch size (default 1; needs a dynamic batch if not the model's)"
    )
    g.add_argument("--threads", type=int, help="inference threads (default: the runtime's choice)")
    g.add_argument("--hint", choices=("latency", "throughput"), default="latency", help="OpenVINO performance hint")
    g.add_argument(
        "--precision",
        choices=("f32", "bf16", "f16"),
        default="f32",
        help="OpenVINO inference precision (default f32; the CPU plugin would pick bf16 where the CPU has it)",
    )


# For scripts: what each exit status means, in every command's --help (cli.main maps the errors).
EXIT_CODES = (
    "exit codes: 0 success; 1 verification failed (nothing written); 2 bad input or usage (one line on "
    "stderr naming the file and the reason; no output left); 3 internal error (a bug; ONNXPRUNE_DEBUG=1 "
    "for a traceback); 130 interrupted. Output: the human report on stdout (none with -q), errors on stderr; "
    "machine-readable results go to the files of --report / --json ('-': to stdout, alone, once the run succeeded)."
)


# --rules, on every command that analyses channels (prune, analyze, explain, sensitivity).
RULES_HELP = (
    "rules for your own ops (see README 'Rules for your own ops'): NAME is a RuleRegistry, a rule, a rule class, "
    "a list of rules or a function f(registry) that extends the default registry; also 'rules' in a --config mapping"
)


def fraction(text: str) -> float:
    """A fraction option's value (--ratio, --macs-target, --min-fidelity, ...): a number; a
    percentage ('50%') is refused with the fraction to give, as 50 is by the config's checks
    (not read as 0.5: in --max-drop a '%' means relative to the original's value)."""
    from .option_checks import percent_fraction

    share = percent_fraction(text)
    if share is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is a percentage; it takes a fraction: did you mean {share:g}?")
    return float(text)


fraction.__name__ = "float"  # argparse's "invalid float value: 'x'" for what is not a number


class _Parser(argparse.ArgumentParser):
    """argparse's, with its errors on one line: a mistyped value (--macs-target 50%) printed the
    whole 35-line usage of prune above the one line that said what was wrong."""

    _given: tuple[str, ...] = ()  # the arguments of the last parse_known_args, for error()'s hint

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        self._given = tuple(args) if args is not None else ()
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._output_hint(message)} (see {self.prog} --help)\n")

    def _output_hint(self, message: str) -> str:
        """'prune m.onnx out.onnx' (the output as a second positional, as cp takes it) said only
        that -o is required: the hint names the -o to give."""
        if "-o/--output" not in message:
            return ""
        files = [a for a in self._given if not a.startswith("-") and a.lower().endswith((".onnx", ".xml"))]
        return f": did you mean -o {files[1]}?" if len(files) == 2 else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="onnxprune",
        description="Remove convolution filters (output channels) straight from ONNX models.",
        epilog=EXIT_CODES,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="input .onnx file (never modified)")
        p.add_argument(
            "--input-shape",
            action="append",
            default=[],
            metavar="NAME:d0,d1,...",
            help="static shape for an input with dynamic dimensions (repeatable); a dynamic batch needs none",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
        p.add_argument("--rules", metavar="FILE.py:NAME|module:NAME", help=RULES_HELP)

    p = sub.add_parser("prune", help="remove channels and write the pruned model")
    common(p)
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument(
        "--criterion",
        default=None,
        help="zero (provably constant channels, exact), l1, l2, fpgm, random, kmeans, bn-gamma, apoz, mean-activation, reconstruction, contribution; "
        "default: contribution for a --min-fidelity / --max-drop / --validate search with --calibration and without "
        "--reconstruct / --recalibrate, --latency-target and --compensation none|data-free; l2 with any other budget (--ratio, --macs-target, "
        "--latency-target, --config with sparsity); else zero",
    )
    b = p.add_argument_group("budget (criteria other than zero)")
    b.add_argument(
        "--ratio", type=fraction, help="fraction of each layer's output channels to remove (with --global: of all)"
    )
    b.add_argument(
        "--global", dest="global_ranking", action="store_true", help="rank the channel groups of all layers together"
    )
    b.add_argument("--macs-target", type=fraction, metavar="F", help="remove until MACs <= F x the original's")
    b.add_argument("--round-to", type=int, default=1, metavar="N", help="keep channel counts that are multiples of N")
    b.add_argument(
        "--exclude", action="append", default=[], metavar="REGEX", help="never prune layers whose node name matches"
    )
    b.add_argument(
        "--config",
        metavar="FILE",
        help="JSON or YAML list of {op_types, op_names, sparsity, exclude} entries (or a mapping: config_list, rules)",
    )
    b.add_argument(
        "--calibration",
        metavar="C.npz|FOLDER",
        help="calibration inputs (.npz keyed by input name, or a folder of images with --preprocess): data criteria, "
        "compensation, the --min-fidelity / --max-drop / --validate search, --reconstruct, --recalibrate; without "
        "--inputs every 4th sample is held out to measure the fidelity",
    )
    b.add_argument(
        "--calibration-limit",
        type=int,
        default=64,
        metavar="N",
        help="read at most N calibration samples (default 64); a reliable --min-fidelity F needs about 3/(1-F) of them",
    )
    b.add_argument(
        "--compensation",
        default="auto",
        choices=("auto", "none", "data-free", "calibration"),
        help="fold the removed channels' expected value into the readers' biases (auto: calibration if given, else data-free)",
    )
    b.add_argument(
        "--min-fidelity",
        type=fraction,
        metavar="F",
        help="largest MACs cut whose fidelity on the calibration inputs stays >= F (per-layer ratios from measured sensitivity)",
    )
    b.add_argument(
        "--fidelity-confidence",
        type=fraction,
        default=0.95,
        metavar="C",
        help="top-1 / CTC / detection outputs: the search keeps a plan when a lower bound at confidence C of their agreement on "
        "unseen inputs (bootstrap over the calibration samples) stays >= the fidelity floor (default 0.95; 0.5: the "
        "point estimate)",
    )
    b.add_argument(
        "--fidelity-batch",
        type=int,
        metavar="N",
        help="with --min-fidelity F: keep a plan only if a batch of N other inputs (the size of the batch you validate "
        "on) is predicted to read >= F on its top-1 / CTC / detection outputs in at least C (--fidelity-confidence) of "
        "such batches, their agreement taken at its lower bound (binomial); continuous outputs are judged as without it",
    )
    b.add_argument(
        "--validate",
        metavar="FILE.py:function|module:function",
        help="your validation function: fn(candidate) -> float, higher is better, on your own data (candidate.path, "
        "candidate.run(feeds)); it judges the search (the largest cut within --max-drop of the original's value)",
    )
    b.add_argument(
        "--max-drop",
        metavar="D|D%",
        help="allowed drop of the validated metric (your --validate function, else the fidelity): absolute D or D%% of the "
        "original's value; the pruning budget unless --ratio/--macs-target/--min-fidelity/--config decide, and with "
        "--quantize int8 also the int8 accuracy control (default with --validate: 0.01)",
    )
    b.add_argument(
        "--reconstruct",
        action="store_true",
        help="refit the readers of removed channels by least squares on calibration data",
    )
    b.add_argument(
        "--reconstruct-from",
        choices=("original", "pruned"),
        default="original",
        help="with --reconstruct: refit each reader on the original model's activations (default, each reader "
        "independently) or on the pruned model's, shallowest readers first (sequential: later layers absorb what "
        "earlier ones lost)",
    )
    b.add_argument(
        "--recalibrate",
        action="store_true",
        help="correct the kept channels' mean and variance after pruning to the original's on calibration data",
    )
    b.add_argument(
        "--fidelity-metric",
        action="append",
        default=[],
        metavar="OUTPUT=METRIC",
        help="fidelity metric of an output ('*' for all): top1, ctc[:blank=K], dense[:threshold=T], "
        "detection[:score=S,iou=I,nms=J] or cosine (default: detected from the output's shape and values)",
    )
    b.add_argument(
        "--preprocess",
        metavar="SPEC",
        help="calibration images: imagenet, raw, or size=HxW,scale=S,mean=a/b/c,std=a/b/c,order=RGB|BGR,layout=NCHW|NHWC",
    )
    lat = p.add_argument_group("latency budget (measured on this machine, as deployed)")
    lat.add_argument(
        "--latency-target",
        type=fraction,
        metavar="F",
        help="remove until the measured latency is <= F x the original's (a per-unit latency table plans it, "
        "interleaved A/B runs confirm it); with --min-fidelity the fidelity floor wins",
    )
    lat.add_argument(
        "--latency-evaluations",
        type=int,
        metavar="N",
        help="with --calibration: fidelity evaluations of combined plans spent ordering the moves by their cost "
        "on the plan they join (interactions between units); default 2 per unit (16-160), with --reconstruct/"
        "--recalibrate one more per unit (each refits the model; the --min-fidelity floor's count too); "
        "0: each unit alone",
    )
    lat.add_argument(
        "--latency-evaluation-seconds",
        type=float,
        metavar="S",
        help="a time budget on those evaluations besides the count (default: none, so the plan does not depend "
        "on the machine's speed or load)",
    )
    lat.add_argument("--timer", help=argparse.SUPPRESS)  # tests: MODULE:FACTORY of a stand-in timer
    latency_options(p)  # how the latency is measured (only with --latency-target)
    b.add_argument("--save-plan", metavar="PLAN.json", help="write the plan (groups removed, members, scores) as JSON")
    b.add_argument("--plan", metavar="PLAN.json", help="apply this plan instead of planning")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    progress_option(p)
    p.add_argument("--inputs", metavar="FILE.npz", help="verify on these inputs (arrays keyed by input name)")
    p.add_argument("--seed", type=int, default=0, help="seed of random scores and random verification inputs")
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="verification: max abs diff allowed, relative to each output's max abs value, instead of the default "
        "noise-aware limit (max of 1e-5 x scale and 8 x the original's own float-noise floor)",
    )
    p.add_argument("--report", metavar="R.json", help="write the report as JSON")
    p.add_argument(
        "--external-data", action="store_true", help="write the weights to OUT.onnx.data (automatic above 2 GB)"
    )
    o = p.add_argument_group("OpenVINO hand-off and reports")
    o.add_argument(
        "--ir", metavar="OUT.xml", help="also convert the pruned model to OpenVINO IR (checked against onnxruntime)"
    )
    precision = o.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="IR weights in FP16")
    precision.add_argument("--fp32", action="store_true", help="IR weights in FP32 (the default)")
    o.add_argument(
        "--static",
        action="store_true",
        help="bake static shapes into the IR: --input-shape, else the shape checked (a dynamic batch: 1) (default: keep dynamic dimensions, check at that shape)",
    )
    o.add_argument(
        "--compare-openvino", action="store_true", help="also run OpenVINO's own pruning pass on the input and compare"
    )
    o.add_argument("--bench", action="store_true", help="benchmark original and pruned with OpenVINO on the CPU")
    o.add_argument("--markdown", metavar="R.md", help="write the report as Markdown")
    o.add_argument("--plot", metavar="R.png", help="plot per-layer channels (and latency with --bench)")
    from .cli_quantize import add_prune_quantize_options, add_quantize_command

    add_prune_quantize_options(p)
    add_quantize_command(sub)

    c = sub.add_parser(
        "convert", help="convert an ONNX model to OpenVINO IR (.xml + .bin), checked against onnxruntime"
    )
    c.add_argument("model", help="input .onnx file")
    c.add_argument("-o", "--output", required=True, metavar="OUT.xml", help="IR path; the .bin is written beside it")
    c.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME:d0,d1,...", help="static input shape (repeatable)"
    )
    cp = c.add_mutually_exclusive_group()
    cp.add_argument("--fp16", action="store_true", help="weights in FP16")
    cp.add_argument("--fp32", action="store_true", help="weights in FP32 (the default)")
    c.add_argument(
        "--static",
        action="store_true",
        help="bake static shapes into the IR: --input-shape, else the shape checked (a dynamic batch: 1) (default: keep the model's dynamic dimensions and check at those shapes)",
    )
    c.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        help="check: max abs diff allowed relative to each output's scale (default 1e-4 for FP32, 1e-2 for FP16 weights, 0.15 for quantized models: OpenVINO runs them in int8)",
    )
    c.add_argument("--no-verify", action="store_true", help="skip the comparison with onnxruntime")
    c.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    bn = sub.add_parser("bench", help="A/B latency and throughput of ONNX models or IRs on the CPU")
    bn.add_argument("models", nargs="+", help="ONNX files or IR .xml files (ratios are to the first)")
    bn.add_argument("--backend", choices=("openvino", "onnxruntime"), default="openvino")
    bn.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    bn.add_argument("--runs", type=int, default=5, help="timed runs per model per round (default 5)")
    bn.add_argument("--warmup", type=int, default=3, help="untimed runs per model first (default 3)")
    bn.add_argument(
        "-t",
        "--time",
        type=float,
        metavar="SECONDS",
        help="time-based: interleaved rounds until each model has run this long (instead of --rounds)",
    )
    bn.add_argument(
        "--precision",
        choices=("f32", "bf16", "f16"),
        help="OpenVINO inference precision (INFERENCE_PRECISION_HINT; default: the CPU plugin's choice, bf16 where the CPU has it)",
    )
    bn.add_argument(
        "--inputs",
        metavar="X.npz",
        help="time on the first sample of these arrays (keyed by input name; their shapes are the input shapes)",
    )
    bn.add_argument("--throughput-seconds", type=float, default=2.0, help="time spent measuring throughput per model")
    bn.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME:d0,d1,...", help="static input shape (repeatable)"
    )
    bn.add_argument("--json", metavar="B.json", help="write the timings as JSON")
    bn.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    progress_option(bn)

    lt = sub.add_parser(
        "latency-table",
        help="measure each prunable unit's latency at a few channel counts on this machine (cached) and show the table",
    )
    lt.add_argument("model", help="input .onnx file (never modified)")
    latency_options(lt)
    lt.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME:d0,d1,...", help="static input shape (repeatable)"
    )
    lt.add_argument("--rules", metavar="FILE.py:NAME|module:NAME", help=RULES_HELP + " (as prune's: same units)")
    lt.add_argument(
        "--config", metavar="FILE", help="prune's --config file: its rules (the layer entries do not change the table)"
    )
    lt.add_argument("--json", metavar="T.json", help="write the table as JSON")
    lt.add_argument("--plot", metavar="T.png", help="plot each unit's measured points and fitted curve")
    lt.add_argument("--no-cache", action="store_true", help="measure again even if a cached table matches")
    lt.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache root (default $ONNXPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/onnxprune, else ~/.cache/onnxprune)",
    )
    lt.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per unit (default 7)")
    lt.add_argument(
        "--seconds-per-unit", type=float, default=1.0, help="timing spent on each unit's variants (default 1.0)"
    )
    lt.add_argument("--timer", help=argparse.SUPPRESS)  # tests: MODULE:FACTORY of a stand-in timer
    lt.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    progress_option(lt)

    se = sub.add_parser("sensitivity", help="fidelity after removing 10/25/50%% of each unit of tied layers alone")
    se.add_argument("model", help="input .onnx file")
    se.add_argument(
        "--calibration", required=True, metavar="C.npz|FOLDER", help="calibration inputs (.npz or a folder of images)"
    )
    se.add_argument("--preprocess", metavar="SPEC", help="for a folder of images (see prune --preprocess)")
    se.add_argument("--criterion", default="l2", help="ranks the channels within each unit (default l2)")
    se.add_argument("--ratios", default="0.1,0.25,0.5", help="fractions of each unit to try (default 0.1,0.25,0.5)")
    se.add_argument("--compensation", default="auto", choices=("auto", "none", "data-free", "calibration"))
    se.add_argument(
        "--fidelity-metric",
        action="append",
        default=[],
        metavar="OUTPUT=METRIC",
        help="fidelity metric of an output ('*' for all): top1, ctc, dense, detection or cosine (see prune)",
    )
    se.add_argument("--input-shape", action="append", default=[], metavar="NAME:d0,d1,...")
    se.add_argument("--rules", metavar="FILE.py:NAME|module:NAME", help=RULES_HELP)
    se.add_argument(
        "--exclude", action="append", default=[], metavar="REGEX", help="skip layers whose node name matches"
    )
    se.add_argument("--json", metavar="S.json", help="write the table as JSON")
    se.add_argument("--plot", metavar="S.png", help="plot a sensitivity curve per unit")
    se.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    progress_option(se)

    a = sub.add_parser("analyze", help="show the channel groups and why channels are pinned")
    common(a)
    a.add_argument(
        "--json", metavar="R.json", help="write the groups as JSON (with --layers: explain's per-layer JSON)"
    )
    a.add_argument(
        "--layers",
        action="store_true",
        help="per weight-bearing layer: channels, how many each criterion family may remove, why the rest stay (as explain)",
    )

    x = sub.add_parser(
        "explain",
        help="why is this layer not pruned? per layer: channels, removable (zero / lossy), reasons for the rest",
    )
    common(x)
    x.add_argument("--node", action="append", default=[], metavar="NAME", help="explain only this layer (repeatable)")
    x.add_argument("--json", metavar="E.json", help="write the per-layer view as compact JSON")
    for command in sub.choices.values():  # every command's --help, cli_quantize's too
        command.epilog = EXIT_CODES
    return parser
