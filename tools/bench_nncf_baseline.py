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
from nncf_patterns import patterns

ROOT = Path(__file__).resolve().parent.parent
NETS = ("digits", "resnet", "mobilenet")
FORMS = ("float", "fq", "qdq", "qdq_strip")
NOTES = "<!-- notes -->"


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
        from bench_nncf_results import results_main  # the --results half lives in its own file

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


if __name__ == "__main__":
    main()
