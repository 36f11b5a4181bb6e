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
import os
import subprocess
import sys
import time
import traceback
from typing import Any

from speed_cases import L2_CASES, MODELS, _dump, _load
from speed_report import phase_report

HERE = os.path.dirname(os.path.abspath(__file__))
OTHER_BENCHES = ("bench_zoo", "fuzz", "bench_digits", "bench_zoo_lossy", "pytest", "-m onnxprune")


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
    from onnxprune.openvino_pass import layer_stats, static_inputs

    ov = require_openvino()
    model = ov.convert_model(onnx_path)
    static_inputs(model)  # dynamic dims -> 1, like the bench
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
                entry.update(
                    macs_before=rep.macs_before,
                    macs_after=rep.macs_after,
                    macs_ratio=rep.macs_after / rep.macs_before,
                    channels_total=rep.channels_total,
                    channels_removed=rep.channels_removed,
                )
            except Exception as e:
                entry["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            rec[case] = entry
            print(
                f"{name:22s} {case:7s} "
                + (f"MACs ratio {entry['macs_ratio']:.3f}" if not entry["error"] else entry["error"][:150])
                + f"  ({entry['seconds']} s)",
                flush=True,
            )
        # OpenVINO's pass: exactness/MACs from run_openvino_pruning, the IR from ov_pass_ir
        entry = {"error": None}
        t0 = time.perf_counter()
        try:
            res = run_openvino_pruning(src)
            ver = res.get("verification") or {}
            entry.update(
                macs_before=res.get("macs_before"),
                macs_after=res.get("macs_after"),
                exact=ver.get("exact"),
                max_abs_diff=ver.get("max_abs_diff"),
                error=res.get("error"),
            )
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
        status = (
            f"MACs ratio {entry.get('macs_ratio', float('nan')):.3f} exact={entry.get('exact')}"
            if not entry["error"]
            else str(entry["error"])[:150]
        )
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
        probe = benchmark(
            [rec["original"]], backend="openvino", rounds=1, runs_per_round=5, warmup=2, throughput_seconds=0.05
        )[0].latency_median_ms
        out: dict[str, Any] = data.get(name, {})
        out["probe_latency_ms"] = probe
        groups = {
            "zero": ["zero", "ov_pass"],
            "l2": list(L2_CASES),
        }
        for gname, cases in groups.items():
            cases = [
                c
                for c in cases
                if not rec.get(c, {}).get("error") and rec.get(c, {}).get("path") and os.path.isfile(rec[c]["path"])
            ]
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
                    timings = benchmark(
                        paths,
                        backend="openvino",
                        rounds=rounds,
                        runs_per_round=runs,
                        warmup=args.warmup,
                        throughput_seconds=args.throughput_seconds,
                    )
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
            out[f"original_{gname}"] = {
                **timings[0].to_dict(),
                "rounds": rounds,
                "runs_per_round": runs,
                "warmup": args.warmup,
                "throughput_seconds": args.throughput_seconds,
                "wall_seconds": wall,
                "attempts": attempt,
                "busy_after": bool(intruders),
                "foreign_cores": round(foreign, 3),
                "niced_cores": round(niced, 3),
                "tolerate_niced": TOLERATE_NICED,
            }
            for c, t in zip(cases, timings[1:]):
                out[c] = {
                    **t.to_dict(),
                    "rounds": rounds,
                    "runs_per_round": runs,
                    "error": None,
                    "timed_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                }
                print(
                    f"{name:22s} {c:7s} MACs {rec[c]['macs_ratio']:.3f}  latency {t.latency_ratio:.3f}  "
                    f"throughput {t.throughput_ratio:.3f}  (orig {timings[0].latency_median_ms:.2f} ms, "
                    f"{rounds}x{runs} runs, {wall} s)",
                    flush=True,
                )
        data[name] = out
        _dump(path_json, data)


# --------------------------------------------------------------------------- phase: report
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", nargs="?", default="all", choices=["prune", "time", "report", "all"])
    ap.add_argument("--zoo", default="/work/zoo-nncf")
    ap.add_argument("--work", default="/tmp/speed", help="folder for pruned models and intermediate JSON")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per model file (latency)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--tolerate-niced",
        action="store_true",
        help="time even while niced (nice > 0) background jobs run; their load is recorded "
        "(niced_cores) and the rows are marked in the report",
    )
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
        phase_report(args, QUIET_CORES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
