#!/usr/bin/env python3
"""Latency-target benchmark (issue 15): prune to 0.7x of the measured latency with L2 and
compare, at the same measured latency, with the --macs-target plan that gets there.

For each model:

1. ``plan``: ``onnxprune.prune(path, "l2", latency_target=T, latency=LatencySettings(precision="f32"),
   calibration=C, verification_inputs=E)`` (the latency table, the planner, the A/B
   confirmation); then the ``--macs-target`` plan at the same measured latency (same criterion,
   calibration and evaluation samples): secant steps on the MACs target, each plan timed with
   the original and the latency plan in one interleaved run (so a load that pulls every ratio
   toward 1 moves both alike), bracketed (bisection when the secant leaves the bracket), until
   one measures within 0.01 of the latency plan's ratio in the same run or 6 plans were timed;
   the closest is kept and its distance reported (the scan and the re-match below:
   tools/bench_latency_scan.py). ``NAME+rc`` rows (the trained models): the
   same with --reconstruct on both plans.
2. ``time``: the scan's MACs plans nearest to the latency plan (up to 3: the closest too slow,
   the closest fast enough, the next), each timed with the original and the latency plan in one
   interleaved run of the three (OpenVINO CPU, LATENCY hint, f32 inference precision, batch 1; the
   digits CNN as a batch of 64 digits, MODELS' ``batch``),
   the answers-kept plan with the original in a pair: few compiled models per run, as prune's
   A/B (one run of six measured MobileNetV2 35% slower than the runs of two and three minutes
   before, twice). The MACs plan closest to the latency plan *in its run* is the match (a match
   made in the scan minutes earlier can drift by more than the tolerance; when none is within
   it, one more MACs plan is pruned at the target the gaps point to and timed the same way,
   ``--refine`` times at most); the latency plan's ratio is the median over the runs: the
   headline ratios with their p10-p90 spreads. Every timing here (the scan's A/B runs and this one) is
   ``onnxprune.latency.ab.measure_models``, the code prune's own confirmation measures with
   (each model compiled once for the deployment's hint; rounds in rotating order; per round
   each model's fastest run; the median over rounds of the ratios to the original), so a plan
   is measured the same way in prune and here.
3. ``heldout`` (after the timing; not part of ``all``): the top-1 and detection rows' latency plan
   and matched MACs plan on many more held-out inputs, paired (tools/bench_latency_heldout.py;
   ``--heldout N`` inputs; ``heldout-inputs --heldout-inputs DIR`` makes them ahead, ``heldout
   --heldout-inputs DIR`` reads them back).
4. ``report``: benchmarks/latency.md and .json.

The headline zoo rows (``*_glyphs``) are torchvision's MobileNetV2, EfficientNet-B0 and ResNet-50
trained on tools/glyph_task.py by tools/train_zoo.py (labelled: their ``heldout`` phase scores
both plans' accuracy against the labels on 512 held-out images); the random-weight zoo's rows are
kept as recorded (models and inputs: tools/bench_latency_models.py).

Fidelity is measured by prune on held-out evaluation samples (never the calibration ones):
the run's score, cosine for the zoo and the table classifier (top-1 agreement of a handful of
samples is too coarse to rank units by), the detector's default metric for YOLO; the digits
CNN gets its top-1 accuracy on its labelled test split. Inputs: the digits fixtures; the corpus
models' realistic inputs from tools/corpus_inputs.py when it is there (else seeded uniform
[0, 1] images); seeded standard-normal images for the random-weight zoo exports.

    python tools/bench_latency.py all --work /tmp/latbench [--models a,b] [--target 0.7]

Some rows again, the others as recorded: ``--seed-rows benchmarks/latency.json`` puts the recorded
rows (and the extra table's) under the work folder's state first (its own rows win); the later
``heldout`` and ``report`` phases on that folder then show every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_latency_heldout import save_rows  # noqa: E402
from bench_latency_measures import centered_cosine, constant_cosine, digits_accuracy  # noqa: E402
from bench_latency_models import MODELS, RC, data_files, default_models, model_spec  # noqa: E402
from bench_latency_models import common_options as _common  # noqa: E402
from bench_latency_models import input_shapes as _shapes  # noqa: E402
from bench_latency_scan import MAX_SCAN, final_candidates, grouped_final, refined_target, rematch_row  # noqa: E402
from bench_latency_scan import matched_macs_plan as match_macs_plan  # noqa: E402
from latency_bench_report import phase_report  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.latency import LatencySettings  # noqa: E402
from onnxprune.latency.ab import measure_models  # noqa: E402

SETTINGS = LatencySettings(precision="f32")


def settings(spec: dict) -> LatencySettings:
    """How a row's models are deployed and timed, in prune's A/B and here: ``SETTINGS`` at the
    row's ``batch`` (MODELS; 1 unless given: the digits CNN is timed as a batch of digits)."""
    batch = int(spec.get("batch", 1))
    return SETTINGS if batch == SETTINGS.batch else LatencySettings(precision=SETTINGS.precision, batch=batch)


# The original's ms in the final run this far from prune's A/B run: the machine was in another
# state (see README, "Measuring on a shared machine"), its ratios pulled toward 1 or away.
STATE = 0.1


def _summary(result: Any) -> dict:
    r = result.report
    return {
        "macs_ratio": r.macs_after / r.macs_before if r.macs_before else None,
        "fidelity": r.fidelity_score,
        "fidelity_metrics": {o.name: {"metric": o.metric, "value": o.value} for o in r.fidelity_metrics or ()},
        "cosine": min((f.cosine for f in r.fidelity or ()), default=None),
        "top1_agreement": min(
            (f.top1_agreement for f in r.fidelity or () if f.top1_agreement is not None), default=None
        ),
        "channels_removed": r.channels_removed,
        "channels_total": r.channels_total,
        "notes": list(r.notes),
    }


def timed(files: list[str], spec: dict, seconds: float, rounds: int) -> Any:
    """``files`` timed together, ``seconds`` per model: prune's own measurement."""
    return measure_models(
        files, settings(spec), rounds=rounds, seconds=seconds * len(files), input_shapes=_shapes(spec) or None
    )


def ab(original: str, candidate: str, spec: dict, seconds: float, latency_plan: str | None = None) -> dict:
    """``candidate`` against ``original`` (and the ``latency_plan`` in the same run: ``gap``, the
    candidate's ratio minus the latency plan's)."""
    t = timed([original, candidate, *([latency_plan] if latency_plan else [])], spec, seconds, rounds=20)
    extra = {"latency_plan_ratio": t.ratio[2], "gap": t.ratio[1] - t.ratio[2]} if latency_plan else {}
    return {
        **extra,
        "ratio": t.ratio[1],
        "ratio_p10": t.ratio_p10[1],
        "ratio_p90": t.ratio_p90[1],
        "original_ms": t.latency[0] * 1e3,
        "candidate_ms": t.latency[1] * 1e3,
        "median_ratio": t.median[1] / t.median[0],
        "precision": t.precision[1],
    }


def phase_plan(
    name: str, spec: dict, work: Path, target: float, n: int, seconds: float, keep: bool = True, steps: int = MAX_SCAN
) -> dict:
    common, ev = plan_options(name, spec, work, n)
    keep = keep and not spec.get("reconstruct")
    lat_path = str(work / f"{name}_latency.onnx")
    t0 = time.perf_counter()
    target = spec.get("target", target)
    res = onnxprune.prune(spec["path"], "l2", latency_target=target, latency=settings(spec), output=lat_path, **common)
    row: dict[str, Any] = {
        "model": name,
        "path": spec["path"],
        "target": target,
        "reconstruct": bool(spec.get("reconstruct")),
        "prune_seconds": time.perf_counter() - t0,
        "latency_plan": {**_summary(res), "latency": res.report.latency.to_dict(), "file": lat_path},
    }
    if spec["kind"] == "zoo":
        row["latency_plan"]["centered_cosine"] = centered_cosine(spec["path"], lat_path, ev)
        row["constant_cosine"] = constant_cosine(spec["path"], common["calibration"], ev)
    if spec["kind"] == "digits":
        row["latency_plan"]["accuracy"] = digits_accuracy(lat_path)
        row["original_accuracy"] = digits_accuracy(spec["path"])
    if keep and spec.get("keep"):  # the fastest model within the target that keeps the answers
        kept_path = str(work / f"{name}_latency_kept.onnx")
        t1 = time.perf_counter()
        kr = onnxprune.prune(
            spec["path"],
            "l2",
            latency_target=target,
            min_fidelity=spec["keep"],
            latency=settings(spec),
            output=kept_path,
            **common,
        )
        row["kept_plan"] = {
            **_summary(kr),
            "min_fidelity": spec["keep"],
            "latency": kr.report.latency.to_dict(),
            "file": kept_path,
            "prune_seconds": time.perf_counter() - t1,
        }
        if spec["kind"] == "digits":
            row["kept_plan"]["accuracy"] = digits_accuracy(kept_path)
    row.update(matched_macs_plan(name, spec, work, common, ev, seconds, res, lat_path, steps=steps))
    return row


def plan_options(name: str, spec: dict, work: Path, n: int) -> tuple[dict, str]:
    """prune's options of both plans of a headline row, and its evaluation file."""
    cal, ev = data_files(name, spec, work, n)
    return {**_common(spec, cal, ev), **({"reconstruct": True} if spec.get("reconstruct") else {})}, ev


def new_macs_plan(name: str, spec: dict, work: Path, common: dict, ev: str, t: float, tag: str = "") -> dict:
    """The --macs-target ``t`` plan with the latency plan's options, its fidelity (not timed)."""
    path = str(work / f"{name}{tag}_macs_{t:.3f}.onnx")
    r = onnxprune.prune(spec["path"], "l2", macs_target=t, output=path, **common)
    entry = {"macs_target": t, **_summary(r), "file": path}
    if spec["kind"] == "digits":
        entry["accuracy"] = digits_accuracy(path)
    if spec["kind"] == "zoo":
        entry["centered_cosine"] = centered_cosine(spec["path"], path, ev)
    return entry


def matched_macs_plan(
    name: str,
    spec: dict,
    work: Path,
    common: dict,
    ev: str,
    seconds: float,
    res: Any,
    lat_path: str,
    tag: str = "",
    steps: int = MAX_SCAN,
) -> dict:
    """The --macs-target plan (same options) of the latency plan's (``res``, written to
    ``lat_path``) measured latency (``bench_latency_scan``): each candidate timed with the
    original and the latency plan."""

    def macs_plan(t: float) -> dict:
        entry = new_macs_plan(name, spec, work, common, ev, t, tag)
        return {**entry, "ab": ab(spec["path"], entry["file"], spec, seconds, latency_plan=lat_path)}

    macs = res.report.macs_after / res.report.macs_before
    return match_macs_plan(res.report.latency.measured_ratio, macs, macs_plan, steps=steps)


def phase_time(row: dict, spec: dict, seconds: float, new_plan: Any = None, refine: int = 0) -> None:
    """The final run: each MACs plan nearest to the latency plan (``final_candidates``, and the ones
    earlier refinements added) timed with the original and the latency plan in one interleaved
    run of the three (the scan's measurement, ``ab``), the answers-kept plan with the original in
    a pair (prune's); the MACs plan closest to the latency plan in its run is the match. None
    within MATCH: ``new_plan(t)`` prunes the MACs plan ``refined_target`` picks from the gaps and
    its run is added, up to ``refine`` times. Few models per run, as a user deploying one model at a
    time compares (``grouped_final``); the latency plan's ratio is the median over the runs."""
    scan = row.get("macs_scan") or []
    candidates = [*(final_candidates(scan) if scan else [row["macs_plan"]]), *row.get("final_refined", [])]
    original, latency_plan = spec["path"], row["latency_plan"]["file"]
    load = os.getloadavg()[0]
    busy0, cpu0, wall0 = _machine_busy(), time.process_time(), time.perf_counter()
    triples = [timed([original, e["file"], latency_plan], spec, seconds, rounds=20).to_dict() for e in candidates]
    earlier: list[list] = []
    while True:
        gaps = [
            (e["macs_target"], t["models"][1]["ratio"] - t["models"][2]["ratio"]) for e, t in zip(candidates, triples)
        ]
        tried = [e["macs_target"] for e in (*scan, *candidates)]
        nxt = refined_target(gaps, tried) if new_plan is not None and len(earlier) < refine else None
        if nxt is None:
            break
        earlier.append(gaps)
        print(f"  final run: none within the match, MACs target {nxt} pruned and timed", flush=True)
        candidates.append(new_plan(nxt))
        row.setdefault("final_refined", []).append(candidates[-1])
        triples.append(timed([original, candidates[-1]["file"], latency_plan], spec, seconds, rounds=20).to_dict())
    pair = (
        timed([original, row["kept_plan"]["file"]], spec, seconds, rounds=20).to_dict() if "kept_plan" in row else None
    )
    busy1, cpu1, wall1 = _machine_busy(), time.process_time(), time.perf_counter()
    timings = grouped_final(triples, pair)
    best = rematch_row(row, candidates, [g for _, g in gaps], 0.0)
    models = timings["models"]
    row["final"] = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds_per_model": seconds,
        "measurement": "onnxprune.latency.ab.measure_models: one run per (original, MACs plan, latency plan), "
        "the kept plan's with the original",
        "grouped": True,
        "timings": timings,
        "runs": {"triples": triples, "kept_pair": pair},
        "latency_plan_ratio": models[1]["ratio"],
        "macs_plan_ratio": models[2 + best]["ratio"],
        "apart": gaps[best][1],  # in the match's own run
        "macs_index": 2 + best,
        "macs_candidates": [
            {"macs_target": e["macs_target"], "ratio": t["models"][1]["ratio"], "gap": g}
            for e, t, (_, g) in zip(candidates, triples, gaps)
        ],
        "kept_index": len(models) - 1 if pair else None,
        "kept_plan_ratio": models[-1]["ratio"] if pair else None,
        "loadavg_before": load,
        "loadavg": os.getloadavg()[0],
        "earlier_runs_gaps": earlier,  # (MACs target, gap) before each refinement
        # cores busy on the whole machine and in this process while timing (a refinement's pruning
        # included): more busy than this process is other work sharing the cores
        "machine_busy_cores": (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1) * (os.cpu_count() or 1),
        "process_cores": (cpu1 - cpu0) / max(wall1 - wall0, 1e-9),
    }
    before = chosen_original_ms(row["latency_plan"]["latency"])
    if before is not None:  # an additive per-inference cost (other work on the cores) pulls ratios toward 1
        row["final"]["original_ms_in_prune"] = before
        row["final"]["original_ms_change"] = models[0]["latency_s"] * 1e3 / before - 1.0


def _machine_busy() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat; zeros where there is none)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0), sum(ticks)


def chosen_original_ms(latency: dict) -> float | None:
    """The original's ms in the A/B run of the plan prune chose."""
    for a in latency["attempts"]:
        if a["measured_ratio"] == latency["measured_ratio"] and a.get("original_ms") is not None:
            return a["original_ms"]
    return None


def seeded_rows(recorded: list[dict], rows: dict[str, dict]) -> dict[str, dict]:
    """A recorded benchmark's ``rows`` under the work folder's ``rows`` (by model; the work
    folder's win): the rows a partial re-run's report shows."""
    return {**{r["model"]: r for r in recorded}, **rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "phase", choices=("plan", "time", "report", "all", "extra", "extra-time", "heldout", "heldout-inputs")
    )
    p.add_argument(
        "--models",
        default=",".join(default_models()),
        help=f"names of MODELS; NAME{RC}: with --reconstruct on both plans",
    )
    p.add_argument(
        "--extra-targets",
        default="0.9,0.8",
        help="extra: the targets (with and without --reconstruct on both plans) where answers partly survive",
    )
    p.add_argument(
        "--extra-reconstruct",
        choices=("both", "no", "yes"),
        default="both",
        help="extra: the rows without --reconstruct, with it, or both (default)",
    )
    p.add_argument("--work", default="/tmp/latbench")
    p.add_argument("--target", type=float, default=0.7)
    p.add_argument("--samples", type=int, default=16, help="calibration and evaluation samples each")
    p.add_argument("--scan-seconds", type=float, default=3.0, help="timed seconds per model in each scan A/B")
    p.add_argument("--scan-steps", type=int, default=MAX_SCAN, help="MACs plans pruned and timed at most per model")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per model in the final run")
    p.add_argument(
        "--refine",
        type=int,
        default=1,
        help="final runs added at most when none of its MACs plans is within the match (one more MACs plan each)",
    )
    p.add_argument(
        "--heldout",
        type=int,
        metavar="N",
        help="heldout: this many held-out inputs for the rows that have them (default: the row's, MODELS' heldout)",
    )
    p.add_argument(
        "--heldout-inputs",
        metavar="DIR",
        help="heldout: keep the corpus models' held-out inputs in DIR (made once, read back after); "
        "the heldout-inputs phase only makes them (e.g. before a quiet window: rendering YOLO's pages takes longer "
        "than running it)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "latency"))
    p.add_argument("--extra-rows", metavar="JSON", help="the extra phase's rows (default: WORK/extra.json)")
    p.add_argument(
        "--seed-rows",
        metavar="JSON",
        help="a recorded benchmark (benchmarks/latency.json): its rows (and extra rows) go into WORK's state "
        "first, WORK's own rows win, so re-running some rows and the report keeps the others as recorded",
    )
    p.add_argument(
        "--no-keep",
        dest="keep",
        action="store_false",
        help="skip the --latency-target + --min-fidelity run (digits and the corpus models)",
    )
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    state = work / "rows.json"
    rows = {r["model"]: r for r in json.loads(state.read_text())} if state.exists() else {}
    names = [m for m in args.models.split(",") if m]
    extra_state = Path(args.extra_rows) if args.extra_rows else work / "extra.json"
    extra = json.loads(extra_state.read_text()) if extra_state.exists() else []
    if args.seed_rows:
        recorded = json.loads(Path(args.seed_rows).read_text())
        rows = seeded_rows(recorded.get("rows", []), rows)
        save_rows(state, rows)
        if not extra_state.exists():  # the later phases' reports keep the recorded extra table
            extra = recorded.get("extra", [])
            extra_state.write_text(json.dumps(extra, indent=2, default=str))
    if args.phase in ("extra", "extra-time"):
        # the extra table's phases import this module by name: run as a script it is __main__
        sys.modules.setdefault("bench_latency", sys.modules[__name__])
        from bench_latency_extra import extra_phase

        extra_phase(args, names, work, extra, extra_state)
        return 0
    if args.phase in ("heldout", "heldout-inputs"):  # the rows' plans on more held-out inputs (after the timing)
        from bench_latency_heldout import cached_make, heldout_inputs_phase, heldout_phase

        make = cached_make(Path(args.heldout_inputs)) if args.heldout_inputs else None
        if args.phase == "heldout-inputs":
            if make is None:
                p.error("heldout-inputs needs --heldout-inputs DIR")
            print(f"[heldout-inputs] {', '.join(heldout_inputs_phase(names, model_spec, make, args.heldout))}")
            return 0
        heldout_phase(names, rows, state, model_spec, make, args.heldout)
        return 0
    for name in names:
        spec = model_spec(name)
        if args.phase in ("plan", "all"):
            print(f"[plan] {name}", flush=True)
            rows[name] = phase_plan(
                name, spec, work, args.target, args.samples, args.scan_seconds, args.keep, args.scan_steps
            )
            rows[name]["inputs_note"] = spec.get("inputs_note", "")
            save_rows(state, rows)
        if args.phase in ("time", "all") and name in rows:
            print(f"[time] {name}", flush=True)
            common, ev = plan_options(name, spec, work, args.samples)

            def new_plan(t: float, name: str = name, spec: dict = spec, common: dict = common, ev: str = ev) -> dict:
                return new_macs_plan(name, spec, work, common, ev, t)

            phase_time(rows[name], spec, args.seconds, new_plan, args.refine)
            save_rows(state, rows)
    if args.phase in ("report", "all"):
        order = [m for base in MODELS for m in (base, base + RC)]
        ordered = [rows[m] for m in order if m in rows]
        phase_report(ordered, Path(args.out), args.target, settings=SETTINGS, models=MODELS, state=STATE, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
