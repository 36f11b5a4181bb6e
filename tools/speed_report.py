"""The report phase of the speed benchmark: benchmarks/speed.{md,json,png} from the JSON the
prune and time phases of tools/bench_speed.py leave in their work folder."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from typing import Any

from speed_cases import CASE_TITLES, CASES, L2_CASES, MODELS, OV_REFERENCE_MBV2, ROOT, TARGETS, _dump, _load


def _machine() -> dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_zoo import cpu_name  # the sibling tool's reader of /proc/cpuinfo

    cpu = cpu_name("unknown")
    import openvino

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "openvino": openvino.__version__,
    }


def _rows(pruned: dict, timing: dict, models: list[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {c: [] for c in CASES}
    for name in models:
        p, t = pruned.get(name, {}), timing.get(name, {})
        for c in CASES:
            pe, te = p.get(c, {}), t.get(c, {})
            row = {
                "model": name,
                "macs_ratio": pe.get("macs_ratio"),
                "macs_before": pe.get("macs_before"),
                "macs_after": pe.get("macs_after"),
                "error": pe.get("error") or te.get("error"),
            }
            if c == "ov_pass":
                row["exact"] = pe.get("exact")
            if te and not te.get("error"):
                row.update(
                    latency_ratio=te["latency_ratio"],
                    throughput_ratio=te["throughput_ratio"],
                    latency_median_ms=te["latency_median_ms"],
                    latency_p90_ms=te["latency_p90_ms"],
                    throughput_fps=te["throughput_fps"],
                    rounds=te["rounds"],
                    runs_per_round=te["runs_per_round"],
                )
                grp = "original_zero" if c in ("zero", "ov_pass") else "original_l2"
                row["original_latency_ms"] = t.get(grp, {}).get("latency_median_ms")
                row["foreign_cores"] = t.get(grp, {}).get("foreign_cores")
                row["busy"] = t.get(grp, {}).get("busy_after", None)
                row["niced_cores"] = t.get(grp, {}).get("niced_cores")
                row["original_throughput_fps"] = t.get(grp, {}).get("throughput_fps")
                if row["macs_ratio"]:
                    row["gap"] = abs(row["latency_ratio"] - row["macs_ratio"])
                    row["rel_gap"] = row["latency_ratio"] / row["macs_ratio"] - 1.0
            rows[c].append(row)
    return rows


def _mark(r: dict, quiet_cores: float) -> str:
    """† = another process used the CPU during the timing (retried up to 3 times, still busy);
    ? = timed before the load check existed."""
    if r.get("latency_ratio") is None:
        return ""
    if r.get("foreign_cores") is None:
        return " ?"
    if r.get("busy"):
        return " †"
    return " ‡" if (r.get("niced_cores") or 0) > quiet_cores else ""


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _target_verdicts(rows: dict[str, list[dict]]) -> list[dict]:
    out = []
    for tg in TARGETS:
        for c in tg["cases"]:
            r = next((r for r in rows[c] if r["model"] == tg["model"]), None)
            v = {"target": tg["name"], "case": c, "model": tg["model"], "tolerance": tg["tolerance"]}
            if r is None or r.get("latency_ratio") is None:
                v["met"] = None
            else:
                v.update(
                    macs_ratio=r["macs_ratio"], latency_ratio=r["latency_ratio"], gap=r["gap"], rel_gap=r["rel_gap"]
                )
                v["met_relative"] = abs(r["rel_gap"]) <= tg["tolerance"]
                v["met_absolute"] = r["gap"] <= tg["tolerance"]
                v["met"] = v["met_relative"]
            out.append(v)
    return out


def phase_report(args: argparse.Namespace, quiet_cores: float) -> None:
    """``quiet_cores``: the load of other processes under which the time phase measured."""
    pruned = _load(os.path.join(args.work, "prune.json"))
    timing = _load(os.path.join(args.work, "timing.json"))
    models = [m for m in MODELS if m in pruned] + [m for m in pruned if m not in MODELS]  # every model pruned so far
    rows = _rows(pruned, timing, models)
    verdicts = _target_verdicts(rows)
    machine = _machine()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = f"python tools/bench_speed.py all --zoo {args.zoo} --work {args.work}"

    L: list[str] = []
    L.append("# Speed benchmark: MACs ratio vs OpenVINO latency ratio")
    L.append("")
    L.append(f"Date: {now}  ")
    L.append(
        f"Machine: {machine['system']}, {machine['cpu']}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}, openvino {machine['openvino']}  "
    )
    L.append(
        f"Zoo: `{args.zoo}` (torchvision, random init, 25% of the channels of every NNCF cluster zeroed; "
        "`*_bnfold` variants skipped, OpenVINO folds BN itself)  "
    )
    L.append(f"Produced by: `{cmd}`")
    L.append("")
    L.append(
        "**Noise.** A shared 2-core VM: single-run latencies wander by several percent and "
        "small models (≲5 ms) are the noisiest. Each pruned model is timed in the same "
        "interleaved run as its original (rounds A, B, C, A, B, C, …), so drifts hit both; the "
        "ratios are of medians. Throughput (THROUGHPUT hint, async queue, a couple of seconds "
        "per model, not interleaved) is noisier than latency. Treat differences below ~5% as noise."
    )
    L.append("")
    L.append(
        'Method: `onnxprune.bench.benchmark([original, pruned, ...], backend="openvino")` — batch 1, '
        "OpenVINO CPU, LATENCY hint, one request at a time, median over all timed runs; "
        "runs sized from a probe of the original so each model gets a few seconds (`--seconds`) of "
        "timed runs (rounds × runs per round in speed.json). MACs ratio = `report.macs_after / report.macs_before` (onnxprune's counter); "
        "for OpenVINO's pass, OpenVINO's counter (`onnxprune.openvino_pass.layer_stats`). "
        "Gap = |latency ratio − MACs ratio|; rel. = latency ratio / MACs ratio − 1 "
        "(positive: slower than MACs predict). Throughput ratio = pruned fps / original fps "
        '(> 1 is faster; compare its inverse with the MACs ratio). "original latency ms" is the '
        "original's median in that interleaved run (the zero case times 3 models, the L2 cases 4, so "
        "the original's absolute latency can differ between the two runs)."
    )
    L.append("")
    L.append(
        "Quiet-machine check: before each timed group the script waits until no other benchmark or "
        f"test process runs and other processes use < {quiet_cores:.2f} cores (3 checks in a row); after it, it "
        "measures the CPU time other processes took during the run (/proc/stat minus its own) and "
        f"re-times the group (up to 3 attempts) if that exceeded {quiet_cores:.2f} cores on average. "
        "† after the original latency = still busy after 3 attempts (ratios less reliable); "
        "‡ = timed with `--tolerate-niced` while a niced (nice 10) job of another session used the "
        "CPU (`niced_cores` in speed.json; it yields to the benchmark but still adds noise); "
        "? = timed by the first run, before the load check existed (other benchmarks were "
        "checked by name only); "
        "`foreign_cores` per run in speed.json."
    )
    L.append("")
    L.append("## Targets")
    L.append("")
    for v in verdicts:
        if v["met"] is None:
            L.append(f"- **{v['target']}** ({v['case']}): not measured")
            continue
        word = "**met**" if v["met"] else "**not met**"
        L.append(
            f"- {v['target']} (`{v['case']}`): latency ratio {v['latency_ratio']:.3f} at MACs ratio "
            f"{v['macs_ratio']:.3f} → {v['rel_gap'] * 100:+.1f}% relative (|gap| {v['gap']:.3f}); target "
            f"within {v['tolerance'] * 100:.0f}%: {word}"
            + (
                ""
                if v["met_absolute"] == v["met_relative"]
                else f" (as an absolute gap ≤ {v['tolerance']:.2f}: {'met' if v['met_absolute'] else 'not met'})"
            )
        )
        if v["case"].startswith("l2_r"):
            base = next((r for r in rows["l2"] if r["model"] == v["model"]), {})
            if base.get("latency_ratio") is not None:
                L.append(
                    f"  - same model without rounding (`l2`): latency ratio {base['latency_ratio']:.3f} at "
                    f"MACs ratio {base['macs_ratio']:.3f} — rounding raises the MACs; compare the absolute "
                    f"latency ratios to see whether it also makes the model faster."
                )
    ref = OV_REFERENCE_MBV2
    L.append(
        f"- Reference from the issue: OpenVINO's own flow on MobileNetV2 with rounding gets "
        f"{ref['latency_ratio']:.2f} latency at {ref['macs_ratio']:.2f} MACs "
        f"({(ref['latency_ratio'] / ref['macs_ratio'] - 1) * 100:+.0f}% relative)."
    )
    L.append("")
    L.append("Relative reading is used for met / not met (latency ratio within ±tol × MACs ratio).")
    L.append("")

    # zero case table (with OV pass)
    L.append("## (a) " + CASE_TITLES["zero"])
    L.append("")
    L.append(
        "OV pass columns: OpenVINO's `apply_pruning_transformation` on the same model (timed in the same "
        "interleaved run, as an f32 IR); shown only where the pass is exact."
    )
    L.append("")
    L.append(
        "| model | MACs ratio | latency ratio (median) | throughput ratio | gap (rel.) | OV pass MACs ratio | OV pass latency ratio | OV pass gap (rel.) | original latency ms |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ov_rows = {r["model"]: r for r in rows["ov_pass"]}
    for r in rows["zero"]:
        o = ov_rows.get(r["model"], {})
        if o.get("error"):
            ov_m, ov_l, ov_g = "fails", "–", "–"
        elif o.get("exact") is False:
            ov_m, ov_l, ov_g = f"{_f(o.get('macs_ratio'))} (not exact)", "–", "–"
        else:
            ov_m, ov_l = _f(o.get("macs_ratio")), _f(o.get("latency_ratio"))
            ov_g = "–" if o.get("gap") is None else f"{o['gap']:.3f} ({o['rel_gap'] * 100:+.0f}%)"
        if r.get("error"):
            L.append(f"| {r['model']} | error: {r['error'][:80]} | | | | {ov_m} | {ov_l} | {ov_g} | |")
            continue
        g = "–" if r.get("gap") is None else f"{r['gap']:.3f} ({r['rel_gap'] * 100:+.0f}%)"
        L.append(
            f"| {r['model']} | {_f(r['macs_ratio'])} | {_f(r.get('latency_ratio'))} | "
            f"{_f(r.get('throughput_ratio'))} | {g} | {ov_m} | {ov_l} | {ov_g} | {_f(r.get('original_latency_ms'), 2)}{_mark(r, quiet_cores)} |"
        )
    ov_fail = [f"{m}: {str(o.get('error'))[:100]}" for m, o in ov_rows.items() if o.get("error")]
    if ov_fail:
        L.append("")
        L.append("OpenVINO pass failures: " + "; ".join(ov_fail))
    L.append("")

    for c in L2_CASES:
        L.append(f"## (b) {CASE_TITLES[c]}")
        L.append("")
        L.append(
            "| model | MACs ratio | latency ratio (median) | throughput ratio | gap (rel.) | original latency ms |"
        )
        L.append("|---|---:|---:|---:|---:|---:|")
        for r in rows[c]:
            if r.get("error"):
                L.append(f"| {r['model']} | error: {r['error'][:100]} | | | | |")
                continue
            g = "–" if r.get("gap") is None else f"{r['gap']:.3f} ({r['rel_gap'] * 100:+.0f}%)"
            L.append(
                f"| {r['model']} | {_f(r['macs_ratio'])} | {_f(r.get('latency_ratio'))} | "
                f"{_f(r.get('throughput_ratio'))} | {g} | {_f(r.get('original_latency_ms'), 2)}{_mark(r, quiet_cores)} |"
            )
        L.append("")

    # summary per case
    L.append("## Summary per case")
    L.append("")
    L.append("| case | models timed | median rel. gap | mean |gap| | models within 10% / 20% (rel.) |")
    L.append("|---|---:|---:|---:|---:|")
    import statistics

    summary = {}
    for c in CASES:
        rs = [r for r in rows[c] if r.get("rel_gap") is not None]
        if not rs:
            continue
        rel = [r["rel_gap"] for r in rs]
        s = {
            "n": len(rs),
            "median_rel_gap": statistics.median(rel),
            "mean_abs_gap": statistics.mean(r["gap"] for r in rs),
            "within_10": sum(abs(x) <= 0.10 for x in rel),
            "within_20": sum(abs(x) <= 0.20 for x in rel),
        }
        summary[c] = s
        L.append(
            f"| {c} | {s['n']} | {s['median_rel_gap'] * 100:+.1f}% | {s['mean_abs_gap']:.3f} | "
            f"{s['within_10']} / {s['within_20']} |"
        )
    L.append("")
    L.append(
        "Raw numbers (timings in ms and fps, rounds, MACs): `benchmarks/speed.json`; plot: `benchmarks/speed.png`."
    )
    L.append("")

    os.makedirs(os.path.join(ROOT, "benchmarks"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "speed.md"), "w") as f:
        f.write("\n".join(L))
    _dump(
        os.path.join(ROOT, "benchmarks", "speed.json"),
        {
            "date": now,
            "machine": machine,
            "zoo": args.zoo,
            "command": cmd,
            "seconds_per_model": args.seconds,
            "targets": verdicts,
            "summary": summary,
            "ov_reference_mobilenet_v2": OV_REFERENCE_MBV2,
            "rows": rows,
            "raw": {"prune": {m: pruned[m] for m in models}, "timing": {m: timing.get(m) for m in models}},
        },
    )
    _plot(
        rows,
        os.path.join(ROOT, "benchmarks", "speed.png"),
        f"MACs ratio vs latency ratio ({os.path.basename(os.path.normpath(args.zoo))}, "
        f"{machine['cpus']}-core {machine['cpu'][:24]})",
    )
    print("wrote benchmarks/speed.md, speed.json, speed.png")


def _plot(rows: dict[str, list[dict]], out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {
        "zero": ("o", "tab:blue", "onnxprune zero removal"),
        "ov_pass": ("x", "black", "OpenVINO pass (zero removal)"),
        "l2": ("s", "tab:orange", "L2 25%"),
        "l2_r8": ("^", "tab:green", "L2 25%, round_to=8"),
        "l2_r16": ("D", "tab:red", "L2 25%, round_to=16"),
    }
    fig, ax = plt.subplots(figsize=(8, 7))
    lo, hi = 1.0, 0.0
    for c, (marker, color, label) in style.items():
        pts = [
            (r["macs_ratio"], r["latency_ratio"], r["model"])
            for r in rows[c]
            if r.get("latency_ratio") is not None and r.get("macs_ratio") is not None
        ]
        if not pts:
            continue
        xs, ys, _names = zip(*pts)
        ax.scatter(xs, ys, marker=marker, color=color, label=label, s=45 if marker != "x" else 55, alpha=0.85)
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        if c in ("zero", "l2_r16"):
            for x, y, n in pts:
                ax.annotate(n, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points", color=color)
    lo, hi = max(0.0, lo - 0.05), hi + 0.05
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="latency = MACs")
    ax.fill_between(
        [lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.12, label="±10% of MACs ratio"
    )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, max(hi, 1.05))
    ax.set_xlabel("MACs ratio (pruned / original)")
    ax.set_ylabel("OpenVINO CPU latency ratio (median, batch 1)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
