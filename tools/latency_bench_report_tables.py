"""The tables of the latency benchmark's report (tools/latency_bench_report.py): the headline
table, the held-out comparisons (top-1, detection, labelled), the random-weight zoo's centered
cosines, the answers-kept plans and the targets where answers partly survive. Each takes the
benchmark's rows and returns Markdown lines."""

from __future__ import annotations

from latency_bench_report_cells import (
    apart_of,
    better_cell,
    centered_verdict,
    fmt,
    heldout_verdict,
    ratio_cell,
    retimed_load,
    row_label,
    row_verdict,
    scan_ratio,
    score_cell,
    task_score,
)

__all__ = [
    "QUIET",
    "centered_table",
    "detection_heldout_table",
    "extra_table",
    "headline_table",
    "heldout_table",
    "kept_table",
    "labelled_table",
]

QUIET = 3.0  # an extra row measured at a load average below this ran on the quiet machine


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
        (fl, cl), (fm, cm) = task_score(lat, acc), task_score(mp, acc)
        metric = "accuracy" if acc else ",".join(sorted({m["metric"] for m in lat["fidelity_metrics"].values()}))
        better = better_cell(fl, fm, cl, cm)
        apart = tog.get("apart", tog["macs_plan_ratio"] - tog["latency_plan_ratio"])
        if abs(apart) > 0.01:
            better += " (not at equal latency)"
        lines.append(
            f"| {r['model']} | {r['target']:g} | {'yes' if r['reconstruct'] else 'no'} "
            f"| {lat['latency']['measured_ratio']:.3f}, {tog['latency_plan_ratio']:.3f} | {fmt(lat['macs_ratio'])} "
            f"| {mp['macs_target']:.3f}, {scan_ratio(mp)}{'' if r.get('macs_plan_matched', True) else ' †'}, "
            f"{tog['macs_plan_ratio']:.3f} | {apart:+.3f} | {metric} | {score_cell(fl, cl, True)} | {score_cell(fm, cm, True)} "
            f"| {better} | {r.get('loadavg', float('nan')):.1f}{retimed_load(tog)} |"
        )
    return lines


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
        verdict = row_verdict(r, a, b)
        lines.append(
            f"| {row_label(r)} | {h['n']} ({h['seeds'][0]}–{h['seeds'][1]}) "
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
        verdict = row_verdict(r, a, b)
        lines.append(
            f"| {row_label(r)} | {h['n']} ({h['seeds'][0]}–{h['seeds'][1]}) | {h['reference_detections']} "
            f"| {h['latency']['detection']:.4f} ({h['latency']['cosine']:.4f}) "
            f"| {h['macs_target']:.3f}: {h['macs']['detection']:.4f} ({h['macs']['cosine']:.4f}) | {a} | {b} "
            f"| {h['mean_difference']:+.4f} ± {h['difference_se']:.4f} | {verdict} |"
        )
    return lines


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
        verdict = row_verdict(r, a, b)
        lat, mac = h["latency"], h["macs"]
        lines.append(
            f"| {row_label(r)} | {h['n']} ({h['seeds'][0]}) | {h['original']['accuracy']:.4f} "
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
        (fl, cl), (fm, cm) = task_score(lat, acc), task_score(mp, acc)
        metric = "accuracy" if acc else ",".join(sorted({m["metric"] for m in lat["fidelity_metrics"].values()}))
        if fin:
            lr, mr = ratio_cell(fin, 1), ratio_cell(fin, fin.get("macs_index", 2))
            apart = f"{apart_of(r):+.3f}"
            ok = "yes" if fin["latency_plan_ratio"] <= r["target"] + 0.02 else "**no**"
            base_s = f"{fin['timings']['models'][0]['latency_s'] * 1e3:.2f}"
        else:
            lr = mr = "–"
            apart = f"{r['macs_plan_gap']:+.3f} (A/B)" if "macs_plan_gap" in r else "–"
            ok = "yes" if L["measured_ratio"] <= r["target"] + 0.02 else "**no**"
            base_s = f"{L['baseline_ms']:.2f} (table)"
        better = better_cell(fl, fm, cl, cm)
        show_cos = metric != "cosine"
        if fin and abs(apart_of(r)) > 0.01:
            better += " (not at equal latency)"
        if r.get("heldout"):
            better += f"; {heldout_verdict(r['heldout'])}"
        lines.append(
            f"| {row_label(r)} | {r['target']:g} | {base_s} | {L['measured_ratio']:.3f} ({L['measured_p10']:.3f}–{L['measured_p90']:.3f}) "
            f"| {lr} | {ok} | {fmt(lat['macs_ratio'])} | {metric} | {score_cell(fl, cl, show_cos)} "
            f"| {mp['macs_target']:.3f} ({fmt(mp['macs_ratio'])}){'' if r.get('macs_plan_matched', True) else ' †'} "
            f"| {mr} | {apart} | {score_cell(fm, cm, show_cos)} | {better} |"
        )
    return lines


def centered_table(rows: list[dict]) -> list[str]:
    """The random-weight zoo's rows by centered cosine: the input-dependent part of the output."""
    lines: list[str] = []
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
                f"| {r['model']} | {fmt(r.get('constant_cosine'), '.4f')} | {fmt(lat['fidelity'], '.4f')}, {a:.4f} "
                f"| {fmt(mp['fidelity'], '.4f')}, {b:.4f} | {centered_verdict(a, b)} |"
            )
    return lines


def kept_table(rows: list[dict]) -> list[str]:
    """The answers-kept plans (``--latency-target T --min-fidelity K``) beside the latency plan."""
    lines: list[str] = []
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
            (fk, ck), (fl, cl) = task_score(k, acc), task_score(lat, acc)
            KL = k["latency"]
            ki = fin.get("kept_index", 3) if fin else None
            fr = ratio_cell(fin, ki) if ki is not None and len(fin["timings"]["models"]) > ki else "–"
            lines.append(
                f"| {r['model']} | {r['target']:g} | {k['min_fidelity']:g} | {KL['measured_ratio']:.3f} "
                f"({KL['measured_p10']:.3f}–{KL['measured_p90']:.3f}) | {fr} | {fmt(k['macs_ratio'])} "
                f"| {score_cell(fk, ck, True)} | {score_cell(fl, cl, True)} | {'yes' if KL.get('limited_by_constraint') else 'no'} |"
            )
    return lines
