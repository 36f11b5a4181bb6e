"""The per-model sections of the latency benchmark's report (tools/latency_bench_report.py): for
each row the latency plan's A/B attempts, the MACs scan, the answers-kept plan, the final run and
prune's notes."""

from __future__ import annotations

from bench_latency_models import inputs_note
from latency_bench_report_cells import fmt, row_label

__all__ = ["per_model", "row_inputs"]


def row_inputs(r: dict, models: dict[str, dict]) -> str:
    """What the row's evaluation inputs were: as recorded, else (rows recorded before
    2026-12-01 14:00 with their files already made got an empty note) said from the row's spec,
    else "not recorded"."""
    if r.get("inputs_note"):
        return r["inputs_note"]
    spec = models.get(r["model"].removesuffix("+rc"), {})
    return inputs_note(spec) if {"kind", "path"} <= spec.keys() else "not recorded"


def per_model(rows: list[dict], models: dict[str, dict], state: float) -> list[str]:
    """One section per row (Markdown lines); ``state``: the original's change in ms between prune's
    A/B and the final run beyond which the two ratios are flagged as not comparable."""
    lines: list[str] = []
    for r in rows:
        L = r["latency_plan"]["latency"]
        lines.append(f"### {row_label(r)}")
        lines.append("")
        lines.append(f"- file: `{r['path']}`; inputs: {row_inputs(r, models)}")
        floor = L.get("floor_ratio")
        lines.append(
            f"- latency plan: predicted {L['predicted_ratio']:.3f}, measured {L['measured_ratio']:.3f} "
            f"(p10–p90 {L['measured_p10']:.3f}–{L['measured_p90']:.3f}, {L['precision']}), target met: {L['met']}; "
            f"table floor {fmt(floor)}; prune took {r['prune_seconds']:.0f} s"
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
                f"  - {e['macs_target']:.3f} → {fmt(e['macs_ratio'])}, {a['ratio']:.3f}{spread}, {fmt(score, '.4f')}, "
                f"{fmt(e.get('cosine'), '.4f')}{centered}"
            )
        if "kept_plan" in r:
            KL = r["kept_plan"]["latency"]
            lines.append(
                f"- answers kept (min fidelity {r['kept_plan']['min_fidelity']:g}): {KL.get('constraint')} "
                f"{'stopped the plan' if KL.get('limited_by_constraint') else 'held'} at {fmt(KL.get('constraint_value'), '.4f')}; "
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
    return lines
