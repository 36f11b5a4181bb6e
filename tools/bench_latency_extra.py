"""The extra table of tools/bench_latency.py: targets where trained models' answers partly
survive, with and without --reconstruct on both plans.

``extra`` plans each row (the latency plan, its MACs plan matched by the scan) and times the
original, the latency plan and the scan's nearest MACs plans together once; ``extra-time`` times
rows planned earlier together again (the final run's re-match and refinement, ``phase_time``),
so rows planned on a loaded machine get their comparison at equal latency on a quiet one."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_latency as bench

import onnxprune

__all__ = ["extra_phase", "phase_extra", "retime_extra"]

RECONSTRUCT = {"both": (False, True), "no": (False,), "yes": (True,)}


def _tag(target: float, reconstruct: bool) -> str:
    return f"_x{target:g}{'_rc' if reconstruct else ''}"


def _options(name: str, spec: dict, work: Path, n: int, reconstruct: bool) -> tuple[dict, str]:
    cal, ev = bench.data_files(name, spec, work, n)
    return {**bench._common(spec, cal, ev), "reconstruct": reconstruct}, ev


def phase_extra(
    name: str,
    spec: dict,
    work: Path,
    n: int,
    seconds: float,
    targets: list[float],
    reconstructs: tuple[bool, ...] = (False, True),
    steps: int = bench.MAX_SCAN,
) -> list[dict]:
    """Where answers partly survive: at each target, with and without --reconstruct on both
    plans, the latency plan and the MACs plan of the same measured latency, held-out task metric;
    then the original, the latency plan and the MACs plans nearest to it timed together (a
    short interleaved run; the closest there is the match)."""
    rows = []
    for target in targets:
        for reconstruct in reconstructs:
            tag = _tag(target, reconstruct)
            common, ev = _options(name, spec, work, n, reconstruct)
            path = str(work / f"{name}{tag}_latency.onnx")
            t0 = time.perf_counter()
            res = onnxprune.prune(
                spec["path"], "l2", latency_target=target, latency=bench.settings(spec), output=path, **common
            )
            row: dict[str, Any] = {
                "model": name,
                "target": target,
                "reconstruct": reconstruct,
                "prune_seconds": time.perf_counter() - t0,
                "loadavg": os.getloadavg()[0],
                "latency_plan": {**bench._summary(res), "latency": res.report.latency.to_dict(), "file": path},
            }
            if spec["kind"] == "digits":
                row["latency_plan"]["accuracy"] = bench.digits_accuracy(path)
            row.update(bench.matched_macs_plan(name, spec, work, common, ev, seconds, res, path, tag, steps))
            candidates = bench.final_candidates(row["macs_scan"])
            t = bench.timed([spec["path"], path, *(e["file"] for e in candidates)], spec, seconds, rounds=20)
            ratios = [t.ratio[2 + i] for i in range(len(candidates))]
            best = bench.rematch_row(row, candidates, ratios, t.ratio[1])
            row["together"] = {
                "latency_plan_ratio": t.ratio[1],
                "macs_plan_ratio": ratios[best],
                "macs_candidates": [{"macs_target": e["macs_target"], "ratio": r} for e, r in zip(candidates, ratios)],
                "loadavg": os.getloadavg()[0],
            }
            print(json.dumps({k: row[k] for k in ("model", "target", "reconstruct", "together")}), flush=True)
            rows.append(row)
    return rows


def retime_extra(row: dict, spec: dict, work: Path, n: int, seconds: float, refine: int) -> None:
    """The row's original, latency plan and nearest MACs plans timed together again, as the
    headline rows' final run (``phase_time``: re-match, and up to ``refine`` more MACs plans
    when none matches); ``together`` becomes this run's (the one made when it was planned is
    kept as ``together_at_plan``)."""
    name, target, reconstruct = row["model"], row["target"], row["reconstruct"]
    common, ev = _options(name, spec, work, n, reconstruct)

    def new_plan(t: float) -> dict:
        return bench.new_macs_plan(name, spec, work, common, ev, t, _tag(target, reconstruct))

    row.setdefault("together_at_plan", row["together"])
    bench.phase_time(row, spec, seconds, new_plan, refine)
    fin = row.pop("final")
    row["together"] = {
        "latency_plan_ratio": fin["latency_plan_ratio"],
        "macs_plan_ratio": fin["macs_plan_ratio"],
        "macs_candidates": fin["macs_candidates"],
        **({"apart": fin["apart"]} if "apart" in fin else {}),
        "loadavg": fin["loadavg"],
        "retimed": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "earlier_runs_gaps": fin["earlier_runs_gaps"],
    }
    print(json.dumps({k: row[k] for k in ("model", "target", "reconstruct", "together")}), flush=True)


def extra_phase(args: Any, names: list[str], work: Path, extra: list[dict], state: Path) -> None:
    """bench_latency's ``extra`` and ``extra-time`` phases for ``names``; the rows saved to
    ``state`` after each model (a row of the same model, target and --reconstruct replaced)."""
    targets = [float(t) for t in args.extra_targets.split(",")]
    for name in names:
        spec = bench.model_spec(name)
        if args.phase == "extra":
            print(f"[extra] {name}", flush=True)
            new = phase_extra(
                name,
                spec,
                work,
                args.samples,
                args.scan_seconds,
                targets,
                RECONSTRUCT[args.extra_reconstruct],
                args.scan_steps,
            )
            keys = {(r["model"], r["target"], r["reconstruct"]) for r in new}
            extra[:] = [r for r in extra if (r["model"], r["target"], r["reconstruct"]) not in keys] + new
        else:
            for row in extra:
                if row["model"] == name and row["target"] in targets:
                    if row["reconstruct"] in RECONSTRUCT[args.extra_reconstruct]:
                        print(f"[extra-time] {name} {row['target']:g} reconstruct {row['reconstruct']}", flush=True)
                        retime_extra(row, spec, work, args.samples, args.seconds, args.refine)
        state.write_text(json.dumps(extra, indent=2, default=str))
