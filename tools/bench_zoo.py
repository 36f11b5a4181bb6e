#!/usr/bin/env python3
"""Benchmark onnxprune against OpenVINO's pruning pass on the exported model zoo.

Every (model file, tool) pair runs in its own subprocess (``--worker``), so a crash or
a hang in one of them (OpenVINO's pass is known to fail on some graphs) is recorded and
the run continues.  Results go to ``benchmarks/zoo.json`` and ``benchmarks/zoo.md``.

The zoo is produced by ``tools/export_zoo.py`` (``manifest.json`` lists the models).
NNCF-style cluster zeroing (``export_zoo.py --zeroing nncf`` -> ``/work/zoo-nncf``)::

    python tools/bench_zoo.py --zoo /work/zoo-nncf --out-md benchmarks/zoo_nncf.md \
        --out-json benchmarks/zoo_nncf.json

The zeroing mode is read from the zoo's manifest (``--zeroing`` overrides it) and shown
in the markdown header; ``--title`` replaces the heading.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "@@RESULT@@"


# --------------------------------------------------------------------------- workers
def _reason_kind(reason: str) -> str:
    """Reason text with node/tensor names and numbers replaced, so reasons can be counted."""
    r = re.sub(r"'[^']*'|\"[^\"]*\"", "<name>", str(reason))
    r = re.sub(r"(?<![\w<])/\S*[\w\]]", "<node>", r)
    return re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "<n>", r)


def run_onnxprune(path: str) -> dict[str, Any]:
    """Prune ``path`` with onnxprune (criterion ``zero``, verification on)."""
    import onnxprune

    out: dict[str, Any] = {"error": None}
    t0 = time.perf_counter()
    try:
        result = onnxprune.prune(path, criterion="zero")
    except onnxprune.OnnxPruneError as e:
        out.update(error=f"{type(e).__name__}: {e}", seconds=round(time.perf_counter() - t0, 3))
        return out
    out["seconds"] = round(time.perf_counter() - t0, 3)
    d = result.report.to_dict()
    for k in ("channels_total", "channels_removed", "macs_before", "macs_after", "params_before", "params_after"):
        out[k] = d.get(k)
    ver = d.get("verification")
    out["verification"] = ver
    out["exact"] = None if ver is None else bool(ver.get("passed"))
    try:
        out["independent_check"] = ort_compare(path, result.model)
    except Exception as e:
        out["independent_check"] = {"exact": False, "error": f"{type(e).__name__}: {e}"}
    try:
        out["ov_counter"] = ov_count(path, result.model)
    except Exception as e:
        out["ov_counter"] = {"error": f"{type(e).__name__}: {e}"}
    groups = d.get("kept_groups") or []
    reasons: collections.Counter[str] = collections.Counter()
    raw: collections.Counter[str] = collections.Counter()
    for g in groups:
        for r in g.get("reasons", []):
            reasons[_reason_kind(r)] += 1
            raw[r] += 1
    out["kept_groups"] = len(groups)
    out["kept_channels"] = sum(int(g.get("channels", 0)) for g in groups)
    out["kept_reasons"] = dict(reasons.most_common())  # node names replaced by <node>
    out["kept_reasons_raw_top"] = dict(raw.most_common(25))
    return out


def ort_compare(path: str, pruned: Any, seed: int = 0, rtol: float = 1e-5) -> dict[str, Any]:
    """Run original and pruned model in onnxruntime on one seeded input (dynamic dims = 1)."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    # Graph optimisations off: ORT's fusions alone move efficientnet_b0's output by ~1.4e-5
    # relative, above the 1e-5 tolerance; that noise floor is reported separately.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    a = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(pruned.SerializeToString(), so, providers=["CPUExecutionProvider"])
    so_opt = ort.SessionOptions()
    so_opt.intra_op_num_threads = 2
    a_opt = ort.InferenceSession(path, so_opt, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
    feeds = {}
    for i in a.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(types.get(i.type, np.float32))
    ref, got = a.run(None, feeds), b.run(None, feeds)
    noise = max(
        float(np.abs(x.astype(np.float64) - y).max()) if x.size else 0.0 for x, y in zip(ref, a_opt.run(None, feeds))
    )
    if len(ref) != len(got):
        return {"exact": False, "error": f"{len(ref)} outputs before, {len(got)} after"}
    worst = {"exact": True, "max_abs_diff": 0.0, "scale": 1.0}
    ratio = -1.0
    for x, y in zip(ref, got):
        if x.shape != y.shape:
            return {"exact": False, "error": f"output shape {list(x.shape)} -> {list(y.shape)}"}
        diff = float(np.abs(x.astype(np.float64) - y).max()) if x.size else 0.0
        diff = diff if np.isfinite(diff) else float("inf")
        scale = float(np.abs(x).max()) if x.size else 0.0
        scale = scale if scale > 0 else 1.0
        if diff / scale > ratio:
            ratio, worst = diff / scale, {"exact": worst["exact"], "max_abs_diff": diff, "scale": scale}
        worst["exact"] = worst["exact"] and diff <= rtol * scale
    # max diff of the *original* model between ORT optimisation levels (all vs none)
    worst["ort_noise_floor"] = noise
    return worst


def ov_count(path: str, pruned: Any) -> dict[str, Any]:
    """Channels/MACs of the original and the onnxprune-pruned model, counted on the
    OpenVINO-converted graphs by tools/openvino_pruning.py (same counter as for OpenVINO)."""
    import tempfile

    import onnx
    import openvino as ov

    sys.path.insert(0, HERE)
    from onnxprune.openvino_pass import layer_stats, static_inputs

    def count(p: str) -> dict[str, Any]:
        m = ov.convert_model(p)
        static_inputs(m)
        return layer_stats(m)

    before = count(path)
    with tempfile.TemporaryDirectory() as tmp:
        f = os.path.join(tmp, "pruned.onnx")
        onnx.save(pruned, f)
        after = count(f)
    return {
        "channels_total": before["channels_total"],
        "channels_removed": before["channels_total"] - after["channels_total"],
        "macs_before": before["macs"],
        "macs_after": after["macs"],
    }


def run_openvino(path: str) -> dict[str, Any]:
    """OpenVINO's pass via tools/openvino_pruning.py."""
    sys.path.insert(0, HERE)
    from openvino_pruning import run_openvino_pruning

    res = run_openvino_pruning(path)
    ver = res.get("verification")
    res["exact"] = None if ver is None else bool(ver.get("exact"))
    res["seconds"] = res.get("pass_seconds")
    return res


def worker(tool: str, path: str) -> int:
    """Run one tool on one file and print its JSON result after ``MARK``."""
    try:
        res = run_onnxprune(path) if tool == "onnxprune" else run_openvino(path)
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
    print(MARK + json.dumps(res, default=str), flush=True)
    return 0


# --------------------------------------------------------------------------- driver
def run_in_subprocess(tool: str, path: str, timeout: float) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter; turn crashes/timeouts into errors."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", tool, path]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f}s", "wall_seconds": round(time.perf_counter() - t0, 1)}
    wall = round(time.perf_counter() - t0, 1)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(MARK):
            res = json.loads(line[len(MARK) :])
            res["wall_seconds"] = wall
            return res
    tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
    how = f"crashed with signal {-p.returncode}" if p.returncode < 0 else f"exited with code {p.returncode}"
    return {"error": f"process {how}" + (": " + " | ".join(tail) if tail else ""), "wall_seconds": wall}


def cpu_name(default: str = "") -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's, or ``default``)."""
    cpu = platform.processor() or default
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def machine_line() -> str:
    """One line describing the machine and library versions."""
    cpu = cpu_name()
    vers = []
    for mod in ("onnx", "onnxruntime", "openvino"):
        try:
            vers.append(f"{mod} {__import__(mod).__version__.split('-')[0]}")
        except Exception:
            pass
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, " + ", ".join(vers)
    )


def _fmt_int(v: Any) -> str:
    return "–" if v is None else f"{v:,}"


def _fmt_macs(before: Any, after: Any) -> str:
    if before is None:
        return "–"
    if after is None:
        return f"{before / 1e6:,.0f}M → –"
    pct = 100.0 * (before - after) / before if before else 0.0
    return f"{before / 1e6:,.0f}M → {after / 1e6:,.0f}M (−{pct:.1f}%)"


def _fmt_ch(r: dict[str, Any]) -> str:
    if r.get("channels_removed") is None:
        return "–"
    return f"{r['channels_removed']:,} / {r['channels_total']:,}"


def _fmt_exact(r: dict[str, Any]) -> str:
    ver = r.get("verification")
    if not ver:
        return "–"
    if ver.get("error") or ver.get("max_abs_diff") is None:
        return "**no** (failed to run)" if r.get("exact") is False else "–"
    return f"{'yes' if r.get('exact') else '**no**'} ({ver['max_abs_diff']:.1e})"


def _fmt_recheck(r: dict[str, Any]) -> str:
    chk = r.get("independent_check")
    if not chk:
        return ""
    return " / ORT " + ("yes" if chk.get("exact") else "**no**")


def _short(err: str | None, n: int = 90) -> str:
    """One-line, table-safe error summary (OpenVINO errors: failing node + last line)."""
    if not err:
        return ""
    err = str(err)
    m = re.search(r"While validating node '([^']*)'", err)
    if m:
        head = err.split(":", 1)[0] if err.startswith("pruned model") else ""
        last = [ln for ln in err.strip().splitlines() if ln.strip()][-1]
        err = f"{head + ': ' if head else ''}{m.group(1)}: {last}"
    err = " ".join(err.split()).replace("|", "/")
    return err if len(err) <= n else err[: n - 1] + "…"


ZEROING_TEXT = {
    "independent": (
        "**Zeroing: independent** (`export_zoo.py --zeroing independent`) — 25% of the filters of every "
        "prunable conv zeroed on its own (lowest L2 per conv, with the following BN's gamma/beta), so "
        "convs tied by Add/Concat generally lose *different* filters."
    ),
    "nncf": (
        "**Zeroing: NNCF clusters** (`export_zoo.py --zeroing nncf`, `tools/zero_filters.py`) — models "
        "exported clean, then 25% of the channels of every cluster of convs tied by Add/Mul/Concat zeroed "
        "with the *same* filter indices (lowest summed L2 over the cluster), masked everywhere the channel "
        "flows (depthwise conv filters and every BN carrying it); `*_bnfold` zeroed after folding. "
        "Sources whose channels reach a graph output are skipped."
    ),
}


def _exact_both(op: dict[str, Any]) -> bool:
    """onnxprune counts as exact when its own verification and the ORT re-check both pass."""
    chk = op.get("independent_check") or {}
    return bool(op.get("exact")) and bool(chk.get("exact", True)) and not op.get("error")


def _cut(r: dict[str, Any]) -> float | None:
    b, a = r.get("macs_before"), r.get("macs_after")
    return None if not b or a is None else (b - a) / b


def _op_cut(op: dict[str, Any]) -> float | None:
    """onnxprune's MACs cut, counted with the OpenVINO counter when available (same as OpenVINO's)."""
    c = _cut(op.get("ov_counter") or {})
    return _cut(op) if c is None else c


def removed_ratio(r: dict[str, Any]) -> float | None:
    """onnxprune channels removed / filters zeroed by the export."""
    op = r.get("onnxprune") or {}
    z, rem = r.get("filters_zeroed"), op.get("channels_removed")
    return None if not z or rem is None else rem / z


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    """Counts over the table's rows: exactness of each tool and who cuts more MACs."""
    n = len(results)
    op_exact = [r for r in results if _exact_both(r.get("onnxprune") or {})]
    ov_exact = [
        r for r in results if (r.get("openvino") or {}).get("exact") and not (r.get("openvino") or {}).get("error")
    ]
    ge = [
        r
        for r in ov_exact
        if _op_cut(r.get("onnxprune") or {}) is not None and _op_cut(r["onnxprune"]) >= _cut(r["openvino"]) - 1e-6
    ]
    full = [r for r in results if (removed_ratio(r) or 0) >= 0.999]
    return [
        f"**Summary** ({n} model files): onnxprune exact (own verification and ORT re-check) on "
        f"**{len(op_exact)}/{n}**; OpenVINO exact on **{len(ov_exact)}/{n}**; among the {len(ov_exact)} where "
        f"OpenVINO is exact, onnxprune's MACs cut (OV counter) ≥ OpenVINO's on **{len(ge)}/{len(ov_exact)}**; "
        f"onnxprune removed all zeroed filters on {len(full)}/{n}.",
    ]


def write_markdown(results: list[dict[str, Any]], meta: dict[str, Any], path: str) -> None:
    """Render the results as a markdown table."""
    zeroing = meta.get("zeroing") or "independent"
    lines = [
        f"# {meta.get('title') or 'Model-zoo benchmark: onnxprune vs OpenVINO pruning pass'}",
        "",
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}  ",
        f"Zoo: `{meta.get('zoo', '')}`",
        "",
        ZEROING_TEXT.get(zeroing, f"**Zeroing: {zeroing}**"),
        "",
        "Models: torchvision, random init (seed 0), BN statistics calibrated and randomised; `*_bnfold` = BN "
        "folded into convs. Produced by `tools/export_zoo.py`; table by `tools/bench_zoo.py`.",
        "",
        *summary_lines(results),
        "",
        "Channels = output channels of weight layers (Conv/ConvTranspose/Gemm/MatMul), removed / total. "
        "Exact = pruned outputs match the original within 1e-5 × max|output| (max abs diff in parentheses); "
        'for onnxprune first its own verification, then "ORT" = an independent onnxruntime re-check by this script (batch 1, graph optimisations off; '
        "zoo.json also gives `ort_noise_floor`, how far ORT's own fusions move the unpruned output). "
        "OpenVINO MACs/channels are counted by `tools/openvino_pruning.py` on the converted OV model "
        "(batch 1); onnxprune's come from its own report, and \"OV counter\" recounts onnxprune's result with "
        "the OpenVINO counter so both tools are measured the same way.",
        "",
        "Channel totals differ between the tools: onnxprune's source layers exclude depthwise convs, while the "
        "OpenVINO counter includes every Convolution/GroupConvolution (so depthwise channels that OpenVINO removes "
        "along with a pruned filter count twice). Compare MACs across tools, not channel counts. OpenVINO's "
        "`convert_model` folds BatchNormalization into the convs, so its results for `x` and `x_bnfold` coincide. "
        "Kept groups = channel groups onnxprune kept, with the most frequent reasons (node names replaced by <node>). "
        "removed/zeroed = onnxprune's channels removed ÷ the export's zeroed filter count (1.00 = every zeroed "
        "filter removed; depthwise filters are not counted on either side).",
        "",
        "| model | zeroed filters | onnxprune channels | removed/zeroed | OpenVINO channels | onnxprune MACs | onnxprune MACs (OV counter) | OpenVINO MACs "
        "| onnxprune exact | OpenVINO exact | onnxprune s | OpenVINO s | kept groups (top reasons) | errors |",
        "|---|---:|---:|---:|---:|---|---|---|---|---|---:|---:|---|---|",
    ]
    for r in results:
        op, ov = r.get("onnxprune") or {}, r.get("openvino") or {}
        ovc = op.get("ov_counter") or {}
        reasons = op.get("kept_reasons") or {}
        top = ", ".join(f"{k}: {v}" for k, v in list(reasons.items())[:3])
        kept = "–" if op.get("kept_groups") is None else f"{op['kept_groups']}" + (f" ({top})" if top else "")
        errs = "; ".join(
            f"{name}: {_short(x.get('error'), 220)}"
            for name, x in (("onnxprune", op), ("OpenVINO", ov))
            if x.get("error")
        )
        lines.append(
            f"| {r['model']} | {_fmt_int(r.get('filters_zeroed'))} | {_fmt_ch(op)} "
            f"| {'–' if removed_ratio(r) is None else f'{removed_ratio(r):.2f}'} | {_fmt_ch(ov)} "
            f"| {_fmt_macs(op.get('macs_before'), op.get('macs_after'))} "
            f"| {_fmt_macs(ovc.get('macs_before'), ovc.get('macs_after'))} "
            f"| {_fmt_macs(ov.get('macs_before'), ov.get('macs_after'))} "
            f"| {_fmt_exact(op)}{_fmt_recheck(op)} | {_fmt_exact(ov)} "
            f"| {op.get('seconds', '–')} | {ov.get('seconds', '–')} | {_short(kept, 120)} | {errs} |"
        )
    lines += [
        "",
        f"Full per-model data (per-reason counts, errors, timings): `{meta.get('json') or 'benchmarks/zoo.json'}`.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def zoo_files(zoo: str, models: list[str] | None, variants: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(file stem, path, manifest info) for each model file to benchmark."""
    manifest: dict[str, Any] = {}
    mpath = os.path.join(zoo, "manifest.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f).get("models", {})
    names = models or (
        list(manifest)
        if manifest
        else sorted({os.path.basename(p)[:-5].removesuffix("_bnfold") for p in glob.glob(os.path.join(zoo, "*.onnx"))})
    )
    out = []
    for name in names:
        for v in variants:
            stem = name if v == "bn" else f"{name}_bnfold"
            path = os.path.join(zoo, stem + ".onnx")
            if os.path.exists(path):
                info = dict(manifest.get(name, {}))
                per_file = (info.get("files") or {}).get(v) or {}
                if "filters_zeroed" in per_file:  # nncf zoo: counted per file
                    info["filters_zeroed"] = per_file["filters_zeroed"]
                out.append((stem, path, info))
    return out


def zoo_meta(zoo: str) -> dict[str, Any]:
    try:
        with open(os.path.join(zoo, "manifest.json")) as f:
            return json.load(f).get("meta", {})
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default="/work/zoo", help="directory written by export_zoo.py")
    ap.add_argument("--models", default=None, help="comma-separated model names (default: manifest order)")
    ap.add_argument("--variants", default="bn,bnfold", help="bn, bnfold or both (default)")
    ap.add_argument("--tools", default="onnxprune,openvino", help="which tools to run")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per model per tool")
    ap.add_argument("--out-json", default=os.path.join(ROOT, "benchmarks", "zoo.json"))
    ap.add_argument("--out-md", default=os.path.join(ROOT, "benchmarks", "zoo.md"))
    ap.add_argument("--title", default=None, help="markdown heading")
    ap.add_argument("--zeroing", default=None, help="zeroing mode for the header (default: from manifest meta)")
    ap.add_argument("--worker", nargs=2, metavar=("TOOL", "ONNX"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(*args.worker)

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    files = zoo_files(args.zoo, models, [v.strip() for v in args.variants.split(",")])
    if not files:
        print(f"no models found in {args.zoo}", file=sys.stderr)
        return 2
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_line(),
        "zoo": os.path.abspath(args.zoo),
        "title": args.title,
        "zeroing": args.zeroing or zoo_meta(args.zoo).get("zeroing") or "independent",
        "json": os.path.relpath(os.path.abspath(args.out_json), ROOT),
    }
    results: list[dict[str, Any]] = []
    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    for stem, path, info in files:
        row: dict[str, Any] = {
            "model": stem,
            "file": path,
            "filters_zeroed": info.get("filters_zeroed"),
            "filters_total": info.get("filters_total"),
        }
        for tool in tools:
            print(f"[bench] {stem}: {tool} ...", flush=True)
            res = run_in_subprocess(tool, path, args.timeout)
            row[tool] = res
            msg = res.get("error") or (
                f"removed {res.get('channels_removed')}/{res.get('channels_total')} "
                f"exact={res.get('exact')} {res.get('seconds')}s"
            )
            print(f"  {_short(msg, 200)}", flush=True)
        results.append(row)
        with open(args.out_json, "w") as f:  # rewrite after every model: partial runs stay useful
            json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
        write_markdown(results, meta, args.out_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
