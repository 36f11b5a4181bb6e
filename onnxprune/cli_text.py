"""The command line's text: a prune report (the JSON dict) as the table and lines printed."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "format_report",
    "generalisation_lines",
    "int8_note",
    "ir_check_text",
    "reason_counts",
    "validation_lines",
    "verification_lines",
]


def reason_counts(items: list[tuple[Sequence[str], int]]) -> Counter:
    """Groups and channels per reason (scores stripped, so one criterion's cut is one line)."""
    counts: Counter = Counter()
    agg: dict[str, list[int]] = {}
    for reasons, channels in items:
        key = re.sub(r" \(score [^)]*\)", "", reasons[0]) if reasons else "(no reason)"
        entry = agg.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += channels
    for key, (g, c) in agg.items():
        counts[key] = (g, c)
    return counts


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


def format_report(d: dict) -> str:
    """The human-readable form of a prune report (the JSON dict)."""
    why = d.get("criterion_reason")
    why = f" ({why})" if why and why != "given" else ""
    lines = [f"{d['model']} -> {d.get('output', '')}   criterion: {d['criterion']}{why}", ""]
    rows = [
        ("output channels", d["channels_total"], d["channels_total"] - d["channels_removed"]),
        ("parameters", d["params_before"], d["params_after"]),
        ("MACs (batch 1)", d["macs_before"], d["macs_after"]),
        ("file size (bytes)", d["size_before"], d["size_after"]),
    ]
    lines.append(f"{'':20s}{'before':>12s}{'after':>12s}{'change':>9s}")
    for label, before, after in rows:
        if before is None or after is None:  # MACs of a model whose shapes are unknown
            lines.append(f"{label:20s}{'unknown':>12s}{'unknown':>12s}   ({d.get('macs_unknown') or 'shapes unknown'})")
            continue
        change = f"{(after - before) / before * 100:+.1f}%" if before else ""
        lines.append(f"{label:20s}{_fmt(before):>12s}{_fmt(after):>12s}{change:>9s}")
    if d["layers"]:
        lines += ["", f"layers changed: {len(d['layers'])}"]
        for layer in d["layers"]:
            lines.append(
                f"  {layer['node']:40s} {layer['op']:14s} {layer['channels_before']:5d} -> {layer['channels_after']:5d}"
            )
    v = d.get("verification")
    lines.append("")
    if v is None:
        lines.append("verification: skipped (--no-verify)")
    else:
        lines.extend(verification_lines(v, reference_kind=d.get("verified_against") or "original"))
        from .render import quantized_lines

        lines += quantized_lines(v.get("quantized"))
    fid = d.get("fidelity")
    if fid:
        lines.append(f"verified against: {d.get('verified_against')}; compensation: {d.get('compensation')}")
        if d.get("fidelity_on_random_inputs"):
            lines.append("fidelity vs the original, ON RANDOM NOISE (not real data; give --inputs or --calibration):")
        else:
            lines.append("fidelity vs the original (same inputs):")
        from .render import metric_text

        for f in fid:
            top1 = "" if f["top1_agreement"] is None else f"  top-1 agreement {f['top1_agreement'] * 100:.1f}%"
            # A cosine-scored output shows its cosine once.
            metric = f"{f['metric']} {f['score']:.4f}  " if f.get("metric") not in (None, "cosine") else ""
            lines.append(
                f"  {f['name']}: {metric}cosine {f['cosine']:.4f}  max abs err {f['max_abs_error']:.3g}  mean abs err {f['mean_abs_error']:.3g}{top1}"
            )
            if "metric" in f:
                lines.append(f"    metric {f['metric']}: {metric_text(f)}")
    lines += generalisation_lines(d.get("generalisation"))
    lines += validation_lines(d.get("validation"))
    kept = d["kept_groups"]
    if kept:
        lines += ["", f"channels kept, by reason ({len(kept)} groups):"]
        counts = reason_counts([(g["reasons"], g["channels"]) for g in kept])
        for reason, (groups, channels) in counts.most_common(25):
            lines.append(f"  {groups:5d} groups {channels:6d} ch  {reason}")
        if len(counts) > 25:
            lines.append(f"  ... {len(counts) - 25} more reasons in the JSON report")
    if d.get("ir"):
        c = d["ir"]["check"]
        lines.append("")
        lines.append(f"OpenVINO IR: {d['ir']['path']} ({c['precision']}); matches onnxruntime: {ir_check_text(c)}")
    if d.get("openvino_pass"):
        o = d["openvino_pass"]
        lines.append("")
        if o.get("error"):
            lines.append(
                f"OpenVINO's own pruning pass: FAILED ({o.get('error_stage', '?')}): {o['error'].splitlines()[0][:200]}"
            )
        else:
            ver = o.get("verification") or {}
            lines.append(
                f"OpenVINO's own pruning pass: {o['channels_removed']} of {o['channels_total']} channels (incl. depthwise), "
                f"MACs {_fmt(o['macs_before'])} -> {_fmt(o['macs_after'])}, exact: {ver.get('exact')} (max abs diff {ver.get('max_abs_diff', float('nan')):.3g})"
            )
        lines.append(
            f"onnxprune:                    {d['channels_removed']} of {d['channels_total']} channels, MACs {_fmt(d['macs_before'])} -> {_fmt(d['macs_after'])}"
        )
    if d.get("joint"):
        from .quant_report import format_joint

        lines += ["", format_joint(d["joint"])]
    for key in ("quantization", "quantization_ir"):
        if d.get(key):
            from .quant_report import format_quantize

            lines += ["", format_quantize(d[key])]
    if d.get("benchmark"):
        lines.append("")
        lines.append(f"latency (OpenVINO, CPU, {d['benchmark'][0].get('precision', '?')} inference):")
        for t in d["benchmark"]:
            lines.append(
                f"  {t.get('label') or os.path.basename(t['path']):40s} median {t['latency_median_ms']:.3f} ms  "
                f"p10-p90 {t.get('latency_p10_ms', float('nan')):.3f}-{t['latency_p90_ms']:.3f} ms  "
                f"{t['throughput_fps']:.1f}/s  ratio {t['latency_ratio']:.3f}  {t.get('precision', '')}"
            )
        for t in d["benchmark"]:
            if t.get("warning"):
                lines.append(f"  warning: {t['warning']}")
    if d.get("latency"):
        from .latency.report import latency_lines

        lines += ["", *latency_lines(d)]
    for note in d.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def generalisation_lines(g: dict | None) -> list[str]:
    """Fidelity on the calibration samples (the plan was chosen on them) beside the held-out one."""
    if not g:
        return []
    cal, held, est, cross = g["calibration"], g["held_out"], g.get("estimate"), g.get("cross_fitted")
    # With recovery the final refit was fitted on the calibration samples: their fidelity is
    # in-sample, and the search judged the cross-fitted one (shown first, labelled).
    insample = f"; in-sample: {cross.get('in_sample', 'the final refit was fitted on them')}" if cross else ""
    estimated = (
        f"; estimated {est['fidelity']:.4f} on unseen inputs (from the calibration samples' margins{insample})"
        if est
        else ""
    )
    if est and "bound" in est:
        estimated += f", at least {est['bound']:.4f} at confidence {est['confidence']:g}" + (
            " (what the search judged)" if est.get("judged_by_search", not cross) else ""
        )
    from .render import held_out_label

    lines = []
    if cross:
        lines.append(
            f"fidelity cross-fitted (what the search judged): {cross['fidelity']:.4f} on the {cross['samples']} calibration "
            f"samples, each scored by {cross.get('scored_by', 'the model recovered on the other half')}; "
            f"the search's value {cross['judged']:.4f}"
            + (f" (estimate on unseen inputs {cross['estimate']:.4f})" if cross.get("estimate") is not None else "")
        )
    lines.append(
        f"fidelity: {cal['fidelity']:.4f} on the {cal['samples']} calibration samples (the plan was chosen on them{insample}), "
        f"{held['fidelity']:.4f} on the {held['samples']} {held_out_label(held)} (gap {g['gap']:+.4f}){estimated}"
    )
    if est and est.get("batch"):
        from .render import batch_text

        lines.append(batch_text(est["batch"]))
    if g.get("batch_rule"):
        from .render import batch_rule_text

        lines.append(batch_rule_text(g["batch_rule"]))
    if g.get("batch_mean"):
        from .render import batch_mean_text

        lines.append(batch_mean_text(g["batch_mean"]))
    return lines


def validation_lines(v: dict | None) -> list[str]:
    """The user's validation function: baseline, final value, the drop allowed, its calls."""
    if not v:
        return []
    allowed = f"; allowed drop {v['max_drop']} (keep >= {v['threshold']:.6g})" if v.get("threshold") is not None else ""
    how = (
        f"{len(v['steps'])} plans judged by the search"
        if v["searched"]
        else "it measured the plan (another budget chose it)"
    )
    return [
        f"validation ({v['function']}, higher is better): original {v['baseline']:.6g} -> pruned {v['final']:.6g} "
        f"(drop {v['drop']:.4g}{allowed})",
        f"  {v['calls']} calls of the function ({how}; each plan scored at most once)",
    ]


def _limit_text(o: dict, v: dict) -> str:
    floor = v.get("scale_floor")
    scale = (
        f"scale {o['scale']:.3g}"
        if floor is None or o["scale"] >= floor
        else f"the scale floor {floor:g} (scale {o['scale']:.3g})"
    )
    if o.get("noise_floor") is None:
        return f"limit {o['limit']:.3g}: {v['tolerance']:g} x {scale}"
    return f"limit {o['limit']:.3g}: the larger of {v['tolerance']:g} x {scale} and {v['noise_multiple']:g} x noise floor {o['noise_floor']:.3g}"


def verification_lines(v: dict, most: int = 12, reference_kind: str = "original") -> list[str]:
    """The verification as table lines: verdict and worst output, the runtime that proved it,
    then per output (and stand-in tensor) diff, noise floor, limit and margin, and a note for
    each output the reference itself computes NaN or inf in."""
    worst = next((o for o in v["outputs"] if o["name"] == v["worst_output"]), None)
    limit = _limit_text(worst, v) if worst else f"limit {v['tolerance']:g} x scale {v['scale']:.3g}"
    verdict = "PASSED" if v["passed"] else "FAILED"
    lines = [
        f"verification: {verdict}  worst output {v['worst_output']!r}: max abs diff {v['max_abs_diff']:.3g} ({limit}); {v['inputs']}",
        f"  proved by {v.get('runtime', 'onnxruntime')}"
        + (
            f"; noise floor: {v['noise_runtime']}"
            if v.get("noise_runtime")
            else "; no noise floor (explicit --tolerance)"
        ),
    ]
    for t in v.get("discontinuous_outputs", []):
        lines.append(
            f"  {t['output']!r} hangs on decisions ({', '.join(t['behind'])}): verified at {', '.join(repr(n) for n in t['verified_at'])}, "
            "and compared itself where the decisions agree"
        )
    outs = v["outputs"]
    lines.append(
        f"  {'output':32s} {'batch':>5s} {'max abs diff':>12s} {'noise floor':>11s} {'limit':>9s} {'margin':>8s}"
    )
    for o in outs[:most]:
        noise = "-" if o.get("noise_floor") is None else f"{o['noise_floor']:.3g}"
        past = "flips" if v.get("quantized") and v["passed"] else "FAIL"  # a quantized model's rule decides (below)
        margin = "exact" if o["max_abs_diff"] == 0 else (past if not o["passed"] else f"{o['margin']:.3g}x")
        if o.get("samples") and not o.get("compared_samples"):
            margin = "-"  # a discontinuous output whose decisions never agreed: verified before them
        name = o["name"] if len(o["name"]) <= 32 else "..." + o["name"][-29:]
        note = ""
        if o.get("stands_in_for"):
            note = f"  (for {', '.join(o['stands_in_for'])})"
        elif o.get("behind"):
            note = f"  (compared on {o['compared_samples']} of {o['samples']} samples: where the decisions agree)"
        lines.append(
            f"  {name:32s} {o['batch']:5d} {o['max_abs_diff']:12.3g} {noise:>11s} {o['limit']:9.3g} {margin:>8s}{note}"
        )
    if len(outs) > most:
        lines.append(f"  ... {len(outs) - most} more in the JSON report")
    from .render import non_finite_text

    lines += [f"  note: {non_finite_text(o, reference_kind)}" for o in outs if o.get("reference_non_finite")]
    return lines


def ir_check_text(c: dict) -> str:
    """The IR check's worst difference and its limit (IRCheck.to_dict), with how a quantized
    model was judged."""
    text = f"max abs diff {c['max_abs_diff']:.3g}"
    n = c.get("noise")
    if not n:
        return text + f" (limit {c['tolerance']:g} x scale {c['scale']:.3g}{int8_note(c.get('quantized'))})"
    margin = "inf" if n["margin"] is None else f"{n['margin']:.3g}"
    return (
        text + f" on {n['elements_past_tolerance']} of {n['elements']} elements past {c['tolerance']:g} x scale "
        f"{c['scale']:.3g}; a dynamically quantized model, so judged within onnxruntime's own noise on the same inputs: "
        f"limit {n['limit']:.3g} (the larger of {c['tolerance']:g} x scale and {n['multiple']:g} x the noise floor "
        f"{n['noise_floor']:.3g}), at most {n['multiple']:g} x the {n['noise_elements_past_tolerance']} elements a noise "
        f"run moved past {c['tolerance']:g} x scale; margin {margin}"
    )


def int8_note(form: str | None) -> str:
    """What the IR check compared, for a quantized model (empty otherwise)."""
    return f"; a {form} model: OpenVINO's int8 path against onnxruntime's float emulation" if form else ""
