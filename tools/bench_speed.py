#!/usr/bin/env python3
"""Speed benchmark: MACs ratio vs OpenVINO CPU latency ratio on the exported model zoo.

Cases (each pruned model timed against its unpruned original, batch 1, OpenVINO CPU):

* ``zero``  - ``onnxprune.prune(path, "zero")`` (zero-filter removal, exact); beside it
  OpenVINO's own pruning pass (``apply_pruning_transformation``) where that pass is exact.
* ``l2``    - ``onnxprune.prune(path, "l2", ratio=0.25, verify=True)``
* ``l2_r8`` - the same with ``round_to=8``
* ``l2_r16``- the same with ``round_to=16``

Timing is ``onnxprune.bench.benchmark`` (LATENCY hint, one request at a time, rounds
interleaved A/B/... so machine noise hits every model alike; THROUGHPUT hint with an async
queue for fps). All models of one zoo model are timed in one interleaved run: the zero case
as [original, onnxprune zero, OpenVINO pass IR], the L2 cases as [original, l2, l2_r8, l2_r16].
OpenVINO's pass does not write a model: ``ov_pass_ir`` replicates the steps of
``onnxprune.openvino_pass.run_openvino_pruning`` (convert_model -> dynamic dims to 1 ->
apply_pruning_transformation) and saves the pruned ov.Model as an f32 IR, which
``benchmark`` reads like any other model.

Phases (default: all three; pruned models go to ``--work``, never into the repo)::

    python tools/bench_speed.py prune   # prune + OV pass, no timing (can run on a busy machine)
    python tools/bench_speed.py time    # timing; waits until no other benchmark runs
    python tools/bench_speed.py report  # benchmarks/speed.{md,json,png}
    python tools/bench_speed.py all --zoo /work/zoo-nncf --work /tmp/speed

``--models a,b`` restricts to some models; ``time`` merges into the existing timing file, so
a model can be re-timed alone (``--seconds`` sets the timed seconds per model file).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = [
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
    "densenet121", "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet", "mnasnet1_0",
    "regnet_y_400mf", "resnext50_32x4d", "vgg11_bn", "inception_v3",
]
L2_CASES = {"l2": 1, "l2_r8": 8, "l2_r16": 16}
CASES = ["zero", "ov_pass", *L2_CASES]
CASE_TITLES = {
    "zero": 'zero removal: onnxprune.prune(path, "zero")',
    "ov_pass": "OpenVINO pruning pass (apply_pruning_transformation)",
    "l2": 'L2 25% per layer: prune(path, "l2", ratio=0.25, verify=True)',
    "l2_r8": "L2 25% per layer, round_to=8",
    "l2_r16": "L2 25% per layer, round_to=16",
}
OTHER_BENCHES = ("bench_zoo", "fuzz", "bench_digits", "bench_zoo_lossy", "pytest", "-m onnxprune")

# Targets of the issue "The OpenVINO hand-off".
TARGETS = [
    {"name": "ResNet-50, zero removal (25% zeroed filters, NNCF clusters)", "model": "resnet50",
     "cases": ["zero"], "tolerance": 0.10},
    {"name": "MobileNetV2, L2 25% with rounding", "model": "mobilenet_v2",
     "cases": ["l2_r8", "l2_r16"], "tolerance": 0.20},
]
OV_REFERENCE_MBV2 = {"macs_ratio": 0.58, "latency_ratio": 0.77}


# --------------------------------------------------------------------------- helpers
def _dump(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def _load(path: str) -> dict:
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {}


def other_benchmarks() -> list[str]:
    """Command lines of other benchmark processes (not this one)."""
    out = subprocess.run(["ps", "-eo", "pid=,ni=,args="], capture_output=True, text=True).stdout
    me = os.getpid()
    busy = []
    for line in out.splitlines():
        pid, ni, args = line.strip().split(None, 2) + [""] * max(0, 3 - len(line.strip().split(None, 2)))
        if int(pid) == me or "bench_speed" in args or "grep" in args:
            continue
        if TOLERATE_NICED and ni.lstrip("-").isdigit() and int(ni) > 0:
            continue
        exe = os.path.basename(args.split(" ", 1)[0])
        if any(name in args for name in OTHER_BENCHES) and ("python" in exe or exe in ("pytest", "onnxprune")):
            busy.append(line.strip())
    return busy


def _cpu_counters() -> tuple[float, float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process) now."""
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    t = os.times()
    if TOLERATE_NICED:  # only user time of un-niced processes (kernel time of niced jobs is not "nice")
        return time.time(), v[0] / hz, t.user + t.children_user, v[1] / hz
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # user nice system irq softirq steal
    return time.time(), busy / hz, t.user + t.system + t.children_user + t.children_system, v[1] / hz


def niced_cores(start: tuple, end: tuple) -> float:
    """Average cores used by niced (background) processes between two _cpu_counters()."""
    return max(0.0, (end[3] - start[3]) / max(end[0] - start[0], 1e-6))


def foreign_cores(start: tuple, end: tuple) -> float:
    """Average number of cores busy with other processes between two _cpu_counters()."""
    wall = max(end[0] - start[0], 1e-6)
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / wall)


QUIET_CORES = 0.15  # other processes may use at most this many cores on average
TOLERATE_NICED = False  # --tolerate-niced: niced (nice > 0) background jobs do not count as busy


def wait_quiet(poll: float = 10.0, max_wait: float = 3600.0, streak: int = 3) -> float:
    """Wait until no other benchmark/test process is seen ``streak`` polls in a row."""
    t0 = time.time()
    quiet = 0
    while True:
        busy = other_benchmarks()
        c0 = _cpu_counters()
        time.sleep(2.0)
        load = foreign_cores(c0, _cpu_counters())
        if load > QUIET_CORES:
            busy = busy or [f"{load:.2f} cores busy with other processes"]
        if not busy:
            quiet += 1
            if quiet >= streak:
                return time.time() - t0
            time.sleep(poll / 2)
            continue
        quiet = 0
        if time.time() - t0 > max_wait:
            raise SystemExit(f"machine still busy after {max_wait:.0f} s: {busy}")
        print(f"  waiting for other benchmarks: {busy[0][:120]}", flush=True)
        time.sleep(poll)


def ov_pass_ir(onnx_path: str, xml_path: str) -> dict[str, Any]:
    """OpenVINO's pruning pass on ``onnx_path`` (steps of run_openvino_pruning), pruned model
    saved as an f32 IR at ``xml_path``; returns the OV-counter MACs of the saved model."""
    from openvino._offline_transformations import apply_pruning_transformation

    from onnxprune.openvino_ir import require_openvino
    from onnxprune.openvino_pass import _static_inputs, layer_stats

    ov = require_openvino()
    model = ov.convert_model(onnx_path)
    _static_inputs(model)  # dynamic dims -> 1, like the bench
    before = layer_stats(model)["macs"]
    apply_pruning_transformation(model)
    model.validate_nodes_and_infer_types()
    after = layer_stats(model)["macs"]
    ov.save_model(model, xml_path, compress_to_fp16=False)
    return {"macs_before": before, "macs_after": after, "ir": xml_path}


# --------------------------------------------------------------------------- phase: prune
def phase_prune(args: argparse.Namespace) -> None:
    import onnxprune
    from onnxprune.openvino_pass import run_openvino_pruning

    path_json = os.path.join(args.work, "prune.json")
    data = _load(path_json)
    for name in args.models:
        src = os.path.join(args.zoo, name + ".onnx")
        rec: dict[str, Any] = data.get(name, {})
        rec["original"] = src
        for case in ["zero", *L2_CASES]:
            out = os.path.join(args.work, case, name + ".onnx")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"path": out, "error": None}
            try:
                if case == "zero":
                    r = onnxprune.prune(src, "zero")
                else:
                    r = onnxprune.prune(src, "l2", ratio=0.25, round_to=L2_CASES[case], verify=True)
                onnxprune.save(r.model, out)
                rep = r.report
                entry.update(macs_before=rep.macs_before, macs_after=rep.macs_after,
                             macs_ratio=rep.macs_after / rep.macs_before,
                             channels_total=rep.channels_total, channels_removed=rep.channels_removed)
            except Exception as e:
                entry["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            rec[case] = entry
            print(f"{name:22s} {case:7s} " + (f"MACs ratio {entry['macs_ratio']:.3f}" if not entry["error"]
                                               else entry["error"][:150]) + f"  ({entry['seconds']} s)", flush=True)
        # OpenVINO's pass: exactness/MACs from run_openvino_pruning, the IR from ov_pass_ir
        entry = {"error": None}
        t0 = time.perf_counter()
        try:
            res = run_openvino_pruning(src)
            ver = res.get("verification") or {}
            entry.update(macs_before=res.get("macs_before"), macs_after=res.get("macs_after"),
                         exact=ver.get("exact"), max_abs_diff=ver.get("max_abs_diff"), error=res.get("error"))
            if res.get("macs_after") is not None:
                entry["macs_ratio"] = res["macs_after"] / res["macs_before"]
            if not entry["error"] and entry.get("exact"):
                xml = os.path.join(args.work, "ov_pass", name + ".xml")
                os.makedirs(os.path.dirname(xml), exist_ok=True)
                ir = ov_pass_ir(src, xml)
                entry["path"] = xml
                entry["ir_macs_ratio"] = ir["macs_after"] / ir["macs_before"]
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        rec["ov_pass"] = entry
        status = (f"MACs ratio {entry.get('macs_ratio', float('nan')):.3f} exact={entry.get('exact')}"
                  if not entry["error"] else str(entry["error"])[:150])
        print(f"{name:22s} ov_pass {status}  ({entry['seconds']} s)", flush=True)
        data[name] = rec
        _dump(path_json, data)


# --------------------------------------------------------------------------- phase: time
def _plan_runs(latency_ms: float, n_models: int, seconds: float) -> tuple[int, int]:
    """rounds, runs_per_round so that each model gets ~``seconds`` of timed runs."""
    total_runs = max(20, int(seconds * 1000.0 / max(latency_ms, 0.1)))
    rounds = min(30, max(10, total_runs // 3))
    runs = max(1, round(total_runs / rounds))
    return rounds, runs


def phase_time(args: argparse.Namespace) -> None:
    from onnxprune.bench import benchmark

    pruned = _load(os.path.join(args.work, "prune.json"))
    path_json = os.path.join(args.work, "timing.json")
    data = _load(path_json)
    for name in args.models:
        if name not in pruned:
            print(f"{name}: not pruned yet, skipped")
            continue
        rec = pruned[name]
        waited = wait_quiet()
        if waited > 1:
            print(f"  (waited {waited:.0f} s for a quiet machine)", flush=True)
        # probe the original's latency to size the runs
        probe = benchmark([rec["original"]], backend="openvino", rounds=1, runs_per_round=5, warmup=2,
                          throughput_seconds=0.05)[0].latency_median_ms
        out: dict[str, Any] = data.get(name, {})
        out["probe_latency_ms"] = probe
        groups = {
            "zero": ["zero", "ov_pass"],
            "l2": list(L2_CASES),
        }
        for gname, cases in groups.items():
            cases = [c for c in cases if not rec.get(c, {}).get("error") and rec.get(c, {}).get("path")
                     and os.path.isfile(rec[c]["path"])]
            if not cases:
                continue
            paths = [rec["original"]] + [rec[c]["path"] for c in cases]
            rounds, runs = _plan_runs(probe, len(paths), args.seconds)
            t0 = time.perf_counter()
            try:
                for attempt in range(1, 4):  # re-time when another process showed up meanwhile
                    wait_quiet()
                    t0 = time.perf_counter()
                    c0 = _cpu_counters()
                    timings = benchmark(paths, backend="openvino", rounds=rounds, runs_per_round=runs,
                                        warmup=args.warmup, throughput_seconds=args.throughput_seconds)
                    c1 = _cpu_counters()
                    foreign, niced = foreign_cores(c0, c1), niced_cores(c0, c1)
                    intruders = other_benchmarks()
                    if foreign > QUIET_CORES:
                        intruders = intruders or [f"{foreign:.2f} cores busy with other processes"]
                    if not intruders:
                        break
                    print(f"  {name} {gname}: busy during timing ({intruders[0][:80]}), attempt {attempt}", flush=True)
            except Exception as e:
                for c in cases:
                    out[c] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
                print(f"{name:22s} {gname}: {type(e).__name__}: {e}", flush=True)
                traceback.print_exc()
                continue
            wall = round(time.perf_counter() - t0, 1)
            out[f"original_{gname}"] = {**timings[0].to_dict(), "rounds": rounds, "runs_per_round": runs,
                                         "warmup": args.warmup, "throughput_seconds": args.throughput_seconds,
                                         "wall_seconds": wall, "attempts": attempt,
                                         "busy_after": bool(intruders),
                                         "foreign_cores": round(foreign, 3), "niced_cores": round(niced, 3),
                                         "tolerate_niced": TOLERATE_NICED}
            for c, t in zip(cases, timings[1:]):
                out[c] = {**t.to_dict(), "rounds": rounds, "runs_per_round": runs, "error": None,
                          "timed_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
                print(f"{name:22s} {c:7s} MACs {rec[c]['macs_ratio']:.3f}  latency {t.latency_ratio:.3f}  "
                      f"throughput {t.throughput_ratio:.3f}  (orig {timings[0].latency_median_ms:.2f} ms, "
                      f"{rounds}x{runs} runs, {wall} s)", flush=True)
        data[name] = out
        _dump(path_json, data)


# --------------------------------------------------------------------------- phase: report
def _machine() -> dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_zoo import cpu_name  # the sibling tool's reader of /proc/cpuinfo

    cpu = cpu_name("unknown")
    import openvino
    return {"cpu": cpu, "cpus": os.cpu_count(), "system": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(), "openvino": openvino.__version__}


def _rows(pruned: dict, timing: dict, models: list[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {c: [] for c in CASES}
    for name in models:
        p, t = pruned.get(name, {}), timing.get(name, {})
        for c in CASES:
            pe, te = p.get(c, {}), t.get(c, {})
            row = {"model": name, "macs_ratio": pe.get("macs_ratio"),
                   "macs_before": pe.get("macs_before"), "macs_after": pe.get("macs_after"),
                   "error": pe.get("error") or te.get("error")}
            if c == "ov_pass":
                row["exact"] = pe.get("exact")
            if te and not te.get("error"):
                row.update(latency_ratio=te["latency_ratio"], throughput_ratio=te["throughput_ratio"],
                           latency_median_ms=te["latency_median_ms"], latency_p90_ms=te["latency_p90_ms"],
                           throughput_fps=te["throughput_fps"], rounds=te["rounds"],
                           runs_per_round=te["runs_per_round"])
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


def _mark(r: dict) -> str:
    """† = another process used the CPU during the timing (retried up to 3 times, still busy);
    ? = timed before the load check existed."""
    if r.get("latency_ratio") is None:
        return ""
    if r.get("foreign_cores") is None:
        return " ?"
    if r.get("busy"):
        return " †"
    return " ‡" if (r.get("niced_cores") or 0) > QUIET_CORES else ""


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
                v.update(macs_ratio=r["macs_ratio"], latency_ratio=r["latency_ratio"], gap=r["gap"],
                         rel_gap=r["rel_gap"])
                v["met_relative"] = abs(r["rel_gap"]) <= tg["tolerance"]
                v["met_absolute"] = r["gap"] <= tg["tolerance"]
                v["met"] = v["met_relative"]
            out.append(v)
    return out


def phase_report(args: argparse.Namespace) -> None:
    pruned = _load(os.path.join(args.work, "prune.json"))
    timing = _load(os.path.join(args.work, "timing.json"))
    models = [m for m in MODELS if m in pruned] + [m for m in pruned if m not in MODELS]  # every model pruned so far
    rows = _rows(pruned, timing, models)
    verdicts = _target_verdicts(rows)
    machine = _machine()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python tools/bench_speed.py all --zoo {} --work {}".format(args.zoo, args.work)

    L: list[str] = []
    L.append("# Speed benchmark: MACs ratio vs OpenVINO latency ratio")
    L.append("")
    L.append(f"Date: {now}  ")
    L.append(f"Machine: {machine['system']}, {machine['cpu']}, {machine['cpus']} CPUs, "
             f"Python {machine['python']}, openvino {machine['openvino']}  ")
    L.append(f"Zoo: `{args.zoo}` (torchvision, random init, 25% of the channels of every NNCF cluster zeroed; "
             "`*_bnfold` variants skipped, OpenVINO folds BN itself)  ")
    L.append(f"Produced by: `{cmd}`")
    L.append("")
    L.append("**Noise.** A shared 2-core VM: single-run latencies wander by several percent and "
             "small models (≲5 ms) are the noisiest. Each pruned model is timed in the same "
             "interleaved run as its original (rounds A, B, C, A, B, C, …), so drifts hit both; the "
             "ratios are of medians. Throughput (THROUGHPUT hint, async queue, a couple of seconds "
             "per model, not interleaved) is noisier than latency. Treat differences below ~5% as noise.")
    L.append("")
    L.append("Method: `onnxprune.bench.benchmark([original, pruned, ...], backend=\"openvino\")` — batch 1, "
             "OpenVINO CPU, LATENCY hint, one request at a time, median over all timed runs; "
             "runs sized from a probe of the original so each model gets a few seconds (`--seconds`) of "
             "timed runs (rounds × runs per round in speed.json). MACs ratio = `report.macs_after / report.macs_before` (onnxprune's counter); "
             "for OpenVINO's pass, OpenVINO's counter (`onnxprune.openvino_pass.layer_stats`). "
             "Gap = |latency ratio − MACs ratio|; rel. = latency ratio / MACs ratio − 1 "
             "(positive: slower than MACs predict). Throughput ratio = pruned fps / original fps "
             "(> 1 is faster; compare its inverse with the MACs ratio). \"original latency ms\" is the "
             "original's median in that interleaved run (the zero case times 3 models, the L2 cases 4, so "
             "the original's absolute latency can differ between the two runs).")
    L.append("")
    L.append("Quiet-machine check: before each timed group the script waits until no other benchmark or "
             "test process runs and other processes use < {:.2f} cores (3 checks in a row); after it, it "
             "measures the CPU time other processes took during the run (/proc/stat minus its own) and "
             "re-times the group (up to 3 attempts) if that exceeded {:.2f} cores on average. "
             "† after the original latency = still busy after 3 attempts (ratios less reliable); "
             "‡ = timed with `--tolerate-niced` while a niced (nice 10) job of another session used the "
             "CPU (`niced_cores` in speed.json; it yields to the benchmark but still adds noise); "
             "? = timed by the first run, before the load check existed (other benchmarks were "
             "checked by name only); "
             "`foreign_cores` per run in speed.json.".format(QUIET_CORES, QUIET_CORES))
    L.append("")
    L.append("## Targets")
    L.append("")
    for v in verdicts:
        if v["met"] is None:
            L.append(f"- **{v['target']}** ({v['case']}): not measured")
            continue
        word = "**met**" if v["met"] else "**not met**"
        L.append(f"- {v['target']} (`{v['case']}`): latency ratio {v['latency_ratio']:.3f} at MACs ratio "
                 f"{v['macs_ratio']:.3f} → {v['rel_gap']*100:+.1f}% relative (|gap| {v['gap']:.3f}); target "
                 f"within {v['tolerance']*100:.0f}%: {word}"
                 + ("" if v["met_absolute"] == v["met_relative"] else
                    f" (as an absolute gap ≤ {v['tolerance']:.2f}: {'met' if v['met_absolute'] else 'not met'})"))
        if v["case"].startswith("l2_r"):
            base = next((r for r in rows["l2"] if r["model"] == v["model"]), {})
            if base.get("latency_ratio") is not None:
                L.append(f"  - same model without rounding (`l2`): latency ratio {base['latency_ratio']:.3f} at "
                         f"MACs ratio {base['macs_ratio']:.3f} — rounding raises the MACs; compare the absolute "
                         f"latency ratios to see whether it also makes the model faster.")
    ref = OV_REFERENCE_MBV2
    L.append(f"- Reference from the issue: OpenVINO's own flow on MobileNetV2 with rounding gets "
             f"{ref['latency_ratio']:.2f} latency at {ref['macs_ratio']:.2f} MACs "
             f"({(ref['latency_ratio']/ref['macs_ratio']-1)*100:+.0f}% relative).")
    L.append("")
    L.append("Relative reading is used for met / not met (latency ratio within ±tol × MACs ratio).")
    L.append("")

    # zero case table (with OV pass)
    L.append("## (a) " + CASE_TITLES["zero"])
    L.append("")
    L.append("OV pass columns: OpenVINO's `apply_pruning_transformation` on the same model (timed in the same "
             "interleaved run, as an f32 IR); shown only where the pass is exact.")
    L.append("")
    L.append("| model | MACs ratio | latency ratio (median) | throughput ratio | gap (rel.) | OV pass MACs ratio | OV pass latency ratio | OV pass gap (rel.) | original latency ms |")
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
            ov_g = "–" if o.get("gap") is None else f"{o['gap']:.3f} ({o['rel_gap']*100:+.0f}%)"
        if r.get("error"):
            L.append(f"| {r['model']} | error: {r['error'][:80]} | | | | {ov_m} | {ov_l} | {ov_g} | |")
            continue
        g = "–" if r.get("gap") is None else f"{r['gap']:.3f} ({r['rel_gap']*100:+.0f}%)"
        L.append(f"| {r['model']} | {_f(r['macs_ratio'])} | {_f(r.get('latency_ratio'))} | "
                 f"{_f(r.get('throughput_ratio'))} | {g} | {ov_m} | {ov_l} | {ov_g} | {_f(r.get('original_latency_ms'), 2)}{_mark(r)} |")
    ov_fail = [f"{m}: {str(o.get('error'))[:100]}" for m, o in ov_rows.items() if o.get("error")]
    if ov_fail:
        L.append("")
        L.append("OpenVINO pass failures: " + "; ".join(ov_fail))
    L.append("")

    for c in L2_CASES:
        L.append(f"## (b) {CASE_TITLES[c]}")
        L.append("")
        L.append("| model | MACs ratio | latency ratio (median) | throughput ratio | gap (rel.) | original latency ms |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for r in rows[c]:
            if r.get("error"):
                L.append(f"| {r['model']} | error: {r['error'][:100]} | | | | |")
                continue
            g = "–" if r.get("gap") is None else f"{r['gap']:.3f} ({r['rel_gap']*100:+.0f}%)"
            L.append(f"| {r['model']} | {_f(r['macs_ratio'])} | {_f(r.get('latency_ratio'))} | "
                     f"{_f(r.get('throughput_ratio'))} | {g} | {_f(r.get('original_latency_ms'), 2)}{_mark(r)} |")
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
        s = {"n": len(rs), "median_rel_gap": statistics.median(rel),
             "mean_abs_gap": statistics.mean(r["gap"] for r in rs),
             "within_10": sum(abs(x) <= 0.10 for x in rel), "within_20": sum(abs(x) <= 0.20 for x in rel)}
        summary[c] = s
        L.append(f"| {c} | {s['n']} | {s['median_rel_gap']*100:+.1f}% | {s['mean_abs_gap']:.3f} | "
                 f"{s['within_10']} / {s['within_20']} |")
    L.append("")
    L.append("Raw numbers (timings in ms and fps, rounds, MACs): `benchmarks/speed.json`; plot: `benchmarks/speed.png`.")
    L.append("")

    os.makedirs(os.path.join(ROOT, "benchmarks"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "speed.md"), "w") as f:
        f.write("\n".join(L))
    _dump(os.path.join(ROOT, "benchmarks", "speed.json"), {
        "date": now, "machine": machine, "zoo": args.zoo, "command": cmd,
        "seconds_per_model": args.seconds, "targets": verdicts, "summary": summary,
        "ov_reference_mobilenet_v2": OV_REFERENCE_MBV2, "rows": rows,
        "raw": {"prune": {m: pruned[m] for m in models}, "timing": {m: timing.get(m) for m in models}},
    })
    _plot(rows, os.path.join(ROOT, "benchmarks", "speed.png"),
          f"MACs ratio vs latency ratio ({os.path.basename(os.path.normpath(args.zoo))}, "
          f"{machine['cpus']}-core {machine['cpu'][:24]})")
    print("wrote benchmarks/speed.md, speed.json, speed.png")


def _plot(rows: dict[str, list[dict]], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"zero": ("o", "tab:blue", "onnxprune zero removal"),
             "ov_pass": ("x", "black", "OpenVINO pass (zero removal)"),
             "l2": ("s", "tab:orange", "L2 25%"),
             "l2_r8": ("^", "tab:green", "L2 25%, round_to=8"),
             "l2_r16": ("D", "tab:red", "L2 25%, round_to=16")}
    fig, ax = plt.subplots(figsize=(8, 7))
    lo, hi = 1.0, 0.0
    for c, (marker, color, label) in style.items():
        pts = [(r["macs_ratio"], r["latency_ratio"], r["model"]) for r in rows[c]
               if r.get("latency_ratio") is not None and r.get("macs_ratio") is not None]
        if not pts:
            continue
        xs, ys, names = zip(*pts)
        ax.scatter(xs, ys, marker=marker, color=color, label=label, s=45 if marker != "x" else 55, alpha=0.85)
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        if c in ("zero", "l2_r16"):
            for x, y, n in pts:
                ax.annotate(n, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points", color=color)
    lo, hi = max(0.0, lo - 0.05), hi + 0.05
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="latency = MACs")
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.12, label="±10% of MACs ratio")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", nargs="?", default="all", choices=["prune", "time", "report", "all"])
    ap.add_argument("--zoo", default="/work/zoo-nncf")
    ap.add_argument("--work", default="/tmp/speed", help="folder for pruned models and intermediate JSON")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per model file (latency)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--tolerate-niced", action="store_true",
                    help="time even while niced (nice > 0) background jobs run; their load is recorded "
                         "(niced_cores) and the rows are marked in the report")
    ap.add_argument("--throughput-seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    global TOLERATE_NICED, QUIET_CORES
    TOLERATE_NICED = args.tolerate_niced
    if TOLERATE_NICED:
        QUIET_CORES = 0.3
    os.makedirs(args.work, exist_ok=True)
    if args.phase in ("prune", "all"):
        phase_prune(args)
    if args.phase in ("time", "all"):
        phase_time(args)
    if args.phase in ("report", "all"):
        phase_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
