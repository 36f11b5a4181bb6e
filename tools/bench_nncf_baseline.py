#!/usr/bin/env python3
"""Baseline: what onnxprune and OpenVINO's pass do today with real NNCF exports.

Reads the files written by tools/export_nncf.py (``<net>_{float,fq,qdq,qdq_strip}.onnx``, with
``digits_test.npz`` and ``accuracy.json``) and, for each file:

* checks the patterns issue 11 describes, independently of onnxprune (onnx + numpy; the
  FakeQuantize outputs of the weights are computed by OpenVINO, f32): BatchNormalization
  left unfolded after masked convs, scale/bias (and running statistics) 0 on the pruned
  channels, zero filters before and after their FakeQuantize, per-channel ranges
  ``[C,1,1,1]``, one Constant shared by input_low/output_low, the QDQ weight chain;
* top-1 on the real held-out digits with onnxruntime (where it loads the file) and OpenVINO;
* runs ``python -m onnxprune prune FILE -o OUT --criterion zero --report R.json`` (the
  onnxprune on PYTHONPATH) and records exit code, error line, channels removed and
  verification, and the pruned model's top-1; then the same with ``--criterion l2 --ratio 0.25``;
* runs OpenVINO's own pruning pass (``onnxprune.openvino_pass.run_openvino_pruning``).

Writes ``benchmarks/nncf_exports_baseline.json`` and the tables of
``benchmarks/nncf_exports_baseline.md`` (text below its ``<!-- notes -->`` line is kept).

With ``--results`` it measures what onnxprune does now instead, per file, and writes
``benchmarks/nncf_exports.json`` / ``benchmarks/nncf_exports.md``: ``prune --criterion zero
--inputs digits_test.npz --compare-openvino`` (exit, channels removed against the filters NNCF
zeroed and against OpenVINO's pass, which runtime and precision verified it and how far the
outputs moved), then the unpruned and the pruned model run independently on all held-out
digits in OpenVINO (CPU, f32 inference precision: this CPU defaults to bf16) and in
onnxruntime (FakeQuantize files as onnxprune's standard-ops expansion, which onnxruntime
runs; QDQ files on the float emulation and on the optimised, deployed path): top-1 before
and after, max output difference, samples past 1e-5 x scale; and ``convert`` / ``prune --ir``
exit codes.

    . /work/venv/bin/activate
    PYTHONPATH=$PWD python tools/bench_nncf_baseline.py [--exports /work/nncf_exports] [--results]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
NETS = ("digits", "resnet", "mobilenet")
FORMS = ("float", "fq", "qdq", "qdq_strip")
NOTES = "<!-- notes -->"


class Graph:
    """Constants (initializers and Constant nodes, through Identity), producers and consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                self.consumers[i].append(n)

    def resolve(self, name: str) -> str:
        while name not in self.consts and name in self.producer and self.producer[name].op_type == "Identity":
            name = self.producer[name].input[0]
        return name

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(self.resolve(name))

    def op(self, name: str) -> str:
        p = self.producer.get(name)
        return "input" if p is None else p.op_type


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _zero_rows(w: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.any(w.reshape(len(w), -1) != 0, axis=1))


def fq_weight_outputs(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The values of the given (weight FakeQuantize) tensors, computed by OpenVINO in f32."""
    import openvino as ov

    if not names:
        return {}
    model = onnx.load(path)
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.onnx"
        onnx.save(model, p)
        compiled = ov.Core().compile_model(ov.convert_model(str(p)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        feeds = {i.get_any_name(): np.zeros([int(d) for d in i.get_shape()], np.float32) for i in compiled.inputs}
        res = compiled(feeds)
        return {name: np.asarray(res[compiled.output(name)]) for name in names}


def fq_reference(
    x: np.ndarray, il: np.ndarray, ih: np.ndarray, ol: np.ndarray, oh: np.ndarray, levels: int
) -> np.ndarray:
    """FakeQuantize's reference formula, evaluated in float32 the way an expansion into
    standard ONNX ops (Sub, Div, Mul, Round, Add) would run it."""
    f = np.float32
    q = np.round((x - il) / (ih - il) * f(levels - 1))
    y = q / f(levels - 1) * (oh - ol) + ol
    return np.where(x <= np.minimum(il, ih), ol, np.where(x > np.maximum(il, ih), oh, y)).astype(np.float32)


def patterns(path: Path) -> dict[str, Any]:
    """Structural facts of one export, for the patterns issue 11 lists."""
    model = onnx.load(path)
    g = Graph(model)
    ops = collections.Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}") for n in model.graph.node
    )
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    facts: dict[str, Any] = {
        "ops": dict(sorted(ops.items())),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "input": {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input},
        "convs": len(convs),
        "depthwise_convs": sum(1 for n in convs if _group(n) > 1),
    }
    try:
        onnx.checker.check_model(model, full_check=True)
        facts["checker"] = "ok"
    except Exception as e:
        facts["checker"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"

    # weights: how each conv gets them, and which filters are exactly zero in the stored constant
    layers = []
    fq_names = []
    for n in convs:
        src, chain = n.input[1], []
        while g.const(src) is None and src in g.producer:
            p = g.producer[src]
            chain.append(p.op_type)
            src = p.input[0]
        w = g.const(src)
        stored = g.resolve(src)
        store = "initializer" if any(i.name == stored for i in model.graph.initializer) else "Constant node"
        rec: dict[str, Any] = {"node": n.name, "group": _group(n), "weight_chain": "<-".join(chain + [store])}
        rec["filters"] = int(w.shape[0]) if w is not None else None
        rec["zero_filters"] = _zero_rows(w).tolist() if w is not None else None
        if chain[:1] == ["FakeQuantize"]:
            fq = g.producer[n.input[1]]
            rec["fq_range_shapes"] = [list(g.const(i).shape) for i in fq.input[1:5]]
            rec["fq_shared_low_high"] = fq.input[1] == fq.input[3] and fq.input[2] == fq.input[4]
            levels = next(int(a.i) for a in fq.attribute if a.name == "levels")
            lo, hi = g.const(fq.input[1]), g.const(fq.input[2])
            rec["fq_levels"], rec["fq_low_over_high"] = levels, sorted({round(float(v), 6) for v in (lo / hi).ravel()})
            if w is not None and len(rec["zero_filters"]):
                ref = fq_reference(w, *(g.const(i) for i in fq.input[1:5]), levels)[rec["zero_filters"]]
                rec["fq_reference_zero_filter_max_abs"] = float(np.abs(ref).max())
                rec["fq_reference_zero_filters_still_zero"] = int(
                    (~np.any(ref.reshape(len(ref), -1) != 0, axis=1)).sum()
                )
            fq_names.append(n.input[1])
        if chain[:2] == ["DequantizeLinear", "QuantizeLinear"]:
            dq = g.producer[n.input[1]]
            rec["qdq_axis"] = next((int(a.i) for a in dq.attribute if a.name == "axis"), 1)
            rec["qdq_scale_shape"] = list(g.const(dq.input[1]).shape)
            rec["qdq_zero_point"] = f"{g.const(dq.input[2]).dtype}{list(g.const(dq.input[2]).shape)}"
            rec["qdq_zero_point_via_identity"] = g.op(dq.input[2]) == "Identity"
        # the BatchNormalization right after the conv (possibly behind nothing else)
        readers = g.consumers[n.output[0]]
        bn = readers[0] if len(readers) == 1 and readers[0].op_type == "BatchNormalization" else None
        if bn is not None:
            vals = [g.const(i) for i in bn.input[1:5]]
            rec["bn"] = {k: np.flatnonzero(v == 0).tolist() for k, v in zip(("scale", "bias", "mean", "var"), vals)}
        layers.append(rec)
    if fq_names:
        out = fq_weight_outputs(path, fq_names)
        for rec, name in zip((r for r in layers if "fq_range_shapes" in r), fq_names):
            w = out[name]
            rows = rec["zero_filters"]
            if rows:
                vals = w[rows].ravel()
                rec["fq_zero_filter_max_abs"] = float(np.abs(vals).max())
                rec["fq_zero_filter_values"] = sorted({float(v) for v in vals})[:4]
            rec["fq_zero_filters_after"] = _zero_rows(w).tolist()
    facts["layers"] = layers

    # activation FakeQuantize / QuantizeLinear: per-tensor or per-channel, shared Constants
    acts = []
    for n in model.graph.node:
        if n.op_type == "FakeQuantize" and g.const(n.input[0]) is None:
            shapes = [list(g.const(i).shape) for i in n.input[1:5]]
            feeds = [
                f"{c.op_type}(group={_group(c)})" if c.op_type == "Conv" else c.op_type
                for c in g.consumers[n.output[0]]
            ]
            acts.append(
                {
                    "node": n.name,
                    "range_shapes": shapes,
                    "shared_low": n.input[1] == n.input[3],
                    "shared_high": n.input[2] == n.input[4],
                    "readers": feeds,
                }
            )
        if n.op_type == "QuantizeLinear" and g.const(n.input[0]) is None:
            acts.append(
                {
                    "node": n.name,
                    "scale_shape": list(g.const(n.input[1]).shape),
                    "zero_point": str(g.const(n.input[2]).dtype),
                }
            )
    facts["activation_quantizers"] = acts
    # Constants used by more than one FakeQuantize (across nodes)
    users: dict[str, set[str]] = collections.defaultdict(set)
    for n in model.graph.node:
        if n.op_type == "FakeQuantize":
            for i in n.input[1:5]:
                users[i].add(n.name)
    facts["fq_constants_shared_across_nodes"] = sum(1 for v in users.values() if len(v) > 1)
    facts["identity_nodes"] = ops.get("Identity", 0)
    return facts


def accuracy(path: Path, x: np.ndarray, y: np.ndarray, runtime: str) -> float | str:
    """Top-1 on the held-out digits, one image at a time (the exports have batch 1)."""
    try:
        if runtime == "onnxruntime":
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            pred = [int(np.argmax(sess.run(None, {name: x[i : i + 1]})[0])) for i in range(len(x))]
        else:
            import openvino as ov

            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            pred = [int(np.argmax(compiled(x[i : i + 1])[0])) for i in range(len(x))]
    except Exception as e:
        return f"cannot run: {type(e).__name__}"
    return float((np.asarray(pred) == y).mean())


def run_onnxprune(path: Path, tmp: Path, extra: tuple[str, ...] = ("--criterion", "zero")) -> dict[str, Any]:
    tag = "_".join(a.strip("-") for a in extra)
    out, report = tmp / f"{path.stem}_{tag}.onnx", tmp / f"{path.stem}_{tag}.json"
    cmd = [sys.executable, "-m", "onnxprune", "prune", str(path), "-o", str(out), *extra, "--report", str(report)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in (p.stderr.strip().splitlines() or [""])]
    rec: dict[str, Any] = {
        "exit": p.returncode,
        "error_line": lines[-1] if p.returncode else "",
        "traceback": "Traceback" in p.stderr,
    }
    if report.exists():
        r = json.loads(report.read_text())
        v = r.get("verification") or {}
        rec.update(
            channels_total=r["channels_total"],
            channels_removed=r["channels_removed"],
            macs_before=r["macs_before"],
            macs_after=r["macs_after"],
            verified=v.get("passed"),
            max_abs_diff=v.get("max_abs_diff"),
            scale=v.get("scale"),
            kept_reasons=collections.Counter(
                reason.split(" where ")[0].split(" '")[0] for grp in r["kept_groups"] for reason in grp["reasons"]
            ).most_common(),
        )
        layers = r.get("layers") or []
        rec["layers_changed"] = {
            lay["name"]: [lay["before"], lay["after"]]
            for lay in layers
            if isinstance(lay, dict) and lay.get("before") != lay.get("after")
        }
    rec["output_written"] = out.exists()
    if out.exists():
        rec["pruned_path"] = str(out)
    return rec


# other commands a user would try on the same file: (label, arguments after the model path)
PROBES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("analyze", ("analyze",)),
    ("prune zero --no-verify", ("prune", "--criterion", "zero", "--no-verify")),
    ("prune l2 0.25", ("prune", "--criterion", "l2", "--ratio", "0.25")),
    ("prune l2 0.25 --no-verify", ("prune", "--criterion", "l2", "--ratio", "0.25", "--no-verify")),
    ("prune zero --ir", ("prune", "--criterion", "zero", "--ir", "IR")),
    ("convert", ("convert",)),
)


def probe(path: Path, tmp: Path, args: tuple[str, ...]) -> dict[str, Any]:
    """Exit code and the last line a user sees; outputs go to a scratch folder."""
    cmd, rest = [sys.executable, "-m", "onnxprune", args[0], str(path)], list(args[1:])
    if args[0] == "prune":
        rest = ["-o", str(tmp / f"probe_{path.stem}.onnx")] + rest
    if args[0] == "convert":
        rest = ["-o", str(tmp / f"probe_{path.stem}.xml")] + rest
    rest = [str(tmp / f"probe_{path.stem}_ir.xml") if a == "IR" else a for a in rest]
    p = subprocess.run(cmd + rest, capture_output=True, text=True, timeout=600, check=False)
    text = (p.stderr.strip() or p.stdout.strip()).splitlines()
    line = text[-1] if text else ""
    if args[0] == "analyze" or (p.returncode == 0 and not p.stderr.strip()):
        line = (p.stdout.strip().splitlines() or [""])[0] if args[0] == "analyze" else ""
    if args[0] == "prune" and p.returncode == 0:
        first = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("output channels")]
        line = " ".join(first[0].split()) if first else line
    return {
        "exit": p.returncode,
        "line": line.replace(str(path), "FILE").replace(str(tmp), "TMP"),
        "traceback": "Traceback" in p.stderr,
    }


def openvino_pass(path: Path) -> dict[str, Any]:
    from onnxprune.openvino_pass import run_openvino_pruning

    try:
        r = run_openvino_pruning(str(path), seed=0, check=True)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {
        k: r.get(k)
        for k in (
            "error",
            "error_stage",
            "channels_total",
            "conv_channels_total",
            "channels_removed",
            "conv_channels_removed",
            "macs_before",
            "macs_after",
            "layers_changed",
            "verification",
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", default="/work/nncf_exports")
    parser.add_argument(
        "--results", action="store_true", help="measure today's onnxprune (nncf_exports.md), not the baseline"
    )
    parser.add_argument("--out-json", default=None)
    parser.add_argument("--out-md", default=None)
    args = parser.parse_args()
    stem = "nncf_exports" if args.results else "nncf_exports_baseline"
    args.out_json = args.out_json or str(ROOT / "benchmarks" / f"{stem}.json")
    args.out_md = args.out_md or str(ROOT / "benchmarks" / f"{stem}.md")
    if args.results:
        results_main(Path(args.exports), Path(args.out_json), Path(args.out_md))
        return
    exports = Path(args.exports)
    data = np.load(exports / "digits_test.npz")
    x, y = data["input"], data["labels"]
    torch_acc = json.loads((exports / "accuracy.json").read_text())
    results: dict[str, Any] = {"torch_accuracy": torch_acc, "files": {}}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for net in NETS:
            for form in FORMS:
                path = exports / f"{net}_{form}.onnx"
                rec: dict[str, Any] = {"size": path.stat().st_size, "patterns": patterns(path)}
                rec["top1_onnxruntime"] = accuracy(path, x, y, "onnxruntime")
                rec["top1_openvino"] = accuracy(path, x, y, "openvino")
                rec["onnxprune"] = run_onnxprune(path, tmp)
                pruned = rec["onnxprune"].pop("pruned_path", None)
                if pruned:
                    rec["onnxprune"]["top1_pruned_onnxruntime"] = accuracy(Path(pruned), x, y, "onnxruntime")
                l2 = run_onnxprune(path, tmp, ("--criterion", "l2", "--ratio", "0.25"))
                l2.pop("pruned_path", None)
                rec["onnxprune_l2_25"] = {
                    k: l2.get(k)
                    for k in (
                        "exit",
                        "error_line",
                        "traceback",
                        "channels_removed",
                        "verified",
                        "max_abs_diff",
                        "scale",
                    )
                }
                rec["probes"] = {label: probe(path, tmp, args) for label, args in PROBES}
                rec["openvino_pass"] = openvino_pass(path)
                results["files"][path.name] = rec
                print(path.name, json.dumps({k: rec[k] for k in ("onnxprune",)}, default=str)[:300], flush=True)
    Path(args.out_json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_md(results, Path(args.out_md))


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}" if v <= 1 else f"{v:.3g}"
    return str(v)


def write_md(results: dict[str, Any], path: Path) -> None:
    notes = ""
    if path.exists() and NOTES in path.read_text():
        notes = path.read_text().split(NOTES, 1)[1]
    lines = [
        "# NNCF exports: baseline (issue 11 item 1)",
        "",
        "Real NNCF 2.19 exports made by `tools/export_nncf.py` (filter_pruning, pruning_target 0.4, with",
        "and without int8 quantization; three digits CNNs x float / FakeQuantize / QDQ, plus the QDQ",
        "route through `nncf.strip`) and what",
        "today's onnxprune (`prune --criterion zero`) and OpenVINO's pass do with them. Written by",
        "`tools/bench_nncf_baseline.py`; raw data in `nncf_exports_baseline.json`.",
        "",
        "## onnxprune and OpenVINO's pass",
        "",
        "| file | KB | top-1 ort / OV | onnxprune exit | channels removed | verified (max diff / scale) | pruned top-1 | error line | OpenVINO pass: removed / total | OV exact | `l2 --ratio 0.25`: exit, removed, verified |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rec in results["files"].items():
        op, ov, l2 = rec["onnxprune"], rec["openvino_pass"], rec["onnxprune_l2_25"]
        ver = "—"
        if op.get("verified") is not None:
            ver = f"{'yes' if op['verified'] else 'NO'} ({op['max_abs_diff']:.2g} / {op['scale']:.3g})"
        ovv = (ov.get("verification") or {}).get("exact")
        ov_ch = f"{_fmt(ov.get('channels_removed'))} / {_fmt(ov.get('channels_total'))}"
        if ov.get("error"):
            ov_ch += f" (error: {str(ov['error'])[:80]})"
        lines.append(
            f"| {name} | {rec['size'] // 1024} | {_fmt(rec['top1_onnxruntime'])} / {_fmt(rec['top1_openvino'])} "
            f"| {op['exit']}{' (traceback)' if op['traceback'] else ''} "
            f"| {_fmt(op.get('channels_removed'))} / {_fmt(op.get('channels_total'))} | {ver} "
            f"| {_fmt(op.get('top1_pruned_onnxruntime'))} | {op['error_line'][:160].replace('|', '/')} | {ov_ch} | {_fmt(ovv)} "
            f"| {l2['exit']}{' (traceback)' if l2['traceback'] else ''}, {_fmt(l2['channels_removed'])}, {_fmt(l2['verified'])} |"
        )
    lines += [
        "",
        "## Other commands on the same files",
        "",
        "Exit code and the line a user sees (`FILE` = the export, `TMP` = a scratch folder; for a",
        "successful `prune`, its channel line).",
        "",
    ]
    for label, _ in PROBES:
        lines += [f"### `{label}`", "", "| file | exit | line |", "|---|---|---|"]
        for name, rec in results["files"].items():
            pr = rec["probes"][label]
            lines.append(
                f"| {name} | {pr['exit']}{' (traceback)' if pr['traceback'] else ''} | {pr['line'][:220].replace('|', '/')} |"
            )
        lines.append("")
    lines += ["", "Top-1 measured in torch by the export script (held-out digits, 540 images):", ""]
    lines += ["| net | float | pruned | pruned + int8 |", "|---|---|---|---|"]
    for net, a in results["torch_accuracy"].items():
        lines.append(f"| {net} | {a['torch_float']:.4f} | {a['torch_pruned']:.4f} | {a['torch_pruned_int8']:.4f} |")
    lines += ["", "## Patterns, per file", ""]
    for name, rec in results["files"].items():
        p = rec["patterns"]
        lines.append(f"### {name}")
        lines.append("")
        lines.append(
            f"- ops: {', '.join(f'{k} {v}' for k, v in p['ops'].items())}; opsets {p['opset']}; "
            f"input {p['input']}; onnx.checker (full): {p['checker']}"
        )
        lines.append(
            f"- convs {p['convs']} (depthwise {p['depthwise_convs']}); Constants shared by several "
            f"FakeQuantize nodes: {p['fq_constants_shared_across_nodes']}; Identity nodes: {p['identity_nodes']}"
        )
        for lay in p["layers"]:
            bits = [f"w: {lay['weight_chain']}", f"zero filters {len(lay['zero_filters'] or [])}/{lay['filters']}"]
            if "fq_range_shapes" in lay:
                bits.append(
                    f"FQ ranges {lay['fq_range_shapes'][0]}, low/high Constants shared by input and output: {lay['fq_shared_low_high']}"
                )
            if "fq_zero_filter_max_abs" in lay:
                bits.append(f"levels {lay['fq_levels']}, input_low/input_high {lay['fq_low_over_high']}")
                bits.append(
                    f"zero filters after FQ: OpenVINO f32 max |w| {lay['fq_zero_filter_max_abs']:.3g} "
                    f"({len(lay['fq_zero_filters_after'])} exactly zero); reference formula in f32 max |w| "
                    f"{lay['fq_reference_zero_filter_max_abs']:.3g} ({lay['fq_reference_zero_filters_still_zero']} exactly zero)"
                )
            if "qdq_axis" in lay:
                bits.append(
                    f"QDQ axis {lay['qdq_axis']}, scale {lay['qdq_scale_shape']}, zero point {lay['qdq_zero_point']}"
                    f"{' via Identity' if lay['qdq_zero_point_via_identity'] else ''}"
                )
            if "bn" in lay:
                z = set(lay["zero_filters"] or [])
                bn = lay["bn"]
                bits.append(
                    "BN after it: scale=0 "
                    + ("on exactly the zero filters" if set(bn["scale"]) == z else f"on {bn['scale']}")
                    + ", bias=0 "
                    + ("same" if set(bn["bias"]) == z else f"on {bn['bias']}")
                    + f", running mean=0 on {len(bn['mean'])}, var=0 on {len(bn['var'])}"
                )
            else:
                bits.append("no BatchNormalization after it")
            lines.append(f"  - `{lay['node']}` (group {lay['group']}): " + "; ".join(bits))
        acts = p["activation_quantizers"]
        if acts:
            kinds = collections.Counter(
                (
                    f"FakeQuantize ranges {a['range_shapes'][0]}, input_low/output_low shared {a['shared_low']}"
                    if "range_shapes" in a
                    else f"QuantizeLinear scale {a['scale_shape']} zero point {a['zero_point']}"
                )
                for a in acts
            )
            for k, v in kinds.items():
                lines.append(f"  - activations: {v} x {k}")
            dw = [a for a in acts if any("group=" in r and not r.endswith("group=1)") for r in a.get("readers", []))]
            for a in dw:
                lines.append(
                    f"  - activation FakeQuantize before a depthwise conv: `{a['node']}` ranges {a['range_shapes']}, "
                    f"input_low/output_low one Constant: {a['shared_low']}"
                )
        lines.append("")
    path.write_text("\n".join(lines) + "\n" + NOTES + (notes if notes else "\n"))


# -- --results: what onnxprune does now ------------------------------------------------------------


def logits(path: Path, x: np.ndarray, runtime: str) -> np.ndarray:
    """Outputs on every image, one at a time: "openvino" (CPU, f32), "onnxruntime" (graph
    optimisations off; FakeQuantize expanded) or "onnxruntime-optimised" (the deployed path)."""
    if runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate([compiled(x[i : i + 1])[0] for i in range(len(x))])
    import onnxruntime as ort

    from onnxprune.fake_quantize import expand_fake_quantize, has_fake_quantize

    model = onnx.load(path)
    opts = ort.SessionOptions()
    if runtime == "onnxruntime":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = expand_fake_quantize(model).SerializeToString() if has_fake_quantize(model) else str(path)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def independent_check(original: Path, pruned: Path, x: np.ndarray, y: np.ndarray, runtime: str) -> dict[str, Any]:
    before, after = logits(original, x, runtime), logits(pruned, x, runtime)
    diff = np.abs(before - after).max(axis=1)
    scale = float(np.abs(before).max())
    return {
        "top1_before": float((before.argmax(1) == y).mean()),
        "top1_after": float((after.argmax(1) == y).mean()),
        "top1_agreement": float((before.argmax(1) == after.argmax(1)).mean()),
        "max_abs_diff": float(diff.max()),
        "scale": scale,
        "samples": len(x),
        "samples_past_1e-5_scale": int(np.count_nonzero(diff > 1e-5 * scale)),
    }


def zeroed_filters(patterns_rec: dict[str, Any]) -> int:
    """Filters NNCF zeroed in the convs that own their channels (depthwise convs follow theirs)."""
    return sum(len(lay["zero_filters"] or []) for lay in patterns_rec["layers"] if lay["group"] == 1)


def results_main(exports: Path, out_json: Path, out_md: Path) -> None:
    data = np.load(exports / "digits_test.npz")
    x, y = data["input"], data["labels"]
    results: dict[str, Any] = {"files": {}}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for net in NETS:
            for form in FORMS:
                path = exports / f"{net}_{form}.onnx"
                out, report = tmp / f"{path.stem}_pruned.onnx", tmp / f"{path.stem}.json"
                cmd = [
                    sys.executable,
                    "-m",
                    "onnxprune",
                    "prune",
                    str(path),
                    "-o",
                    str(out),
                    "--criterion",
                    "zero",
                    "--inputs",
                    str(exports / "digits_test.npz"),
                    "--compare-openvino",
                    "--report",
                    str(report),
                    "-q",
                ]
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
                rec: dict[str, Any] = {
                    "exit": p.returncode,
                    "error_line": (p.stderr.strip().splitlines() or [""])[-1] if p.returncode else "",
                    "traceback": "Traceback" in p.stderr,
                    "zeroed": zeroed_filters(patterns(path)),
                }
                if report.exists():
                    r = json.loads(report.read_text())
                    v = r.get("verification") or {}
                    q = v.get("quantized") or {}
                    ovp = r.get("openvino_pass") or {}
                    rec.update(
                        channels_total=r["channels_total"],
                        channels_removed=r["channels_removed"],
                        verification={
                            "passed": v.get("passed"),
                            "runtime": v.get("runtime"),
                            "inputs": v.get("inputs"),
                            "max_abs_diff": v.get("max_abs_diff"),
                            "scale": v.get("scale"),
                            "quantized": q or None,
                        },
                        openvino_pass={
                            k: ovp.get(k)
                            for k in (
                                "error",
                                "conv_channels_removed",
                                "conv_channels_total",
                                "channels_removed",
                                "channels_total",
                                "verification",
                            )
                        },
                    )
                if out.exists():
                    runtimes = ["openvino", "onnxruntime"] + (["onnxruntime-optimised"] if "qdq" in form else [])
                    rec["independent"] = {rt: independent_check(path, out, x, y, rt) for rt in runtimes}
                rec["convert_exit"] = probe(path, tmp, ("convert",))["exit"]
                rec["prune_ir_exit"] = probe(path, tmp, ("prune", "--criterion", "zero", "--ir", "IR"))["exit"]
                results["files"][path.name] = rec
                print(path.name, rec["exit"], rec.get("channels_removed"), rec["zeroed"], flush=True)
    out_json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_results_md(results, out_md)


def _short(runtime: str) -> str:
    """A runtime as the table names it (the report's full wording is in the JSON)."""
    if "optimisations on" in runtime:
        return "onnxruntime f32 optimised (deployed path)"
    if "expanded" in runtime:
        return "onnxruntime f32 (FakeQuantize expanded)"
    return "onnxruntime f32" if runtime.startswith("onnxruntime") else runtime


def write_results_md(results: dict[str, Any], path: Path) -> None:
    notes = ""
    if path.exists() and NOTES in path.read_text():
        notes = path.read_text().split(NOTES, 1)[1]
    lines = [
        "# NNCF exports: what onnxprune does with them (issue 11 item 1)",
        "",
        "The 12 real NNCF 2.19 exports of `tools/export_nncf.py` (filter_pruning 0.4, with int8 quantization",
        "in the FakeQuantize and QDQ forms). Per file: `prune --criterion zero --inputs digits_test.npz",
        "--compare-openvino` (verified on the first 16 held-out digits), then original and pruned model",
        "run independently on all 540 held-out digits in OpenVINO (CPU, f32 inference precision) and in",
        "onnxruntime. Written by `tools/bench_nncf_baseline.py --results`; raw data in `nncf_exports.json`;",
        "the state before in `nncf_exports_baseline.md`.",
        "",
        "| file | exit | removed / NNCF-zeroed (of all) | OpenVINO's pass: removed / all conv channels | verification | max abs diff / scale | convert, prune --ir exit |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rec in results["files"].items():
        v = rec.get("verification") or {}
        q = v.get("quantized")
        if q:
            proof = "; ".join(
                f"{_short(pp['runtime'])}: {pp['max_abs_diff']:.2g} / {pp['scale']:.3g}, {pp['samples_past_float_limit']} of {pp['samples']} past 1e-5 x scale"
                for pp in q["paths"]
            )
            by = f"{q['form']} rule on " + " + ".join(_short(pp["runtime"]) for pp in q["paths"])
        else:
            proof = "—" if v.get("max_abs_diff") is None else f"{v['max_abs_diff']:.2g} / {v['scale']:.3g}"
            by = _short(v.get("runtime") or "—")
        ovp = rec.get("openvino_pass") or {}
        ov = (
            "—"
            if not ovp
            else (
                f"error: {ovp['error']}"[:80]
                if ovp.get("error")
                else f"{ovp.get('conv_channels_removed')} / {ovp.get('conv_channels_total')}"
            )
        )
        lines.append(
            f"| {name} | {rec['exit']}{' (traceback)' if rec['traceback'] else ''}{' ' + rec['error_line'][:120] if rec['error_line'] else ''} "
            f"| {_fmt(rec.get('channels_removed'))} / {rec['zeroed']} ({_fmt(rec.get('channels_total'))}) | {ov} "
            f"| {('PASSED' if v.get('passed') else 'FAILED') + ': ' + by if v else '—'} | {proof} | {rec['convert_exit']}, {rec['prune_ir_exit']} |"
        )
    lines += [
        "",
        "Checked independently of onnxprune's verification, all 540 held-out digits, unpruned -> pruned:",
        "",
        "| file | runtime | top-1 before | top-1 after | top-1 agreement | max abs diff / scale | samples past 1e-5 x scale |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {
        "openvino": "OpenVINO CPU f32",
        "onnxruntime": "onnxruntime, optimisations off",
        "onnxruntime-optimised": "onnxruntime optimised (deployed path)",
    }
    for name, rec in results["files"].items():
        for rt, c in (rec.get("independent") or {}).items():
            label = names[rt] + (" (FakeQuantize expanded)" if rt == "onnxruntime" and "_fq" in name else "")
            lines.append(
                f"| {name} | {label} | {c['top1_before']:.4f} | {c['top1_after']:.4f} | {c['top1_agreement']:.4f} "
                f"| {c['max_abs_diff']:.2g} / {c['scale']:.3g} | {c['samples_past_1e-5_scale']} of {c['samples']} |"
            )
    path.write_text("\n".join(lines) + "\n\n" + NOTES + (notes if notes else "\n"))


if __name__ == "__main__":
    main()
