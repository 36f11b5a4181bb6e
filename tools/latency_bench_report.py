"""The report of tools/bench_latency.py (issue 15's latency-target benchmark): the Markdown
table and the JSON record from the rows its plan and time phases measured. The cells and
verdicts are in latency_bench_report_cells, the tables in latency_bench_report_tables, the
per-model sections in latency_bench_report_models and the hand-written reading's handling in
latency_bench_report_reading; this module writes the two files."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from latency_bench_report_cells import apart_of, centered_verdict, row_label
from latency_bench_report_models import per_model
from latency_bench_report_reading import READING_HEADING, READING_MARKER, hand_written, with_reading
from latency_bench_report_tables import (
    QUIET,
    centered_table,
    detection_heldout_table,
    extra_table,
    headline_table,
    heldout_table,
    kept_table,
    labelled_table,
)

__all__ = [
    "QUIET",
    "READING_HEADING",
    "READING_MARKER",
    "centered_verdict",
    "detection_heldout_table",
    "extra_table",
    "hand_written",
    "headline_table",
    "heldout_table",
    "labelled_table",
    "phase_report",
    "with_reading",
]


def phase_report(
    rows: list[dict],
    out: Path,
    target: float,
    *,
    settings: Any,
    models: dict[str, dict],
    state: float,
    extra: list[dict] | None = None,
) -> None:
    """benchmarks/latency.md and .json from the rows of bench_latency's plan and time phases; the
    hand-written reading at the end of an earlier ``out`` .md (``hand_written``) is kept below
    the generated part."""
    reading = hand_written(out.with_suffix(".md"))
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "settings": settings.to_dict(),
        "target": target,
        "command": "python tools/bench_latency.py all --work DIR [--models ...]",
    }
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows, "extra": extra or []}, indent=2, default=str)
    )
    loads = [r["final"][k] for r in rows if r.get("final") for k in ("loadavg_before", "loadavg") if k in r["final"]]
    lines = [
        "# Latency target benchmark: prune to 0.7x of the measured latency",
        "",
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}; load average during the final runs "
        + (f"{min(loads):.2f}–{max(loads):.2f}  " if loads else "–  "),
        "Deployment measured: OpenVINO CPU, batch 1 (rows marked *batch N*: N inputs per inference), LATENCY hint, threads: the plugin's, **f32 inference precision** "
        "(INFERENCE_PRECISION_HINT=f32)  ",
        f"Produced by: `{meta['command']}`",
        "",
        "Latency plan: `prune --criterion l2 --latency-target 0.7 --calibration C --inputs E` (table, planner ranking "
        "moves by latency saved per measured fidelity lost, A/B confirmation; the digits CNN timed as a batch of 64 digits, see below). MACs "
        "plan: `prune --criterion l2 --macs-target F --calibration C --inputs E` at the same measured latency: F found "
        "by secant/bisection steps on the MACs target (each plan timed with the original and the latency plan in one "
        "interleaved run) until its ratio is within 0.01 of the latency plan's in the same run, 6 plans at most; *apart*: the MACs plan's ratio minus "
        "the latency plan's in the final run (both timed together). Answers kept: "
        "`--latency-target T --min-fidelity K` (the fastest model within T whose fidelity on the calibration samples "
        "stays >= K). *final*: each MACs plan timed with the original and the latency plan in one interleaved run of "
        "the three (the scan's measurement; few compiled models per run, as prune's A/B), the latency plan's ratio the "
        "median over those runs, the answers-kept plan with the original in a pair (rows marked *one run* below: the "
        "original and every plan in one interleaved run, as before 2026-11-30 19:00).",
        "",
        "**One measurement.** Every ratio here, in prune's confirmation, the MACs scan and the final run, is "
        "`onnxprune.latency.ab.measure_models`: each model compiled once for the LATENCY hint, rounds in rotating "
        "order, per round each model's fastest run, the median over rounds of the ratio to the original (p10–p90 of "
        "the per-round ratios beside it). Fidelity on held-out samples (calibration seed 1, evaluation seed 2): "
        "for the trained zoo (`*_glyphs`: torchvision's MobileNetV2, EfficientNet-B0 and ResNet-50 trained from "
        "scratch on `tools/glyph_task.py` by `tools/train_zoo.py`, exported as the zoo) prune's top-1 agreement "
        "with the original on 32 glyph images, and accuracy against the labels on 512 more in the table below; "
        "cosine for the random-weight zoo, prune's task metric on realistic inputs (`tools/corpus_inputs.py`) for "
        "the corpus models (top-1 for the table classifier, matched detections for YOLO), top-1 accuracy on the "
        "labelled test split for the digits CNN; cosine beside a task score.",
        "",
    ]
    kind = {r["model"]: models.get(r["model"].removesuffix("+rc"), {}).get("kind") for r in rows}
    lines += headline_table([r for r in rows if kind[r["model"]] != "zoo"])
    random_zoo = [r for r in rows if kind[r["model"]] == "zoo"]
    if random_zoo:
        when = ", ".join(sorted({r["final"]["when"][:10] for r in random_zoo if r.get("final")}))
        lines += [
            "",
            "**Random-weight zoo** (secondary: `tools/export_zoo.py --zeroing none`, random weights; their outputs "
            f"hardly depend on the input, see below; recorded {when}, not re-run since the trained rows replaced them "
            "as headline rows):",
            "",
        ]
        lines += headline_table(random_zoo)
    unmatched = [r for r in rows if not r.get("macs_plan_matched", True)]
    if unmatched:
        gaps = ", ".join(f"{row_label(r)} {apart_of(r):+.3f}" for r in unmatched)
        lines += [
            "",
            f"† the closest MACs plan measured this far from the latency plan's ratio in the same run: {gaps} "
            "(no MACs target the scan or the final run's refinement tried came closer).",
        ]
    rematched = [r for r in rows if r.get("final", {}).get("macs_candidates")]
    if rematched:
        lines += [
            "",
            "MACs plans timed in the final run (F: ratio; the closest to the latency plan's is the match): "
            + "; ".join(
                f"{row_label(r)} "
                + ", ".join(f"{c['macs_target']:.3f}: {c['ratio']:.3f}" for c in r["final"]["macs_candidates"])
                for r in rematched
            )
            + ".",
        ]
    lines += centered_table(rows)
    lines += labelled_table([r for r in rows if r.get("heldout", {}).get("labelled")])
    top1 = [r for r in rows if r.get("heldout") and not r["heldout"].get("labelled")]
    lines += heldout_table([r for r in top1 if r["heldout"].get("metric") != "detection"])
    lines += detection_heldout_table([r for r in top1 if r["heldout"].get("metric") == "detection"])
    lines += kept_table(rows)
    lines += extra_table(extra or [])
    lines += ["", "## Per model", ""]
    lines += per_model(rows, models, state)
    out.with_suffix(".md").write_text(with_reading(lines, reading))
