"""The latency section of a prune report (``report["latency"]``, LatencyOutcome.to_dict) as
text, Markdown and a plot panel: the measured ratio with its spread and precision, predicted
against measured, the MACs for comparison, and per unit the table's curve and what was kept."""

from __future__ import annotations

from typing import Any

__all__ = ["latency_lines", "latency_markdown", "plot_latency"]

_UNITS_SHOWN = 15


def _settings(lat: dict) -> str:
    s = lat["settings"]
    threads = s.get("threads") or "auto"
    return (
        f"{s['backend']} {s.get('device', 'CPU')}, batch {s['batch']}, threads {threads}, hint {s['hint']}, "
        f"{lat.get('precision') or s.get('precision')} inference"
    )


def _macs_ratio(d: dict) -> str:
    before, after = d.get("macs_before"), d.get("macs_after")
    return f"{after / before:.3f}x" if before and after is not None else "unknown"


def _units(lat: dict) -> list[dict]:
    """Units that lost channels, most seconds saved first (then the rest, by size)."""
    return sorted(lat["units"], key=lambda u: (-u["predicted_saving_ms"], -u["channels"]))


def _ab_ms(attempt: dict) -> str:
    """The A/B run's own times (fastest run, median over rounds): the original's differs from
    the table's baseline when the machine's load changed in between."""
    a, b = attempt.get("original_ms"), attempt.get("candidate_ms")
    return "" if a is None or b is None else f"; {a:.3f} -> {b:.3f} ms"


def _evaluations(order: dict) -> str:
    """What the order's evaluations were and what bounded them: plain or recovered (each a refit
    of the model), by their count alone or within the user's time budget too."""
    kind = "recovered evaluations" if order.get("recovered") else "evaluations"
    limit = order.get("seconds_budget")
    if limit is None:
        if not order.get("recovered"):
            return "evaluations (--latency-evaluations)"
        return f"{kind} in {order['seconds']:.0f} s (--latency-evaluations, no time budget)"
    bound = "bounded by its time budget" if order.get("bound") == "time" else "within its time budget"
    return f"{kind} in {order['seconds']:.0f} s ({bound}, {limit:g} s: --latency-evaluation-seconds)"


def _limit(limit: dict) -> str:
    """The answers' limit's recovered evaluations: how many, in how long, on the budget shared
    with the order's, and what that budget bounded (checks are never refused, only the bisection
    of the move past the limit)."""
    budget = (
        f"{limit['seconds_budget']:.0f} s and {limit['budget']} evaluations"
        if limit.get("seconds_budget") is not None
        else f"{limit['budget']} evaluations (--latency-evaluations)"
    )
    bound = limit.get("bound")
    said = (
        f"spent ({bound}): the move past the limit bisected no further"
        if bound
        else "the move past the limit bisected within it"
    )
    past = f"; {limit['past_budget']} checks of the plan past it (never skipped)" if limit.get("past_budget") else ""
    return (
        f"  the limit: {limit['evaluations']} recovered evaluations in {limit['seconds']:.0f} s, on the budget shared "
        f"with the order ({budget}): {said}{past}"
    )


def latency_lines(d: dict) -> list[str]:
    """The text report's latency section (empty without a latency target)."""
    lat = d.get("latency")
    if not lat:
        return []
    verdict = "met" if lat["met"] else "NOT met"
    lines = [
        f"latency target {lat['target']:g}x ({_settings(lat)}): {verdict}",
        f"  measured {lat['measured_ratio']:.3f}x (median of interleaved A/B runs, p10-p90 "
        f"{lat['measured_p10']:.3f}-{lat['measured_p90']:.3f}), predicted {lat['predicted_ratio']:.3f}x, "
        f"MACs {_macs_ratio(d)}; original {lat['baseline_ms']:.3f} ms (latency table)",
    ]
    if lat.get("constraint"):
        stopped = "stopped it first" if lat.get("limited_by_constraint") else "held"
        lines.append(f"  {lat['constraint']} {stopped} (value {lat['constraint_value']:.4g} with every move together)")
    order = lat.get("order") or {}
    if order.get("budget"):
        lines.append(
            f"  moves ordered by their fidelity cost on the plan they join: {order['measured_moves']} measured so, "
            f"{order['evaluations']} of {order['budget']} {_evaluations(order)}"
        )
    if lat.get("limit"):
        lines.append(_limit(lat["limit"]))
    for i, a in enumerate(lat["attempts"], 1):
        lines.append(
            f"  A/B {i}: aim {a['aim']:.3f} -> predicted {a['predicted_ratio']:.3f}, measured {a['measured_ratio']:.3f} "
            f"(p10-p90 {a['measured_p10']:.3f}-{a['measured_p90']:.3f}{_ab_ms(a)}), {a['groups_removed']} groups removed"
        )
    units = _units(lat)
    lines.append(
        f"  {'unit (first layer)':40s}{'channels':>9s}{'kept':>6s}{'step':>5s}{'full ms':>9s}{'kept ms':>9s}{'saved ms':>9s}"
    )
    for u in units[:_UNITS_SHOWN]:
        lines.append(
            f"  {u['unit'][:40]:40s}{u['channels']:9d}{u['kept']:6d}{u['step']:5d}"
            f"{u.get('predicted_full_ms', float('nan')):9.3f}{u.get('predicted_ms', float('nan')):9.3f}"
            f"{u['predicted_saving_ms']:9.3f}"
        )
    if len(units) > _UNITS_SHOWN:
        lines.append(f"  ... {len(units) - _UNITS_SHOWN} more units in the JSON report")
    return lines


def latency_markdown(d: dict) -> list[str]:
    """The Markdown report's latency section (empty without a latency target)."""
    lat = d.get("latency")
    if not lat:
        return []
    lines = [
        "",
        "## Latency target",
        "",
        f"Target **{lat['target']:g}×** of the original's latency ({_settings(lat)}): **{'met' if lat['met'] else 'not met'}**.",
        "",
        "| | ratio to the original |",
        "|---|---:|",
        f"| measured (median of interleaved A/B runs) | {lat['measured_ratio']:.3f} |",
        f"| measured p10–p90 | {lat['measured_p10']:.3f}–{lat['measured_p90']:.3f} |",
        f"| predicted by the latency table | {lat['predicted_ratio']:.3f} |",
        f"| MACs | {_macs_ratio(d).rstrip('x')} |",
        "",
        f"Original: {lat['baseline_ms']:.3f} ms (latency table)."
        + (
            f" Answers: {lat['constraint']} — {'stopped the plan first' if lat.get('limited_by_constraint') else 'held'} "
            f"(value {lat['constraint_value']:.4g})."
            if lat.get("constraint")
            else ""
        ),
        "",
        "A/B attempts (aim → predicted → measured):",
        "",
    ]
    for i, a in enumerate(lat["attempts"], 1):
        lines.append(
            f"{i}. aim {a['aim']:.3f} → predicted {a['predicted_ratio']:.3f} → measured {a['measured_ratio']:.3f} "
            f"(p10–p90 {a['measured_p10']:.3f}–{a['measured_p90']:.3f}{_ab_ms(a)}), {a['groups_removed']} groups removed"
        )
    lines += [
        "",
        "| unit (first layer) | channels | kept | step | full ms (table) | kept ms (predicted) | saved ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for u in _units(lat):
        lines.append(
            f"| `{u['unit']}` | {u['channels']} | {u['kept']} | {u['step']} | {u.get('predicted_full_ms', float('nan')):.3f} "
            f"| {u.get('predicted_ms', float('nan')):.3f} | {u['predicted_saving_ms']:.3f} |"
        )
    return lines


def plot_latency(d: dict, ax: Any) -> None:
    """One panel: per unit (most saved first) the table's latency with all channels and at the
    kept count, and the whole model's predicted and measured ratios in the title."""
    lat = d["latency"]
    units = _units(lat)[:_UNITS_SHOWN]
    names = [u["unit"][-30:] for u in units] or ["(no unit)"]
    full = [u.get("predicted_full_ms", 0.0) for u in units] or [0.0]
    kept = [u.get("predicted_ms", 0.0) for u in units] or [0.0]
    y = list(range(len(names)))
    ax.barh(y, full, color="#c8c8c8", label="all channels (measured table)")
    ax.barh(y, kept, color="#2ca02c", label="kept (predicted)")
    for yi, u in zip(y, units):
        pts = u.get("measured_ms") or []
        if pts:
            ax.plot([t for _, t in pts], [yi] * len(pts), "k|", markersize=6)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("unit latency, ms (| = measured points)")
    ax.set_title(
        f"latency {lat['measured_ratio']:.3f}x measured (p10-p90 {lat['measured_p10']:.3f}-{lat['measured_p90']:.3f}), "
        f"{lat['predicted_ratio']:.3f}x predicted, MACs {_macs_ratio(d)}",
        fontsize=8,
    )
    ax.legend(loc="lower right", fontsize=6)
