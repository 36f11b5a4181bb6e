"""The report of tools/bench_latency.py (issue 15's latency-target benchmark): the Markdown
table and the JSON record from the rows its plan and time phases measured."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

QUIET = 3.0  # an extra row measured at a load average below this ran on the quiet machine

# The report's Markdown ends with the hand-written reading of each window: everything from this
# line to the end of the file is written by hand and kept as it is when the report is written
# again (the generated part above it is replaced).
READING_MARKER = (
    "<!-- Reading sections: written by hand below this line; tools/bench_latency.py report keeps them "
    "when it writes this file again -->"
)
READING_HEADING = "## Reading"  # a file from before the marker: its hand-written part starts here


def _better(fl: float | None, fm: float | None, cl: float | None, cm: float | None) -> str:
    """Is the latency plan's fidelity (``fl``; cosine ``cl``) better than the MACs plan's
    (``fm``, ``cm``): by the score, else by the cosine beneath an equal score."""
    if fl is not None and fm is not None and fl != fm:
        return "yes" if fl > fm else "**no**"
    if cl is not None and cm is not None and cl != cm:
        return f"equal score; cosine {'yes' if cl > cm else '**no**'}"
    return "equal"


def _f(x: Any, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _fid(entry: dict, acc: bool) -> tuple[float | None, float | None]:
    """(task score, cosine) of a plan: the digits CNN's accuracy, else prune's held-out fidelity."""
    return (entry.get("accuracy") if acc else entry["fidelity"]), entry.get("cosine")


def _score(value: float | None, cos: float | None, show_cos: bool) -> str:
    return _f(value, ".4f") + (f" (cos {cos:.4f})" if show_cos and cos is not None else "")


def _apart(row: dict) -> float:
    """The MACs plan's ratio minus the latency plan's: in the final run, else in the scan."""
    fin = row.get("final")
    if not fin:
        return row["macs_plan_gap"]
    return fin.get("apart", fin["macs_plan_ratio"] - fin["latency_plan_ratio"])  # grouped: in the match's own run


def _label(row: dict) -> str:
    """The row's model, and the option both its plans were made with."""
    return f"{row['model'].removesuffix('+rc')} + reconstruct" if row.get("reconstruct") else row["model"]


def _ratio(fin: dict, i: int) -> str:
    m = fin["timings"]["models"][i]
    return f"{m['ratio']:.3f} ({m['ratio_p10']:.3f}–{m['ratio_p90']:.3f})"


def _scan_ratio(plan: dict) -> str:
    """A MACs plan's ratio in its scan A/B run; "refined" for one the final run's refinement made
    (timed only with every plan together)."""
    return f"{plan['ab']['ratio']:.3f}" if plan.get("ab") else "refined"


def _retimed_load(together: dict) -> str:
    """The load of a together run made again after the plans (``extra-time``), beside theirs."""
    return f", {together['loadavg']:.1f}" if together.get("retimed") else ""


def extra_table(extra: list[dict]) -> list[str]:
    """The table of targets where trained models' answers partly survive (bench_latency extra)."""
    if not extra:
        return []
    quiet = sum(r.get("loadavg", float("inf")) < QUIET for r in extra)
    retimed = sum(bool(r["together"].get("retimed")) and r["together"]["loadavg"] < QUIET for r in extra)
    where = (
        "run in the quiet window"
        if quiet == len(extra)
        else "planned under the shared machine's load, then every pair timed *together* again in the quiet window "
        "(load: at the plans, at the together run)"
        if retimed == len(extra)
        else "run under the shared machine's load, not in the quiet window"
        if not quiet
        else f"rows at load < {QUIET:g} run in the quiet window, the others under the shared machine's load"
    )
    lines = [
        "",
        "**Where the answers partly survive** (trained models, higher targets, with and without `--reconstruct` "
        f"on both plans; {where}; each pair is compared "
        "by its own A/B runs and by one interleaved run of the original and both plans, *together*): the "
        "latency plan against the `--macs-target` plan matched to its measured latency, the task metric on "
        "held-out realistic inputs (cosine beside it).",
        "",
        "| model | target | reconstruct | latency plan: A/B, together | MACs | MACs plan: F, A/B, together "
        "| apart (together) | metric | latency plan | MACs plan | latency plan better | load |",
        "|---|---:|:-:|---:|---:|---:|---:|---|---:|---:|:-:|---:|",
    ]
    for r in extra:
        lat, mp, tog = r["latency_plan"], r["macs_plan"], r["together"]
        acc = "accuracy" in lat
        (fl, cl), (fm, cm) = _fid(lat, acc), _fid(mp, acc)
        metric = "accuracy" if acc else ",".join(sorted({m["metric"] for m in lat["fidelity_metrics"].values()}))
        better = _better(fl, fm, cl, cm)
        apart = tog.get("apart", tog["macs_plan_ratio"] - tog["latency_plan_ratio"])
        if abs(apart) > 0.01:
            better += " (not at equal latency)"
        lines.append(
            f"| {r['model']} | {r['target']:g} | {'yes' if r['reconstruct'] else 'no'} "
            f"| {lat['latency']['measured_ratio']:.3f}, {tog['latency_plan_ratio']:.3f} | {_f(lat['macs_ratio'])} "
            f"| {mp['macs_target']:.3f}, {_scan_ratio(mp)}{'' if r.get('macs_plan_matched', True) else ' †'}, "
            f"{tog['macs_plan_ratio']:.3f} | {apart:+.3f} | {metric} | {_score(fl, cl, True)} | {_score(fm, cm, True)} "
            f"| {better} | {r.get('loadavg', float('nan')):.1f}{_retimed_load(tog)} |"
        )
    return lines


# Below this centered cosine a plan has kept nothing of the input-dependent output (unrelated
# outputs score about 0 either way): two such plans are not told apart by it.
KEPT_NOTHING = 0.05


def centered_verdict(latency: float, macs: float) -> str:
    """Whether the latency plan keeps more of the input-dependent output than the MACs plan
    (centered cosines); neither, when both kept nothing of it (``KEPT_NOTHING``)."""
    if max(latency, macs) < KEPT_NOTHING:
        return f"neither keeps any (both < {KEPT_NOTHING:g})"
    return "yes" if latency > macs else "**no**"


def heldout_table(rows: list[dict]) -> list[str]:
    """The top-1 rows on many more held-out inputs (``bench_latency_heldout``): both plans on the
    same inputs, the inputs only one of them gets right, and whether the difference stands out of
    its noise (McNemar's normal approximation: |only latency - only MACs| > 2 sqrt(their sum))."""
    if not rows:
        return []
    lines = [
        "",
        "**Top-1 rows on more held-out inputs.** The table's fidelity is top-1 agreement on 16 evaluation crops "
        "(one flip: 0.0625). Here both plans of the row on the same larger set of realistic crops "
        "(`tools/bench_latency_heldout.py`, `tools/corpus_inputs.py` seeds beside), paired: *only*: inputs only that "
        "plan gets right; *stands out*: |only latency − only MACs| > 2·sqrt(their sum) (McNemar, about 95%).",
        "",
        "| model | inputs (seeds) | latency plan: top-1 (cos) | MACs plan F: top-1 (cos) | only latency | only MACs "
        "| latency plan's top-1 better |",
        "|---|---:|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        h = r["heldout"]
        a, b = h["only_latency"], h["only_macs"]
        verdict = _row_verdict(r, a, b)
        lines.append(
            f"| {_label(r)} | {h['n']} ({h['seeds'][0]}–{h['seeds'][1]}) "
            f"| {h['latency']['top1']:.4f} ({h['latency']['cosine']:.4f}) "
            f"| {h['macs_target']:.3f}: {h['macs']['top1']:.4f} ({h['macs']['cosine']:.4f}) | {a} | {b} | {verdict} |"
        )
    return lines


def detection_heldout_table(rows: list[dict]) -> list[str]:
    """The detector's rows on many more held-out inputs (``bench_latency_heldout.paired_detection``):
    both plans' mean detection score against the original on the same inputs, the inputs each plan
    scores higher on, and whether that difference stands out of its noise (the sign test, McNemar's
    form: |higher latency - higher MACs| > 2 sqrt(their sum))."""
    if not rows:
        return []
    lines = [
        "",
        "**Detection rows on more held-out inputs.** The table's detection score is on 8 evaluation pages. Here "
        "both plans of the row on the same larger set of realistic pages (`tools/bench_latency_heldout.py`, "
        "`tools/corpus_inputs.py` seeds beside), paired: per page prune's detection score against the original "
        "(its detections at score ≥ 0.25 matched by IoU; 1 where neither detects anything), the mean over pages; "
        "*higher*: pages where that plan scores higher than the other; *difference*: the mean paired difference "
        "(latency − MACs) ± its standard error; *stands out*: |higher latency − higher MACs| > 2·sqrt(their sum) "
        "(the sign test, about 95%).",
        "",
        "| model | pages (seeds) | original's detections | latency plan: detection (cos) | MACs plan F: detection (cos) "
        "| higher latency | higher MACs | difference | latency plan's detection better |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        h = r["heldout"]
        a, b = h["higher_latency"], h["higher_macs"]
        verdict = _row_verdict(r, a, b)
        lines.append(
            f"| {_label(r)} | {h['n']} ({h['seeds'][0]}–{h['seeds'][1]}) | {h['reference_detections']} "
            f"| {h['latency']['detection']:.4f} ({h['latency']['cosine']:.4f}) "
            f"| {h['macs_target']:.3f}: {h['macs']['detection']:.4f} ({h['macs']['cosine']:.4f}) | {a} | {b} "
            f"| {h['mean_difference']:+.4f} ± {h['difference_se']:.4f} | {verdict} |"
        )
    return lines


def heldout_verdict(h: dict) -> str:
    """A row's paired held-out comparison in a few words for the headline table: how many inputs,
    and whether the latency plan is better beyond noise (the tables below give the figures)."""
    if h.get("metric") == "detection":
        return f"{h['n']} more pages: {_paired_verdict(h['higher_latency'], h['higher_macs'])}"
    what = "labelled images" if h.get("labelled") else "inputs"
    return f"{h['n']} {what}: {_paired_verdict(h['only_latency'], h['only_macs'])}"


def _row_verdict(row: dict, only_latency: int, only_macs: int) -> str:
    """A held-out table's verdict for one row: the paired verdict, flagged when the row's MACs plan
    measured more than 0.01 from the latency plan's ratio (then not a comparison at equal latency);
    a row without a MACs plan measurement is not flagged."""
    verdict = _paired_verdict(only_latency, only_macs)
    measured = "final" in row or "macs_plan_gap" in row
    return verdict + " (not at equal latency)" if measured and abs(_apart(row)) > 0.01 else verdict


def _paired_verdict(only_latency: int, only_macs: int) -> str:
    """Whether the latency plan's paired count stands out of its noise: |a - b| > 2 sqrt(a + b)
    (McNemar, about 95%)."""
    a, b = only_latency, only_macs
    if abs(a - b) > 2 * (a + b) ** 0.5:
        return "yes" if a > b else "**no**"
    return "tie (within noise)"


def labelled_table(rows: list[dict]) -> list[str]:
    """The trained zoo on many labelled held-out glyph images (``bench_latency_heldout``): the
    original's, the latency plan's and the matched MACs plan's top-1 accuracy against the labels,
    each plan's top-1 agreement with the original and cosine, and whether the accuracy difference
    stands out of its noise (McNemar as in ``heldout_table``)."""
    if not rows:
        return []
    lines = [
        "",
        "**Trained zoo on labelled held-out images** (the decisive comparison for these rows): `tools/glyph_task.py` "
        "images never trained on (the seed beside), the same images for every model; accuracy against the labels, "
        "*agree*: top-1 agreement with the original, cos: output cosine with the original; *only*: images only that "
        "plan classifies right; *stands out*: |only latency − only MACs| > 2·sqrt(their sum) (McNemar, about 95%).",
        "",
        "| model | images (seed) | original accuracy | latency plan: accuracy, agree, cos | MACs plan F: accuracy, agree, cos "
        "| only latency | only MACs | latency plan's accuracy better |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        h = r["heldout"]
        a, b = h["only_latency"], h["only_macs"]
        verdict = _row_verdict(r, a, b)
        lat, mac = h["latency"], h["macs"]
        lines.append(
            f"| {_label(r)} | {h['n']} ({h['seeds'][0]}) | {h['original']['accuracy']:.4f} "
            f"| {lat['accuracy']:.4f}, {lat['top1']:.4f}, {lat['cosine']:.4f} "
            f"| {h['macs_target']:.3f}: {mac['accuracy']:.4f}, {mac['top1']:.4f}, {mac['cosine']:.4f} | {a} | {b} | {verdict} |"
        )
    return lines


def headline_table(rows: list[dict]) -> list[str]:
    """One line per row: the latency plan in prune and in the final run, its fidelity, the
    matched MACs plan's, and whether the latency plan's is better."""
    lines = [
        "| model | target | original ms (final) | latency plan: in prune (p10–p90) | final (p10–p90) | ≤ target + 0.02 "
        "| MACs | metric | fidelity | MACs plan: F (MACs) | final (p10–p90) | apart | fidelity | latency plan's fidelity better |",
        "|---|---:|---:|---:|---:|:-:|---:|---|---:|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        lat, mp, fin = r["latency_plan"], r["macs_plan"], r.get("final")
        L = lat["latency"]
        acc = "accuracy" in lat
        (fl, cl), (fm, cm) = _fid(lat, acc), _fid(mp, acc)
        metric = "accuracy" if acc else ",".join(sorted({m["metric"] for m in lat["fidelity_metrics"].values()}))
        if fin:
            lr, mr = _ratio(fin, 1), _ratio(fin, fin.get("macs_index", 2))
            apart = f"{_apart(r):+.3f}"
            ok = "yes" if fin["latency_plan_ratio"] <= r["target"] + 0.02 else "**no**"
            base_s = f"{fin['timings']['models'][0]['latency_s'] * 1e3:.2f}"
        else:
            lr = mr = "–"
            apart = f"{r['macs_plan_gap']:+.3f} (A/B)" if "macs_plan_gap" in r else "–"
            ok = "yes" if L["measured_ratio"] <= r["target"] + 0.02 else "**no**"
            base_s = f"{L['baseline_ms']:.2f} (table)"
        better = _better(fl, fm, cl, cm)
        show_cos = metric != "cosine"
        if fin and abs(_apart(r)) > 0.01:
            better += " (not at equal latency)"
        if r.get("heldout"):
            better += f"; {heldout_verdict(r['heldout'])}"
        lines.append(
            f"| {_label(r)} | {r['target']:g} | {base_s} | {L['measured_ratio']:.3f} ({L['measured_p10']:.3f}–{L['measured_p90']:.3f}) "
            f"| {lr} | {ok} | {_f(lat['macs_ratio'])} | {metric} | {_score(fl, cl, show_cos)} "
            f"| {mp['macs_target']:.3f} ({_f(mp['macs_ratio'])}){'' if r.get('macs_plan_matched', True) else ' †'} "
            f"| {mr} | {apart} | {_score(fm, cm, show_cos)} | {better} |"
        )
    return lines


def hand_written(md: Path) -> str:
    """The hand-written end of an earlier report ``md``: the text after ``READING_MARKER``, or in
    a file from before the marker, from its first ``READING_HEADING`` line; "" when there is no
    such file or part."""
    try:
        text = md.read_text()
    except FileNotFoundError:
        return ""
    _, marker, tail = text.partition(READING_MARKER)
    if marker:
        return tail.strip("\n")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(READING_HEADING):
            return "\n".join(lines[i:]).strip("\n")
    return ""


def with_reading(generated: list[str], reading: str) -> str:
    """The report's Markdown: the ``generated`` lines, ``READING_MARKER``, then the hand-written
    ``reading`` as it was."""
    body = "\n".join(generated).rstrip("\n")
    return f"{body}\n\n{READING_MARKER}\n" + (f"\n{reading}\n" if reading else "")


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
        "Deployment measured: OpenVINO CPU, batch 1, LATENCY hint, threads: the plugin's, **f32 inference precision** "
        "(INFERENCE_PRECISION_HINT=f32)  ",
        f"Produced by: `{meta['command']}`",
        "",
        "Latency plan: `prune --criterion l2 --latency-target 0.7 --calibration C --inputs E` (table, planner ranking "
        "moves by latency saved per measured fidelity lost, A/B confirmation; the digits CNN at 0.85, see below). MACs "
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
        gaps = ", ".join(f"{_label(r)} {_apart(r):+.3f}" for r in unmatched)
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
                f"{_label(r)} "
                + ", ".join(f"{c['macs_target']:.3f}: {c['ratio']:.3f}" for c in r["final"]["macs_candidates"])
                for r in rematched
            )
            + ".",
        ]
    zoo = [r for r in rows if "centered_cosine" in r["latency_plan"] and "centered_cosine" in r["macs_plan"]]
    if zoo:
        lines += [
            "",
            "**Random-weight zoo: the input-dependent part.** Their outputs are mostly one vector that does not "
            "depend on the input (90–99.9% of the norm), so plain cosine mostly rewards keeping it: *constant* is "
            "the held-out cosine of a model that ignores its input and outputs the original's mean output over the "
            "calibration samples (a plan that cuts a layer every path goes through to one channel, compensated, "
            "scores that). Centered cosine: both outputs minus the original's mean output over the held-out "
            "samples, the mean cosine of what is left.",
            "",
            "| model | constant: cosine | latency plan: cosine, centered | MACs plan: cosine, centered "
            "| latency plan better (centered) |",
            "|---|---:|---:|---:|:-:|",
        ]
        for r in zoo:
            lat, mp = r["latency_plan"], r["macs_plan"]
            a, b = lat["centered_cosine"], mp["centered_cosine"]
            lines.append(
                f"| {r['model']} | {_f(r.get('constant_cosine'), '.4f')} | {_f(lat['fidelity'], '.4f')}, {a:.4f} "
                f"| {_f(mp['fidelity'], '.4f')}, {b:.4f} | {centered_verdict(a, b)} |"
            )
    lines += labelled_table([r for r in rows if r.get("heldout", {}).get("labelled")])
    top1 = [r for r in rows if r.get("heldout") and not r["heldout"].get("labelled")]
    lines += heldout_table([r for r in top1 if r["heldout"].get("metric") != "detection"])
    lines += detection_heldout_table([r for r in top1 if r["heldout"].get("metric") == "detection"])
    kept = [r for r in rows if "kept_plan" in r]
    if kept:
        lines += [
            "",
            "**Answers kept** (`--latency-target T --min-fidelity K`): the fastest plan within the target whose "
            "fidelity on the calibration samples holds; held-out fidelity beside the latency plan's without it.",
            "",
            "| model | target | K | in prune (p10–p90) | final (p10–p90) | MACs | held-out fidelity | without K | stopped by K |",
            "|---|---:|---:|---:|---:|---:|---:|---:|:-:|",
        ]
        for r in kept:
            k, lat, fin = r["kept_plan"], r["latency_plan"], r.get("final")
            acc = "accuracy" in lat
            (fk, ck), (fl, cl) = _fid(k, acc), _fid(lat, acc)
            KL = k["latency"]
            ki = fin.get("kept_index", 3) if fin else None
            fr = _ratio(fin, ki) if ki is not None and len(fin["timings"]["models"]) > ki else "–"
            lines.append(
                f"| {r['model']} | {r['target']:g} | {k['min_fidelity']:g} | {KL['measured_ratio']:.3f} "
                f"({KL['measured_p10']:.3f}–{KL['measured_p90']:.3f}) | {fr} | {_f(k['macs_ratio'])} "
                f"| {_score(fk, ck, True)} | {_score(fl, cl, True)} | {'yes' if KL.get('limited_by_constraint') else 'no'} |"
            )
    lines += extra_table(extra or [])
    lines += ["", "## Per model", ""]
    for r in rows:
        L = r["latency_plan"]["latency"]
        lines.append(f"### {_label(r)}")
        lines.append("")
        lines.append(
            f"- file: `{r['path']}`; inputs: {models.get(r['model'], {}).get('inputs_note', r.get('inputs_note', ''))}"
        )
        floor = L.get("floor_ratio")
        lines.append(
            f"- latency plan: predicted {L['predicted_ratio']:.3f}, measured {L['measured_ratio']:.3f} "
            f"(p10–p90 {L['measured_p10']:.3f}–{L['measured_p90']:.3f}, {L['precision']}), target met: {L['met']}; "
            f"table floor {_f(floor)}; prune took {r['prune_seconds']:.0f} s"
        )
        for i, a in enumerate(L["attempts"], 1):
            ms = f"; {a['original_ms']:.3f} → {a['candidate_ms']:.3f} ms" if a.get("original_ms") is not None else ""
            lines.append(
                f"  - A/B {i}: aim {a['aim']:.3f} → predicted {a['predicted_ratio']:.3f} → measured {a['measured_ratio']:.3f} "
                f"(p10–p90 {a['measured_p10']:.3f}–{a['measured_p90']:.3f}{ms}), {a['groups_removed']} groups removed"
            )
        if "centered_cosine" in r["latency_plan"]:
            lines.append(f"- latency plan's centered cosine: {r['latency_plan']['centered_cosine']:.4f}")
        lines.append("- MACs scan (target → MACs, measured A/B ratio (p10–p90; original ms), fidelity, cosine):")
        for e in r["macs_scan"]:
            score = e.get("accuracy", e["fidelity"])
            a = e["ab"]
            spread = (
                f" ({a['ratio_p10']:.3f}–{a['ratio_p90']:.3f}; {a['original_ms']:.2f} ms)" if "ratio_p10" in a else ""
            )
            centered = f", centered {e['centered_cosine']:.4f}" if "centered_cosine" in e else ""
            if "gap" in a:
                spread += f"; latency plan {a['latency_plan_ratio']:.3f} in the same run, gap {a['gap']:+.3f}"
            lines.append(
                f"  - {e['macs_target']:.3f} → {_f(e['macs_ratio'])}, {a['ratio']:.3f}{spread}, {_f(score, '.4f')}, "
                f"{_f(e.get('cosine'), '.4f')}{centered}"
            )
        if "kept_plan" in r:
            KL = r["kept_plan"]["latency"]
            lines.append(
                f"- answers kept (min fidelity {r['kept_plan']['min_fidelity']:g}): {KL.get('constraint')} "
                f"{'stopped the plan' if KL.get('limited_by_constraint') else 'held'} at {_f(KL.get('constraint_value'), '.4f')}; "
                f"measured {KL['measured_ratio']:.3f}; prune took {r['kept_plan']['prune_seconds']:.0f} s"
            )
        fin = r.get("final")
        if fin:
            ms = ", ".join(f"{m['latency_s'] * 1e3:.3f}" for m in fin["timings"]["models"])
            med = ", ".join(f"{m['median_ratio']:.3f}" for m in fin["timings"]["models"][1:])
            kept_pair = "; the kept plan's with the original" if fin.get("kept_index") is not None else ""
            runs = (
                f"{fin['timings']['groups']} runs (one per MACs plan with the original and the latency plan{kept_pair}) "
                f"of {fin['timings']['rounds']} rounds × {fin['timings']['runs_per_round']}+ runs"
                if fin.get("grouped")
                else f"one run, {fin['timings']['rounds']} rounds × {fin['timings']['runs_per_round']} runs"
            )
            lines.append(
                f"- final ({fin['when']}, {runs}, "
                f"load {fin.get('loadavg_before', float('nan')):.2f} → {fin['loadavg']:.2f}"
                + (
                    f"; cores busy {fin['machine_busy_cores']:.2f}, this process {fin['process_cores']:.2f}"
                    if "machine_busy_cores" in fin
                    else ""
                )
                + f"): fastest-run ms {ms}; "
                f"ratios of all-run medians {med}"
            )
            if fin.get("grouped"):
                each = fin["runs"]["triples"] + ([fin["runs"]["kept_pair"]] if fin["runs"].get("kept_pair") else [])
                lines.append(
                    "- in each run: original ms "
                    + ", ".join(f"{t['models'][0]['latency_s'] * 1e3:.3f}" for t in each)
                    + "; latency plan's ratio "
                    + ", ".join(f"{t['models'][2]['ratio']:.3f}" for t in fin["runs"]["triples"])
                )
            earlier = fin.get("earlier_runs_gaps") or []
            refined = r.get("final_refined", [])[-len(earlier) :] if earlier else []  # this run's additions
            for gaps, added in zip(earlier, (e["macs_target"] for e in refined)):
                lines.append(
                    f"- {'the runs' if fin.get('grouped') else 'an earlier final run'} matched no MACs plan (gaps: "
                    + ", ".join(f"{t:.3f}: {g:+.3f}" for t, g in gaps)
                    + f"): MACs target {added:.3f} pruned and timed"
                    + (
                        " with the original and the latency plan"
                        if fin.get("grouped")
                        else ", every plan together again"
                    )
                )
            change = fin.get("original_ms_change")
            if change is not None:
                flag = (
                    " — **the machine's state differed: these two ratios are not comparable**"
                    if abs(change) > state
                    else ""
                )
                lines.append(
                    f"- original in prune's chosen A/B {fin['original_ms_in_prune']:.3f} ms, in the final run "
                    f"{fin['timings']['models'][0]['latency_s'] * 1e3:.3f} ms ({change:+.0%}){flag}"
                )
        for note in r["latency_plan"]["notes"]:
            lines.append(f"- note: {note}")
        lines.append("")
    out.with_suffix(".md").write_text(with_reading(lines, reading))
