"""tools/bench_real_exports.py's report: the markdown table of the real-exports benchmark and
its summary, rendered from the run's JSON (what each case's exit, channels, MACs and
verification were)."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

NOTES = "<!-- notes -->"
CASES = ("zero", "zeroed", "l2", "convert")

__all__ = ["CASES", "NOTES", "render", "summary", "write_md"]


def _fmt_macs(r: dict[str, Any]) -> str:
    if r.get("macs_before") is None:
        return ""
    if not r.get("macs_complete"):
        return "unknown"
    b, a = r["macs_before"], r["macs_after"]
    return f"{(b - a) / b:.1%}" if b else "0"


def _fmt_ver(r: dict[str, Any]) -> str:
    if r.get("ir_max_abs_diff") is not None:  # convert: the IR against onnxruntime
        n = r.get("ir_noise")
        if n:
            return (
                f"IR {r['ir_max_abs_diff']:.2g} on {n['elements_past']}/{n['elements']} elements vs "
                f"{n['noise_elements_past']} in onnxruntime's noise (floor {n['noise_floor']:.2g}), margin {n['margin']:.3g}"
            )
        return f"IR {r['ir_max_abs_diff']:.1e}"
    if r.get("verified") is None:
        return ""
    d, nf, limit = r.get("max_abs_diff"), r.get("noise_floor"), r.get("limit")
    s = "pass" if r["verified"] else "**FAIL**"
    if r.get("quantized"):
        return f"{s}, {_fmt_rule(r['quantized'])}"
    if d is not None and nf is not None:
        return f"{s} {d:.1e}/{nf:.1e} ({r.get('runtime') or ''})"
    if d is not None and limit is not None:  # no noise floor: the limit it was held to, and why
        why = r.get("noise_runtime") or ""
        # Measured, but not on this output: a tail whose decisions came out otherwise in the noise run.
        if not why.startswith("not measured"):
            why = "no noise floor for this output"
        why = why.replace("|", "\\|")  # a Markdown table cell
        return f"{s} {d:.1e} vs limit {limit:.1e} ({why})"
    return s


def _fmt_rule(q: dict[str, Any]) -> str:
    """A quantized model's verification: its rounding rule, and on every path the worst
    difference against the float limit and the samples past that limit (the accepted flips)."""
    paths = []
    for p in q["paths"]:
        on = re.search(r"optimisations (on|off)", p["runtime"])
        limit = p.get("float_limit")
        paths.append(
            f"optimisations {on.group(1) if on else p['runtime']} {p['max_abs_diff']:.1e} vs "
            f"{'?' if limit is None else f'{limit:.1e}'}, {p['samples_past_float_limit']}/{p['samples']} samples past"
        )
    return (
        f"rounding rule ({q['form']}; at most {q['flip_share']:.0%} of the samples past the float limit, each by at most "
        f"{q['flip_limit']:g} x scale): {'; '.join(paths)}"
    )


def _fmt_exit(r: dict[str, Any]) -> str:
    e = r.get("exit")
    return "timeout" if e is None and "timeout" in (r.get("error") or "") else ("-" if e is None else str(e))


def _ov_cut(before: int | None, after: int | None) -> str:
    return f"{(before - after) / before:.1%}" if before and after is not None else ""


def render(results: list[dict[str, Any]], meta: dict[str, Any], corpus: Collection[str]) -> str:
    lines = [
        "# onnxprune on real exports (issue 11)",
        "",
        f"Measured {meta['date']} on `{meta['commit']}` ({meta['machine']}); tools/bench_real_exports.py.",
        "Each case ran in its own subprocess, one at a time. Exit codes: 0 ok, 1 verification failed,",
        "2 refused (bad input / unsupported, with a one-line reason), 3 internal error.",
        "",
        "- *channels*: removed / total output channels of the layers onnxprune prunes (its report);",
        "- *by OpenVINO's counter*: channels and MACs removed, onnxprune vs OpenVINO's pruning pass, both counted",
        "  by `openvino_pass.layer_stats` on the converted models at the same static shapes (every conv,",
        "  depthwise included, counts its output channels), so the two tools are compared on one scale;",
        "- *MACs cut*: onnxprune's own counter; `unknown` when some layer's shapes are unknown;",
        "- *verification*: worst output's max abs diff / its noise floor (the runtime that proved it); without",
        "  a noise floor, the diff vs its limit and why; a quantized model (its rounding rule): per onnxruntime",
        "  path, the worst output's diff vs its float limit and the samples past that limit (accepted flips); for",
        "  `convert`, the IR's max abs diff against onnxruntime (a dynamically quantized model past the",
        "  tolerance: its elements past it vs onnxruntime's own noise run, the floor and the margin).",
        "",
        "| model | case | exit | channels | by OpenVINO's counter: onnxprune vs OpenVINO (channels; MACs cut) | MACs cut | verification | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rec in results:
        for case, r in rec["cases"].items():
            ov = r.get("openvino") or {}
            mine = r.get("ov_counter") or {}
            cmp = ""
            if ov or mine:
                a = (
                    "?"
                    if mine.get("channels_removed") is None
                    else f"{mine['channels_removed']}; {_ov_cut(mine.get('macs_before'), mine.get('macs_after'))}"
                )
                if ov.get("error") and ov.get("channels_removed") is None:
                    b = "error: " + ov["error"][:50].replace("|", "\\|")
                else:
                    b = f"{ov.get('channels_removed')}; {_ov_cut(ov.get('macs_before'), ov.get('macs_after'))}" + (
                        " (not exact)" if ov.get("exact") is False else ""
                    )
                cmp = f"{a} vs {b}"
            ch = "" if r.get("channels_total") is None else f"{r['channels_removed']}/{r['channels_total']}"
            inside = [n.split(" are inside")[0] for n in r.get("notes") or [] if "which are not analysed" in n]
            if inside:  # layers in If/Loop bodies: the analysis says it left them alone
                ch += f" ({'; '.join(inside)} inside subgraphs: not analysed)"
            err = r.get("error")
            if err and r.get("exit") not in (0, 1):
                ch = (ch + " " if ch else "") + "`" + err.replace("|", "\\|")[:140] + "`"
            name = rec["model"] + (
                "" if rec.get("inputs") != "realistic data (--inputs)" else " (shapes from --inputs)"
            )
            lines.append(
                f"| {name} | {case} | {_fmt_exit(r)} | {ch} | {cmp} | {_fmt_macs(r)} | {_fmt_ver(r)} | {r.get('seconds')} |"
            )
    lines += ["", "## Targets", ""]
    corpus_rows = [rec for rec in results if rec["model"] in corpus]
    internal = [(rec["model"], c) for rec in results for c, r in rec["cases"].items() if r.get("exit") == 3]
    false_fail = [(rec["model"], c) for rec in corpus_rows for c, r in rec["cases"].items() if r.get("exit") == 1]
    timeouts = [
        (rec["model"], c) for rec in results for c, r in rec["cases"].items() if "timeout" in (r.get("error") or "")
    ]
    at_least_ov = []
    for rec in corpus_rows:
        r = rec["cases"].get("zeroed") or {}
        ov = (r.get("openvino") or {}).get("channels_removed")
        mine = (r.get("ov_counter") or {}).get("channels_removed")
        ok = r.get("exit") == 0 and r.get("verified") is True and mine is not None and (ov is None or mine >= ov)
        at_least_ov.append((rec["model"], ok, mine, ov))
    lines.append(f"- Internal errors (exit 3): {len(internal)} {internal if internal else ''}")
    lines.append(
        f"- Verification failures on corpus models (exit 1; every case is a correct pruning, so each is a false failure or a bug): {len(false_fail)} {false_fail if false_fail else ''}"
    )
    lines.append(f"- Timeouts: {len(timeouts)} {timeouts if timeouts else ''}")
    met = sum(ok for _, ok, _, _ in at_least_ov)
    lines.append(
        f"- Corpus models where onnxprune removes at least OpenVINO's channels after NNCF-style zeroing, verified exact (OpenVINO's counter): {met}/{len(at_least_ov)}"
    )
    for m, ok, mine, ov in at_least_ov:
        if not ok:
            lines.append(f"  - not met: {m}: onnxprune {mine}, OpenVINO {ov}")
    return "\n".join(lines) + "\n"


def summary(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """One row per model for the README: exit codes of the four cases, channels removed after
    NNCF-style zeroing by OpenVINO's counter (onnxprune vs OpenVINO's pass) and whether exact."""
    lines = [
        f"Measured {meta['date']} on `{meta['commit'][:7]}` (`benchmarks/real_exports.md` has every case, diffs and times).",
        "",
        "| model | exit: zero / zeroed / l2 / convert | after NNCF-style zeroing: channels (OpenVINO's counter), onnxprune vs OpenVINO's pass | MACs cut, onnxprune vs OpenVINO | 25% L2 verified |",
        "|---|---|---|---|---|",
    ]
    for rec in results:
        cases = rec["cases"]
        exits = " / ".join(_fmt_exit(cases.get(c, {})) for c in CASES)
        z = cases.get("zeroed", {})
        mine, ov = z.get("ov_counter") or {}, z.get("openvino") or {}
        ch = f"{mine.get('channels_removed', '?')} vs {ov.get('channels_removed') if not ov.get('error') else 'error'}"
        if z.get("verified") is not None:
            ch += ", exact" if z.get("verified") else ", FAILED"
        macs = f"{_ov_cut(mine.get('macs_before'), mine.get('macs_after')) or '?'} vs {_ov_cut(ov.get('macs_before'), ov.get('macs_after')) or '-'}"
        l2 = cases.get("l2", {})
        ver = "" if l2.get("verified") is None else ("yes" if l2["verified"] else "**no**")
        lines.append(f"| {rec['model'].removesuffix('.onnx')} | {exits} | {ch} | {macs} | {ver} |")
    return "\n".join(lines) + "\n"


def write_md(out_md: Path, results: list[dict[str, Any]], meta: dict[str, Any], corpus: Collection[str]) -> None:
    notes = ""
    if out_md.exists() and NOTES in out_md.read_text():
        notes = out_md.read_text().split(NOTES, 1)[1]
    status = "" if meta.get("complete") else f"\n**Unfinished run**: results up to {meta.get('finished')}.\n"
    out_md.write_text(render(results, meta, corpus) + status + "\n" + NOTES + notes)
