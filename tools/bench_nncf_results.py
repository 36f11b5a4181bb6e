"""``tools/bench_nncf_baseline.py --results``: what onnxprune does now with the NNCF exports, per
file (see that script's docstring); writes benchmarks/nncf_exports.json and nncf_exports.md."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from bench_nncf_baseline import FORMS, NETS, NOTES, _fmt, probe
from nncf_patterns import patterns


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
