"""Reports as Markdown and as a plot (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = [
    "batch_text",
    "held_out_label",
    "json_text",
    "metric_label",
    "metric_text",
    "non_finite_text",
    "plot_report",
    "plot_sensitivity",
    "quantized_lines",
    "to_markdown",
    "validation_markdown",
]


def batch_text(b: dict) -> str:
    """What a batch of other inputs is expected to score (generalisation.estimate.batch)."""
    n, several = b["samples"], b["outputs"] > 1
    floor = (
        f"; below the floor {b['floor']:g} in {'at most ' if several else ''}{b['below_floor']:.0%} of such batches"
        if b.get("below_floor") is not None
        else ""
    )
    return (
        f"expected on {n} other inputs: {b['low']:.4f}-{b['high']:.4f} ({b['low_inputs']}-{b['high_inputs']} of {n} "
        f"inputs keeping their answers) in {b['level']:.0%} of such batches, if the estimate {b['estimate']:.4f} is "
        f"right (binomial{'; tails of the outputs added up' if several else ''}){floor}"
    )


def batch_rule_text(r: dict) -> str:
    """What --fidelity-batch judged (generalisation.batch_rule)."""
    n = r["samples"]
    if not r["outputs"]:
        return r["what"]
    kept = round(r["reading"] * n)
    return (
        f"--fidelity-batch {n}: a batch of {n} other inputs reads at least {r['reading']:.4f} ({kept} of {n}) in "
        f"{r['probability']:.0%} of such batches if the agreement is at its bound {r['agreement']:.4f}; below the floor "
        f"{r['floor']:g} in {r['below_floor']:.1%} of them: {'met' if r['met'] else 'NOT met'}"
    )


def batch_mean_text(r: dict) -> str:
    """What the batch-mean rule judged continuous outputs by (generalisation.batch_mean)."""
    met = "" if r.get("met") is None else f" >= the floor {r['floor']:g}: {'met' if r['met'] else 'NOT met'}"
    return (
        f"batch mean: a batch of {r['samples']} other inputs reads at least {r['bound']:.4f} on its continuous outputs "
        f"in {r['confidence']:.0%} of such batches (bootstrap over the {r['calibration']} calibration samples' scores"
        f"{', cross-fitted' if r.get('cross_fitted') else ''}, mean {r['mean']:.4f}){met}"
    )


def held_out_label(held: dict) -> str:
    """What the evaluation samples are: held out, or (given ones) partly calibration samples."""
    shared = held.get("also_calibration", 0)
    if not shared:
        return "held-out samples"
    return f"evaluation samples ({shared} of them also calibration samples: not held out)"


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON's null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(data: Any, **options: Any) -> str:
    """``data`` as strict JSON: a NaN or infinite number (a model whose outputs are NaN gives
    'max abs err nan') is null, since Python's bare NaN is no JSON a strict reader accepts."""
    return json.dumps(_finite(data), allow_nan=False, **options)


def non_finite_text(o: dict, reference_kind: str = "original", quote: str = "'") -> str:
    """What an output's agreement proves where the reference computes NaN or inf (an
    ``OutputComparison.to_dict()`` with ``reference_non_finite``), in one sentence."""
    return (
        f"the {reference_kind} computes NaN or inf in {o['reference_non_finite']} of {o['values']} values of output "
        f"{quote}{o['name']}{quote} (batch {o['batch']}): there verification only proves that the pruned model "
        "computes the same non-finite value at the same place"
    )


def _pct(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before else ""


def metric_text(f: dict[str, Any]) -> str:
    """An output's metric reason and the metric's own figures, as one line."""
    figures = ", ".join(
        f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
        for k, v in (f.get("details") or {}).items()
    )
    reason = f.get("metric_reason") or f.get("reason") or "given"
    return reason + (f" ({figures})" if figures else "")


def metric_label(metrics: dict[str, dict[str, str]], most: int = 3) -> str:
    """'logits: top1' or 'out1: ctc, out2: dense, +3 more': the metric of each output, short."""
    items = [f"{name[-24:]}: {m['metric']}" for name, m in metrics.items()]
    return ", ".join(items[:most]) + (f", +{len(items) - most} more" if len(items) > most else "")


def validation_markdown(v: dict | None) -> list[str]:
    """The user's validation function as a Markdown section (empty without one)."""
    if not v:
        return []
    lines = [
        "",
        "## Your validation function",
        "",
        f"`{v['function']}` (higher is better): original **{v['baseline']:.6g}**, pruned **{v['final']:.6g}** "
        f"(drop {v['drop']:.4g}"
        + (f"; allowed {v['max_drop']}: keep ≥ {v['threshold']:.6g}" if v.get("threshold") is not None else "")
        + f"); {v['calls']} calls, each plan scored at most once.",
    ]
    if v["steps"]:
        lines += ["", "| step | groups removed | MACs | value | within |", "|---:|---:|---:|---:|---|"]
        for i, st in enumerate(v["steps"], 1):
            macs = "—" if st["macs_ratio"] is None else f"×{st['macs_ratio']:.3f}"
            lines.append(f"| {i} | {st['groups']} | {macs} | {st['value']:.6g} | {'yes' if st['within'] else 'no'} |")
    return lines


def to_markdown(d: dict[str, Any]) -> str:
    """The whole run as Markdown: model, criterion and budget, totals, per-layer channels,
    verification and fidelity, OpenVINO comparison and latency when present."""
    lines = [f"# onnxprune report: `{os.path.basename(d['model'])}`", ""]
    lines.append(f"- model: `{d['model']}`" + (f" → `{d['output']}`" if d.get("output") else ""))
    why = d.get("criterion_reason")
    lines.append(
        f"- criterion: **{d['criterion']}**"
        + (f" ({why})" if why and why != "given" else "")
        + (f", compensation: {d['compensation']}" if d.get("fidelity") else "")
    )
    if d.get("budget"):
        b = d["budget"]
        parts = [f"{k}={v}" for k, v in b.items() if v not in (None, False, [], 0, 1) or (k == "round_to" and v != 1)]
        lines.append(f"- budget: {', '.join(parts) if parts else 'config file'}")
    if d.get("ir"):
        lines.append(
            f"- OpenVINO IR: `{d['ir']['path']}` ({d['ir']['check']['precision']}, checked against onnxruntime: max abs diff {d['ir']['check']['max_abs_diff']:.3g})"
        )
    lines += ["", "| | before | after | change |", "|---|---:|---:|---:|"]
    for label, key_b, key_a in (
        ("output channels", "channels_total", None),
        ("parameters", "params_before", "params_after"),
        ("MACs (batch 1)", "macs_before", "macs_after"),
        ("file size (bytes)", "size_before", "size_after"),
    ):
        before = d[key_b]
        after = d["channels_total"] - d["channels_removed"] if key_a is None else d[key_a]
        if before is None or after is None:  # MACs of a model whose shapes are unknown
            lines.append(f"| {label} | unknown | unknown | {d.get('macs_unknown') or 'shapes unknown'} |")
            continue
        lines.append(f"| {label} | {before:,} | {after:,} | {_pct(before, after)} |")
    v = d.get("verification")
    lines += ["", "## Verification", ""]
    if v is None:
        lines.append("Skipped (`--no-verify`).")
    else:
        lines.append(
            f"**{'PASSED' if v['passed'] else 'FAILED'}** against the {d.get('verified_against', 'original')}: worst output "
            f"`{v['worst_output']}`, max abs diff {v['max_abs_diff']:.3g} (limit {v.get('limit', v['tolerance'] * v['scale']):.3g}); {v['inputs']}."
        )
        noise = (
            f" Noise floor: {v['noise_runtime']}." if v.get("noise_runtime") else " No noise floor: explicit tolerance."
        )
        rule = (
            f"limit = max({v['tolerance']:g} × max(scale, {v['scale_floor']:g}), {v['noise_multiple']:g} × noise floor)"
            if v.get("noise_multiple") is not None
            else f"limit = {v['tolerance']:g} × scale"
        )
        lines += ["", f"Proved by {v.get('runtime', 'onnxruntime')}.{noise} Per output, {rule}:"]
        for t in v.get("discontinuous_outputs", []):
            at = ", ".join(f"`{n}`" for n in t["verified_at"])
            lines += [
                "",
                f"`{t['output']}` hangs on decisions ({', '.join(t['behind'])}): verified at {at}, and compared itself where the decisions agree.",
            ]
        lines += [
            "",
            "| output | batch | max abs diff | noise floor | limit | margin | compared |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for o in v["outputs"]:
            noise_floor = "—" if o.get("noise_floor") is None else f"{o['noise_floor']:.3g}"
            past = (
                "flips" if v.get("quantized") and v["passed"] else "**FAIL**"
            )  # a quantized model's rule decides (below)
            margin = "exact" if o["max_abs_diff"] == 0 else (past if not o["passed"] else f"{o['margin']:.3g}×")
            if o.get("samples") and not o.get("compared_samples"):
                margin = "—"  # a discontinuous output whose decisions never agreed: verified before them
            what = (
                f"stand-in for {', '.join(f'`{n}`' for n in o['stands_in_for'])}"
                if o.get("stands_in_for")
                else (
                    f"{o['compared_samples']} of {o['samples']} samples (decisions agree)"
                    if o.get("behind")
                    else "all samples"
                )
            )
            lines.append(
                f"| `{o['name']}` | {o['batch']} | {o['max_abs_diff']:.3g} | {noise_floor} | {o['limit']:.3g} | {margin} | {what} |"
            )
        kind = d.get("verified_against") or "original"
        for o in v["outputs"]:
            if o.get("reference_non_finite"):
                lines += ["", f"Note: {non_finite_text(o, kind, quote='`')}."]
        q = v.get("quantized")
        if q:
            lines += [
                "",
                f"Quantized model ({q['form']}): each path passes {q['rule']}.",
                "",
                "| runtime | passed | worst output | max abs diff | scale | samples past the float limit |",
                "|---|---|---|---:|---:|---:|",
            ]
            for p in q["paths"]:
                lines.append(
                    f"| {p['runtime']} | {'yes' if p['passed'] else '**no**'} | `{p['worst_output']}` | {p['max_abs_diff']:.3g} | "
                    f"{p['scale']:.3g} | {p['samples_past_float_limit']} of {p['samples']} |"
                )
    if d.get("fidelity"):
        if d.get("fidelity_on_random_inputs"):
            lines += [
                "",
                "Fidelity below was measured **on seeded random inputs, not real data**: give `--inputs` or `--calibration` for meaningful numbers.",
            ]
        lines += [
            "",
            "| output | metric | score | cosine | max abs error | mean abs error | top-1 agreement |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for f in d["fidelity"]:
            top1 = "" if f["top1_agreement"] is None else f"{f['top1_agreement'] * 100:.1f}%"
            score = f.get("score", f["cosine"])
            lines.append(
                f"| `{f['name']}` | {f.get('metric', 'cosine')} | {score:.4f} | {f['cosine']:.4f} | {f['max_abs_error']:.3g} "
                f"| {f['mean_abs_error']:.3g} | {top1} |"
            )
        lines += ["", "Why each metric:", ""]
        lines += [f"- `{f['name']}`: **{f.get('metric', 'cosine')}**, {metric_text(f)}" for f in d["fidelity"]]
    g = d.get("generalisation")
    if g:
        cross = g.get("cross_fitted")
        insample = f"; in-sample: {cross.get('in_sample', 'the final refit was fitted on them')}" if cross else ""
        lines += ["", "| fidelity | samples | value |", "|---|---:|---:|"]
        if cross:  # what the search judged a recovered plan by
            lines += [
                f"| cross-fitted on the calibration samples (each scored by "
                f"{cross.get('scored_by', 'the model recovered on the other half')}) "
                f"| {cross['samples']} | {cross['fidelity']:.4f} |",
                f"| cross-fitted, the search's value (what the search judged) | {cross['samples']} | {cross['judged']:.4f} |",
            ]
        lines += [
            f"| on the calibration samples (the plan was chosen on them{insample}) | {g['calibration']['samples']} | {g['calibration']['fidelity']:.4f} |",
            f"| on the {held_out_label(g['held_out'])} | {g['held_out']['samples']} | {g['held_out']['fidelity']:.4f} |",
        ]
        if g.get("estimate"):
            lines.append(
                f"| estimated on unseen inputs, from the calibration samples' top-1 / CTC / detection-score margins (an estimate{insample}) "
                f"| {g['estimate']['samples']} | {g['estimate']['fidelity']:.4f} |"
            )
            if "bound" in g["estimate"]:
                judged = " (what the search judged)" if g["estimate"].get("judged_by_search", not cross) else ""
                lines.append(
                    f"| lower bound at confidence {g['estimate']['confidence']:g}{judged} "
                    f"| {g['estimate']['samples']} | {g['estimate']['bound']:.4f} |"
                )
            if g["estimate"].get("batch"):
                b = g["estimate"]["batch"]
                lines.append(f"| {batch_text(b)} | {b['samples']} | {b['low']:.4f}-{b['high']:.4f} |")
        if g.get("batch_rule"):
            r = g["batch_rule"]
            reading = f"{r['reading']:.4f}" if r["outputs"] else "-"
            lines.append(f"| {batch_rule_text(r)} | {r['samples']} | {reading} |")
        if g.get("batch_mean"):
            r = g["batch_mean"]
            lines.append(f"| {batch_mean_text(r)} | {r['samples']} | {r['bound']:.4f} |")
    lines += validation_markdown(d.get("validation"))
    for key in ("quantization", "quantization_ir"):
        if d.get(key):
            from .quant_report import quantize_markdown

            lines += ["", *quantize_markdown(d[key])]
    if d.get("benchmark"):
        lines += [
            "",
            "## Latency (OpenVINO, CPU)",
            "",
            "| model | median ms | p10–p90 ms | throughput /s | latency ratio | precision |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for t in d["benchmark"]:
            name = t.get("label") or f"`{os.path.basename(t['path'])}`"
            lines.append(
                f"| {name} | {t['latency_median_ms']:.3f} | {t.get('latency_p10_ms', float('nan')):.3f}–{t['latency_p90_ms']:.3f} | {t['throughput_fps']:.1f} "
                f"| {t['latency_ratio']:.3f} | {t.get('precision', '')} |"
            )
    if d.get("openvino_pass"):
        o = d["openvino_pass"]
        lines += ["", "## OpenVINO's own pruning pass on the same input", ""]
        if o.get("error"):
            lines.append(f"Failed ({o.get('error_stage', '?')}): `{o['error'].splitlines()[0][:300]}`")
        else:
            ver = o.get("verification") or {}
            lines.append(
                f"Channels removed {o['channels_removed']} of {o['channels_total']} (its count includes depthwise convs); MACs "
                f"{o['macs_before']:,} → {o['macs_after']:,} ({_pct(o['macs_before'], o['macs_after'])}); exact: {ver.get('exact')} "
                f"(max abs diff {ver.get('max_abs_diff', float('nan')):.3g})."
            )
    if d["layers"]:
        lines += ["", "## Layers changed", "", "| layer | op | channels before | after |", "|---|---|---:|---:|"]
        for layer in d["layers"]:
            lines.append(
                f"| `{layer['node']}` | {layer['op']} | {layer['channels_before']} | {layer['channels_after']} |"
            )
    if d.get("latency"):
        from .latency.report import latency_markdown

        lines += latency_markdown(d)
    if d["kept_groups"]:
        counts: dict[str, list[int]] = {}
        import re

        for g in d["kept_groups"]:
            key = re.sub(r" \(score [^)]*\)", "", g["reasons"][0]) if g["reasons"] else "(no reason)"
            c = counts.setdefault(key, [0, 0])
            c[0] += 1
            c[1] += g["channels"]
        lines += ["", "## Channels kept, by reason", "", "| groups | channels | reason |", "|---:|---:|---|"]
        for key, (groups, channels) in sorted(counts.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"| {groups} | {channels} | {key} |")
    return "\n".join(lines) + "\n"


def plot_report(d: dict[str, Any], path: str) -> None:
    """Per-layer output channels before/after (and latency bars when benchmarked; with a
    latency target, the units' predicted and measured latency) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    layers = d["layers"]
    bench = d.get("benchmark") or []
    latency = bool(d.get("latency"))
    ncols = 1 + bool(bench) + latency
    fig, axes = plt.subplots(
        1, ncols, figsize=(8 + 3.5 * (ncols - 1), max(3.0, 0.22 * len(layers) + 1.5)), squeeze=False
    )
    ax = axes[0][0]
    names = [layer["node"][-40:] for layer in layers] or ["(no layer changed)"]
    before = [layer["channels_before"] for layer in layers] or [0]
    after = [layer["channels_after"] for layer in layers] or [0]
    y = range(len(names))
    ax.barh(list(y), before, color="#c8c8c8", label="before")
    ax.barh(list(y), after, color="#1f77b4", label="after")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("output channels")
    macs = "unknown" if d["macs_before"] is None or d["macs_after"] is None else _pct(d["macs_before"], d["macs_after"])
    ax.set_title(f"{os.path.basename(d['model'])}: {d['criterion']}, MACs {macs}")
    ax.legend(loc="lower right")
    if bench:
        bx = axes[0][1]
        labels = [t.get("label") or os.path.basename(t["path"]) for t in bench]  # labelled: the int8 chain
        bx.bar(labels, [t["latency_median_ms"] for t in bench], color=["#c8c8c8"] + ["#1f77b4"] * (len(bench) - 1))
        bx.set_ylabel("median latency, ms (OpenVINO CPU)")
        bx.set_title("latency")
        bx.tick_params(axis="x", labelrotation=20, labelsize=7)
    if latency:
        from .latency.report import plot_latency

        plot_latency(d, axes[0][ncols - 1])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sensitivity(d: dict[str, Any], path: str) -> None:
    """One curve per unit: fidelity against the fraction of the unit removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ratios = [0.0] + list(d["ratios"])
    for u in d["units"]:
        ys = [1.0] + [u["fidelity"][str(r)] for r in d["ratios"]]
        ax.plot(
            ratios, ys, marker="o", linewidth=1, alpha=0.7, label=u["unit"][-30:] if len(d["units"]) <= 12 else None
        )
    ax.set_xlabel("fraction of the unit's channels removed")
    metrics = d.get("metrics") or {}
    # The fidelity is the worst output's score under its metric: say which metrics.
    ax.set_ylabel(
        "fidelity on calibration inputs" + (f"\n(worst of {metric_label(metrics)})" if metrics else ""), fontsize=8
    )
    ax.set_title(f"{os.path.basename(d['model'])}: sensitivity ({d['criterion']}, {d['samples']} samples)")
    if len(d["units"]) <= 12:
        ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def quantized_lines(q: dict | None) -> list[str]:
    """The text report's lines for a quantized model's verification paths (none otherwise)."""
    if not q:
        return []
    lines = [f"  quantized model ({q['form']}): each path passes {q['rule']}"]
    for p in q["paths"]:
        lines.append(
            f"  {'passed' if p['passed'] else 'FAILED'} on {p['runtime']}: worst output {p['worst_output']!r} max abs diff "
            f"{p['max_abs_diff']:.3g} (scale {p['scale']:.3g}), {p['samples_past_float_limit']} of {p['samples']} samples past the float limit"
        )
    return lines
